from decimal import Decimal

import pytest

from cbserver.billing.formula import (
    MAX_DEPTH,
    MAX_SOURCE_CHARS,
    FormulaDivisionByZero,
    FormulaError,
    FormulaEvaluationError,
    parse_formula,
)
from cbserver.billing.rating import RateFormulaError, charge

from .helpers import make_rate

ENV = {
    "duration": Decimal(61), "charged": Decimal(66), "first_interval": Decimal(60),
    "next_interval": Decimal(6), "first_price": Decimal("0.10"),
    "next_price": Decimal("0.05"), "amount": Decimal("0.105"), "peak": Decimal(1),
}


def ev(source, **overrides):
    return parse_formula(source).evaluate({**ENV, **{k: Decimal(v) for k, v in overrides.items()}})


@pytest.mark.parametrize(("source", "expected"), [
    ("1 + 2 * 3", "7"),
    ("(1 + 2) * 3", "9"),
    ("10 - 4 - 3", "3"),  # left associative
    ("12 / 4 / 3", "1"),
    ("-2 * -3", "6"),
    ("--2", "2"),
    ("1 / 4", "0.25"),
    ("2 < 3", "1"), ("3 <= 3", "1"), ("3 > 3", "0"), ("3 >= 4", "0"),
    ("3 == 3.0", "1"), ("3 != 3", "0"),
    ("1 < 2 and 2 < 1", "0"), ("1 < 2 or 2 < 1", "1"), ("not 0", "1"), ("not 2", "0"),
    ("1 + 1 == 2 and not 0", "1"),
    ("min(3, 1, 2)", "1"), ("max(3, 1, 2)", "3"),
    ("ceil(1.2)", "2"), ("floor(-1.2)", "-2"), ("abs(-4.5)", "4.5"),
    ("round(2.345, 2)", "2.35"), ("round(2.5, 0)", "3"), ("round(-2.5, 0)", "-3"),
    ("if(1, 10, 20)", "10"), ("if(0, 10, 20)", "20"),
])
def test_operators_and_functions(source, expected):
    assert ev(source) == Decimal(expected)


def test_if_is_lazy_so_guarded_division_is_safe():
    assert ev("if(duration > 0, 0, 1 / 0)") == 0


def test_variables_come_from_the_environment():
    assert ev("amount + 0.10") == Decimal("0.205")
    assert ev("charged - duration") == 5
    assert ev("first_price * first_interval / 60") == Decimal("0.1")
    assert ev("if(peak, 1, 2)", peak=0) == 2


@pytest.mark.parametrize(("source", "column", "reason"), [
    ("amount + ", 10, "expected a number"),
    ("amount $ 1", 8, "unexpected character"),
    ("amout + 1", 1, "unknown variable 'amout'"),
    ("sqrt(2)", 1, "unknown function"),
    ("if(1, 2)", 1, "takes 3 arguments"),
    ("min(1)", 1, "at least 2"),
    ("(1 + 2", 7, "expected ')'"),
    ("1 + 2)", 6, "unexpected ')'"),
    ("1 < 2 < 3", 7, "cannot be chained"),
    ("1.", 3, "decimal point"),
    ("amount amount", 8, "unexpected 'amount'"),
    ("max", 1, "needs arguments"),
    ("", 1, "empty"),
    ("1e5", 2, "unexpected 'e5'"),
    ("__import__('os')", 12, "unexpected character"),
    ("__import__(1)", 1, "unknown function"),
])
def test_parse_errors_name_the_column(source, column, reason):
    with pytest.raises(FormulaError) as info:
        parse_formula(source)
    assert info.value.column == column
    assert reason in str(info.value)
    assert str(info.value).startswith("formula:")


def test_size_and_depth_are_capped():
    with pytest.raises(FormulaError, match="longer than"):
        parse_formula("1+" * MAX_SOURCE_CHARS + "1")
    with pytest.raises(FormulaError, match="tokens"):
        parse_formula("+".join(["1"] * 150))
    with pytest.raises(FormulaError, match="nested deeper"):
        parse_formula("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1))
    with pytest.raises(FormulaError, match="nested deeper"):
        parse_formula("-" * (MAX_DEPTH + 2) + "1")
    assert parse_formula("(" * (MAX_DEPTH - 1) + "1" + ")" * (MAX_DEPTH - 1)).evaluate(ENV) == 1


def test_division_by_zero_is_typed_and_points_at_the_operator():
    formula = parse_formula("amount / (duration - 61)")
    with pytest.raises(FormulaDivisionByZero) as info:
        formula.evaluate(ENV)
    assert info.value.column == 8
    assert isinstance(info.value, FormulaEvaluationError)


def test_round_places_must_be_small_whole_numbers():
    with pytest.raises(FormulaEvaluationError, match="round"):
        ev("round(1, 11)")
    with pytest.raises(FormulaEvaluationError, match="round"):
        ev("round(1, 0.5)")


def test_missing_variable_at_evaluation_is_an_error():
    with pytest.raises(FormulaEvaluationError, match="amount"):
        parse_formula("amount").evaluate({})


def test_formulas_compare_by_source():
    assert parse_formula("amount") == parse_formula("amount")
    assert parse_formula("amount").names == frozenset({"amount"})


# The manual's use cases, through the rating core.

def test_connection_fee():
    rate = make_rate(f=60, n=6, p1="0.10", p2="0.05", formula="amount + 0.10")
    assert charge(rate, 61).amount == Decimal("0.20500")
    assert charge(rate, 0).amount == 0  # an unconnected leg is never charged


def test_free_seconds():
    rate = make_rate(f=1, n=1, p1="0.60", p2="0.60",
                     formula="if(duration <= 30, 0, (duration - 30) * next_price / 60)")
    assert charge(rate, 30).amount == 0
    assert charge(rate, 31).amount == Decimal("0.01000")
    assert charge(rate, 90).amount == Decimal("0.60000")


def test_post_call_surcharge_percent_and_flat():
    # 15 % on top, plus 0.05 for calls charged more than two minutes
    surcharge = "amount * 1.15 + if(charged > 120, 0.05, 0)"
    rate = make_rate(f=60, n=60, p1="1", p2="1", formula=surcharge)
    assert charge(rate, 60).amount == Decimal("1.15000")
    assert charge(rate, 121).amount == Decimal("3.50000")


def test_formula_result_is_rounded_once_half_up():
    rate = make_rate(f=1, n=1, p1="0", p2="0", formula="0.000005 + amount")
    assert charge(rate, 10).amount == Decimal("0.00001")


def test_formula_sees_the_offpeak_tier_and_peak_flag():
    rate = make_rate(
        f=60, n=60, p1="1", p2="1", mode="peak_offpeak", offpeak_first_interval=30,
        offpeak_next_interval=30, offpeak_first_price=Decimal("0.5"),
        offpeak_next_price=Decimal("0.5"), formula="if(peak, 9, first_interval)")
    assert charge(rate, 10, peak=True).amount == 9
    assert charge(rate, 10, peak=False).amount == 30


def test_negative_or_failing_formula_is_a_rating_error():
    with pytest.raises(RateFormulaError, match="negative"):
        charge(make_rate(formula="amount - 100"), 10)
    with pytest.raises(RateFormulaError, match="division by zero"):
        charge(make_rate(formula="amount / (duration - 10)"), 10)


def test_negation_and_abs_keep_every_digit():
    # 1 / 3 has 50 significant digits; rounding the negation to 28 would leave a remainder
    assert ev("-(1 / 3) + 1 / 3") == 0
    assert ev("abs(-(1 / 3)) - 1 / 3") == 0
