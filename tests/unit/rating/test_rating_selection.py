import datetime as dt
from decimal import Decimal

import pytest

from cbserver.billing.model import InvalidCallError, InvalidNumberError, NoRateError
from cbserver.billing.numbers import normalise_number
from cbserver.billing.rating import price_leg, rate_leg, select_rate

from .helpers import UTC, make_rate, make_tariff

T0 = dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("raw", "digits"), [
    ("+1 (818) 555-12.34", "18185551234"),
    ("0044 20 7946 0000", "00442079460000"),
    ("  1818\t", "1818"),
    ("18185551234", "18185551234"),  # digits only: the fast path
    ("1" * 32, "1" * 32),  # the longest accepted
])
def test_normalise_strips_separators(raw, digits):
    assert normalise_number(raw) == digits


@pytest.mark.parametrize("raw", ["", "+", "( - . )", "cb1818", "18١8", "١٨١٨", "1" * 33])
def test_normalise_refuses_numbers_without_digits_or_with_letters(raw):
    with pytest.raises(InvalidNumberError, match="number"):
        normalise_number(raw)


def test_longest_prefix_wins():
    tariff = make_tariff(make_rate("1", p1="0.01"), make_rate("1818", p1="0.02"),
                         make_rate("18185", p1="0.03"))
    assert select_rate(tariff, "18185551234", T0).prefix == "18185"
    assert select_rate(tariff, "18184", T0).prefix == "1818"
    assert select_rate(tariff, "1999", T0).prefix == "1"


def test_no_match_is_no_rate_error():
    tariff = make_tariff(make_rate("1818"), name="Callback")
    with pytest.raises(NoRateError, match="Callback"):
        select_rate(tariff, "4420", T0)


def test_effective_from_edges():
    v1 = make_rate("1818", p1="0.10", since=T0 - dt.timedelta(days=30), version=1)
    v2 = make_rate("1818", p1="0.20", since=T0, version=2)
    tariff = make_tariff(v1, v2)
    assert select_rate(tariff, "1818", T0 - dt.timedelta(microseconds=1)) is v1
    assert select_rate(tariff, "1818", T0) is v2  # effective_from <= connect time
    assert select_rate(tariff, "1818", T0 + dt.timedelta(days=365)) is v2


def test_same_instant_higher_version_wins():
    v1 = make_rate("1818", p1="0.10", since=T0, version=1)
    v2 = make_rate("1818", p1="0.20", since=T0, version=2)
    assert select_rate(make_tariff(v2, v1), "1818", T0) is v2


def test_future_only_longer_prefix_falls_back_to_shorter():
    short = make_rate("1", since=T0 - dt.timedelta(days=1))
    future = make_rate("1818", since=T0 + dt.timedelta(days=1))
    tariff = make_tariff(short, future)
    assert select_rate(tariff, "18185551234", T0) is short
    assert select_rate(tariff, "18185551234", T0 + dt.timedelta(days=2)) is future


def test_before_any_version_there_is_no_rate():
    tariff = make_tariff(make_rate("1818", since=T0))
    with pytest.raises(NoRateError):
        select_rate(tariff, "1818", T0 - dt.timedelta(seconds=1))


def test_wildcard_matches_everything_with_lowest_priority():
    zero = make_rate("|", f=1, n=1, p1="0", p2="0")
    real = make_rate("1818")
    tariff = make_tariff(zero, real)
    assert select_rate(tariff, "1818", T0) is real
    assert select_rate(tariff, "999", T0) is zero
    fail_tariff = make_tariff(zero)
    charge = rate_leg(fail_tariff, "+44 20 7946 0000", 600, T0)
    assert charge.amount == 0
    assert charge.rate.prefix == "|"


def test_connect_time_in_another_zone_is_compared_in_utc():
    tokyo = dt.timezone(dt.timedelta(hours=9))
    v2 = make_rate("1818", p1="0.20", since=T0, version=2)
    tariff = make_tariff(make_rate("1818", since=T0 - dt.timedelta(days=1)), v2)
    assert select_rate(tariff, "1818", T0).version == 2
    assert price_leg(tariff, "1818", dt.datetime(2024, 6, 1, 21, 0, tzinfo=tokyo)).rate is v2
    assert price_leg(tariff, "1818", dt.datetime(2024, 6, 1, 20, 59, tzinfo=tokyo)).rate is not v2


def test_naive_connect_time_is_refused():
    with pytest.raises(InvalidCallError, match="connect_time"):
        rate_leg(make_tariff(make_rate()), "1818", 10, dt.datetime(2024, 1, 1))


def test_rate_leg_uses_the_selected_rate():
    tariff = make_tariff(make_rate("1818", f=60, n=60, p1="0.60", p2="0.60"))
    assert rate_leg(tariff, "1818 555", 61, T0).amount == Decimal("1.20000")
