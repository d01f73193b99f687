"""Property tests of the formula language against an independent Fraction evaluator."""

from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from cbserver.billing.formula import (
    VARIABLES,
    FormulaDivisionByZero,
    FormulaError,
    FormulaEvaluationError,
    parse_formula,
)

PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}

leaves = st.one_of(
    st.integers(0, 99).map(lambda v: ("num", v)),
    st.sampled_from(["duration", "charged", "amount"]).map(lambda v: ("var", v)),
)


def extend(children):
    return st.one_of(
        st.tuples(st.just("bin"), st.sampled_from("+-*/"), children, children),
        st.tuples(st.just("neg"), children),
    )


trees = st.recursive(leaves, extend, max_leaves=12)
ENV = {"duration": Fraction(61), "charged": Fraction(66), "amount": Fraction(21, 200)}


def render(node):
    """Render with only the parentheses that precedence and left associativity need."""
    kind = node[0]
    if kind == "num":
        return str(node[1])
    if kind == "var":
        return node[1]
    if kind == "neg":
        inner = render(node[1])
        return f"-({inner})" if node[1][0] == "bin" else f"-{inner}"
    _, op, left, right = node
    left_text, right_text = render(left), render(right)
    if left[0] == "bin" and PRECEDENCE[left[1]] < PRECEDENCE[op]:
        left_text = f"({left_text})"
    if right[0] == "bin" and PRECEDENCE[right[1]] <= PRECEDENCE[op]:
        right_text = f"({right_text})"
    return f"{left_text} {op} {right_text}"


class ZeroDivision(Exception):
    pass


def oracle(node):
    kind = node[0]
    if kind == "num":
        return Fraction(node[1])
    if kind == "var":
        return ENV[node[1]]
    if kind == "neg":
        return -oracle(node[1])
    _, op, left, right = node
    a, b = oracle(left), oracle(right)
    if op == "/":
        if b == 0:
            raise ZeroDivision
        return a / b
    return {"+": a + b, "-": a - b, "*": a * b}[op]


@settings(max_examples=300)
@given(trees)
def test_random_expressions_match_exact_arithmetic(tree):
    source = render(tree)
    formula = parse_formula(source)
    env = {k: Decimal(v.numerator) / Decimal(v.denominator) for k, v in ENV.items()}
    try:
        expected = oracle(tree)
    except ZeroDivision:
        try:
            formula.evaluate(env)
        except FormulaDivisionByZero:
            return
        raise AssertionError(f"{source}: expected division by zero") from None
    result = Fraction(formula.evaluate(env))
    # 50 significant digits; allow for the rounding of each division
    assert abs(result - expected) <= abs(expected) * Fraction(1, 10**40) + Fraction(1, 10**40)


ALPHABET = list("0123456789.+-*/(),<>=! _") + sorted(VARIABLES) + [
    "if", "min", "max", "round", "ceil", "floor", "abs", "and", "or", "not"]


@settings(max_examples=500)
@given(st.lists(st.sampled_from(ALPHABET), max_size=30).map(" ".join))
def test_any_text_parses_or_fails_with_a_formula_error(source):
    try:
        formula = parse_formula(source)
    except FormulaError as exc:
        assert exc.column is None or 1 <= exc.column <= len(source) + 1
        return
    env = {name: Decimal(2) for name in VARIABLES}
    try:
        assert isinstance(formula.evaluate(env), Decimal)
    except FormulaEvaluationError:
        pass
