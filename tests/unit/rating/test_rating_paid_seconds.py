"""``paid_seconds``: how long legs already up may stay up within a sum (issue 13's cut)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from cbserver.billing.model import OffPeakPeriod, OffPeakWindow
from cbserver.billing.rating import _bracket, connected_seconds, paid_seconds, price_leg
from tests.unit.rating.helpers import make_rate, make_tariff, reference_amount

AT = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
PRICES = st.integers(0, 20000).map(lambda i: Decimal(i) / 10000)
TIERS = st.tuples(st.sampled_from([1, 6, 30, 60]), st.sampled_from([1, 6, 30, 60]), PRICES, PRICES)


def test_connected_seconds_rounds_a_started_second_up():
    assert [connected_seconds(x) for x in (0, 0.0000005, 0.001, 1, 1.0000000001, 47.2)] == \
        [0, 0, 1, 1, 1, 48]


def test_the_issues_call_is_paid_for_48_s_of_legb():
    # legA 60/6 at 0.01/min up 1.2 s, legB 6/6 at 0.04/min just answered: 0.042 pays 48 s
    # (legA 49.2 s -> 0.010, legB 48 s -> 0.032), not a moment more.
    a = price_leg(make_tariff(make_rate("55", 60, 6, "0.01", "0.01")), "5511", AT)
    b = price_leg(make_tariff(make_rate("1", 6, 6, "0.04", "0.04")), "1818", AT)
    assert paid_seconds(Decimal("0.042"), [(a, 1.2), (b, 0.0)], 3600) == 48
    # Ringing: legB's least charge (2 s: 0.004) kept back, legA alone up to 0.038.
    assert paid_seconds(Decimal("0.042"), [(a, 1.2)], 3600, Decimal("0.004")) == 228 - 1.2
    assert paid_seconds(Decimal("0.009"), [(a, 1.2)], 3600) is None  # already over


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(tiers=st.lists(TIERS, min_size=1, max_size=2),
       elapsed=st.lists(st.integers(0, 200_000).map(lambda ms: ms / 1000), min_size=2, max_size=2),
       cap=st.integers(0, 300_000).map(lambda i: Decimal(i) / 100000),
       fixed=st.integers(0, 5000).map(lambda i: Decimal(i) / 100000),
       limit=st.integers(0, 600))
def test_paid_seconds_is_the_last_moment_the_reference_charges_fit(tiers, elapsed, cap, fixed,
                                                                   limit):
    legs = [(price_leg(make_tariff(make_rate("1", f, n, str(p1), str(p2))), "1818", AT), e)
            for (f, n, p1, p2), e in zip(tiers, elapsed, strict=False)]

    def cost(x):  # the manual's rule, in Fractions (helpers.reference_amount)
        return fixed + sum(reference_amount(connected_seconds(e + x), f, n, p1, p2)[0]
                           for (f, n, p1, p2), (_, e) in zip(tiers, legs, strict=False))

    x = paid_seconds(cap, legs, limit, fixed)
    if x is None:
        assert cost(0) > cap
        return
    assert 0 <= x <= limit and cost(x) <= cap
    if x < limit:  # a millisecond more and some leg starts a second that is not paid for
        assert cost(x + 0.001) > cap


def test_the_bracket_keeps_the_one_boundary_whatever_the_guess():
    # fits is true up to `last` and false after; every guess, every boundary, from the same
    # (low, high) the bisection starts with.
    low0, high0 = 3, 40
    for last in range(low0, high0):
        for guess in range(low0 - 5, high0 + 5):
            asked = []

            def fits(k, last=last, asked=asked):
                asked.append(k)
                return k <= last

            low, high = _bracket(fits, low0, high0, guess)
            assert low0 <= low <= last < high <= high0
            assert all(low0 < k < high0 for k in asked)  # never outside the bisection's range
            if abs(guess - last) <= 1 and low0 < guess < high0 - 1:
                assert high - low <= 2 and len(asked) <= 3  # a good guess: a few looks


def test_a_leg_pricer_amount_is_its_charge_amount_for_split_formula_and_plain_rates():
    plain = make_tariff(make_rate("1", 60, 6, "0.10", "0.05"))
    formula = make_tariff(make_rate("1", 30, 6, "0.10", "0.05", formula="amount + 0.10"))
    split = make_tariff(make_rate("1", 60, 60, "0.60", "0.60", mode="peak_offpeak",
                                  offpeak_first_interval=60, offpeak_next_interval=30,
                                  offpeak_first_price=Decimal("0.30"),
                                  offpeak_next_price=Decimal("0.30")),
                        offpeak=OffPeakPeriod("Etc/UTC", (OffPeakWindow.parse("mon-sun 20:00-23:59"),)),
                        split_at_boundary=True)
    near_boundary = dt.datetime(2024, 1, 1, 19, 58, 50, tzinfo=dt.UTC)
    for tariff in (plain, formula, split):
        pricer = price_leg(tariff, "1818", near_boundary)
        for seconds in (0, 1, 29, 30, 31, 59, 60, 61, 69, 70, 71, 130, 3601):
            assert pricer.amount(seconds) == pricer.charge(seconds).amount, (tariff, seconds)
    assert price_leg(split, "1818", near_boundary).charge(130).parts  # the split path was taken
