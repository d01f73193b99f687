import datetime as dt
import re
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from cbserver.billing.model import OffPeakPeriod, OffPeakWindow
from cbserver.billing.offpeak import period_runs
from cbserver.billing.rating import (
    charge,
    charge_split,
    charged_seconds,
    max_duration,
    price_leg,
    quote,
)

from .helpers import UTC, make_rate, make_tariff, reference_amount

durations = st.integers(min_value=0, max_value=20000)
intervals = st.integers(min_value=1, max_value=600)
prices = st.decimals(min_value=0, max_value=100, places=5, allow_nan=False)


@given(durations, intervals, intervals)
def test_interval_rule_invariants(d, f, n):
    c = charged_seconds(d, f, n)
    if d == 0:
        assert c == 0
        return
    assert c >= d
    assert c >= f
    assert (c - f) % n == 0
    assert c - max(d, f) < n  # never a whole extra interval
    assert charged_seconds(d + 1, f, n) >= c  # monotone


@given(durations, intervals, intervals, prices, prices)
def test_charge_matches_fraction_reference(d, f, n, p1, p2):
    result = charge(make_rate(f=f, n=n, p1=p1, p2=p2), d)
    expected, c = reference_amount(d, f, n, p1, p2)
    assert result.amount == expected
    assert result.charged_seconds == c
    assert result.amount.as_tuple().exponent == -5


@given(durations, intervals, intervals, prices, prices)
def test_formula_amount_equals_the_standard_charge(d, f, n, p1, p2):
    plain = charge(make_rate(f=f, n=n, p1=p1, p2=p2), d)
    with_formula = charge(make_rate(f=f, n=n, p1=p1, p2=p2, formula="amount"), d)
    assert with_formula.amount == plain.amount
    rebuilt = charge(make_rate(
        f=f, n=n, p1=p1, p2=p2,
        formula="first_price * first_interval / 60 + next_price * (charged - first_interval) / 60",
    ), d)
    assert rebuilt.amount == plain.amount


@given(durations, intervals, intervals, prices, prices)
def test_charge_is_monotone_in_duration(d, f, n, p1, p2):
    rate = make_rate(f=f, n=n, p1=p1, p2=p2)
    assert charge(rate, d).amount <= charge(rate, d + 1).amount


NIGHT = OffPeakPeriod("Europe/Berlin", (OffPeakWindow.parse("mon-fri 00:00-07:59"),
                                        OffPeakWindow.parse("sat-sun 00:00-23:59")))
instants = st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2025, 12, 31),
                        timezones=st.just(UTC))


def two_tier_rate(f, n):
    return make_rate(f=f, n=n, p1="0.60", p2="0.30", mode="peak_offpeak",
                     offpeak_first_interval=max(1, f // 2), offpeak_next_interval=n,
                     offpeak_first_price=Decimal("0.20"), offpeak_next_price=Decimal("0.10"))


@settings(max_examples=200)
@given(instants, st.integers(min_value=0, max_value=3 * 86400), intervals, intervals)
def test_split_runs_cover_the_call_and_single_run_equals_unsplit(connect, d, f, n):
    runs = period_runs(NIGHT, connect, d)
    assert sum(r[1] for r in runs) == d
    assert all(a[2] != b[2] for a, b in zip(runs, runs[1:], strict=False))
    rate = two_tier_rate(f, n)
    split = charge_split(rate, runs)
    assert split.duration == d
    if len(runs) == 1:
        unsplit = charge(rate, d, runs[0][2])
        assert (split.amount, split.charged_seconds) == (unsplit.amount, unsplit.charged_seconds)
    else:
        assert split.charged_seconds >= d


@settings(max_examples=60, deadline=None)
@given(st.decimals(min_value=0, max_value=5, places=5), st.integers(0, 120),
       st.sampled_from([(1, 1), (30, 6), (60, 60), (45, 7)]),
       st.sampled_from(["0", "0.013", "0.60", "2.5"]), st.sampled_from(["0.05", "1.20", "9"]))
def test_max_duration_equals_a_brute_force_scan(budget, elapsed, fn, pa, pb):
    f, n = fn
    tariff = make_tariff(make_rate("1", f=f, n=n, p1=pa, p2=pa),
                         make_rate("44", f=f, n=n, p1=pb, p2=pb))
    t0 = dt.datetime(2024, 6, 1, tzinfo=UTC)
    a, b = price_leg(tariff, "1", t0), price_leg(tariff, "44", t0)
    limit = 400
    result = max_duration(budget, a, elapsed, b, limit=limit)
    scan = [t for t in range(limit + 1) if a.amount(elapsed + t) + b.amount(t) <= budget]
    assert result == (max(scan) if scan else 0)


@given(durations, st.text(alphabet="0123456789 +-().", min_size=1, max_size=20))
def test_quote_json_amount_always_has_five_decimals(d, number):
    if not any(ch.isdigit() for ch in number):
        return
    tariff = make_tariff(make_rate("|", f=7, n=3, p1="0.0123", p2="0.0456"))
    text = quote(tariff, number, d, dt.datetime(2024, 1, 1, tzinfo=UTC)).to_json()
    assert re.search(r'"amount": "\d+\.\d{5}"', text)


TRANSITIONS = [  # UTC instants of daylight-saving changes
    ("Europe/Berlin", dt.datetime(2024, 3, 31, 1, tzinfo=UTC)),
    ("Europe/Berlin", dt.datetime(2024, 10, 27, 1, tzinfo=UTC)),
    ("America/New_York", dt.datetime(2024, 3, 10, 7, tzinfo=UTC)),
    ("America/New_York", dt.datetime(2024, 11, 3, 6, tzinfo=UTC)),
]


@st.composite
def windows(draw):
    start = draw(st.integers(0, 1439))
    end = draw(st.integers(start, 1439))
    days = draw(st.frozensets(st.integers(0, 6), min_size=1))
    return OffPeakWindow(days, dt.time(start // 60, start % 60), dt.time(end // 60, end % 60))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(TRANSITIONS), st.integers(-4 * 3600, 3600), st.integers(0, 3 * 3600),
       st.lists(windows(), min_size=1, max_size=3), st.integers(0, 999999))
def test_runs_equal_a_second_by_second_scan_around_dst(transition, shift, d, wins, micro):
    from cbserver.billing.offpeak import is_offpeak

    zone, instant = transition
    period = OffPeakPeriod(zone, tuple(wins))
    connect = instant + dt.timedelta(seconds=shift, microseconds=micro)
    scan = [not is_offpeak(period, connect + dt.timedelta(seconds=k)) for k in range(d)]
    expanded = [peak for _, seconds, peak in period_runs(period, connect, d) for _ in range(seconds)]
    assert expanded == scan
