from decimal import Decimal

import pytest

from cbserver.billing.model import InvalidCallError
from cbserver.billing.rating import charge, charged_seconds, round_amount

from .helpers import make_rate, reference_amount


def test_zero_duration_costs_nothing_and_charges_no_seconds():
    result = charge(make_rate(), 0)
    assert result.amount == 0
    assert str(result.amount) == "0.00000"
    assert result.charged_seconds == 0


@pytest.mark.parametrize(
    ("d", "expected_c"),
    [
        (1, 60),  # anything up to f is charged as f
        (59, 60),
        (60, 60),  # d = f
        (61, 66),  # f + 1 opens one next interval
        (66, 66),  # exact multiple of n after f
        (67, 72),
        (120, 120),
    ],
)
def test_interval_edges(d, expected_c):
    assert charged_seconds(d, 60, 6) == expected_c
    assert charge(make_rate(f=60, n=6), d).charged_seconds == expected_c


def test_worked_example_from_the_docs():
    # 61 s at 60/6, 0.10/0.05 per minute: 0.10 * 60/60 + 0.05 * 6/60 = 0.10 + 0.005
    result = charge(make_rate(f=60, n=6, p1="0.10", p2="0.05"), 61)
    assert result.amount == Decimal("0.10500")
    assert str(result.amount) == "0.10500"


def test_rounding_happens_once_half_up_at_the_end():
    # 1 s at 1/1, price 0.0003 per minute: 0.0003/60 = 0.000005 exactly -> half up
    assert charge(make_rate(f=1, n=1, p1="0.0003", p2="0.0003"), 1).amount == Decimal("0.00001")
    # per-part rounding would have given 0.00001 + 0.00001; once gives 0.00001
    result = charge(make_rate(f=1, n=1, p1="0.0003", p2="0.0002999"), 2)
    assert result.amount == reference_amount(2, 1, 1, "0.0003", "0.0002999")[0]
    assert result.amount == Decimal("0.00001")


def test_round_amount_is_half_up_not_bankers():
    assert round_amount(Decimal("0.000025")) == Decimal("0.00003")
    assert round_amount(Decimal("0.000015")) == Decimal("0.00002")


def test_repeating_fraction_prices_match_exact_reference():
    for d in (1, 7, 13, 59, 61, 3601):
        result = charge(make_rate(f=30, n=7, p1="0.07", p2="0.013"), d)
        assert result.amount == reference_amount(d, 30, 7, "0.07", "0.013")[0]


def test_offpeak_tier_prices_with_its_own_fields():
    rate = make_rate(
        f=60, n=60, p1="0.60", p2="0.60", mode="peak_offpeak",
        offpeak_first_interval=30, offpeak_next_interval=10,
        offpeak_first_price=Decimal("0.30"), offpeak_next_price=Decimal("0.12"),
    )
    offpeak = charge(rate, 45, peak=False)
    assert offpeak.charged_seconds == 50
    assert offpeak.amount == reference_amount(45, 30, 10, "0.30", "0.12")[0]
    assert charge(rate, 45, peak=True).amount == Decimal("0.60000")


@pytest.mark.parametrize("bad", [-1, 1.5, True, "60", 7 * 86400 + 1])
def test_impossible_durations_are_refused(bad):
    with pytest.raises(InvalidCallError, match="duration"):
        charge(make_rate(), bad)
