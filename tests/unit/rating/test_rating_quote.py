import datetime as dt
import json
from decimal import Decimal

import pytest

from cbserver.billing.model import InvalidCallError, OffPeakPeriod, OffPeakWindow
from cbserver.billing.rating import max_duration, price_leg, quote

from .helpers import UTC, make_rate, make_tariff

T0 = dt.datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def test_quote_json_is_stable_sorted_and_has_five_decimals():
    tariff = make_tariff(make_rate("1818", rate_id=7, version=3), name="Callback")
    q = quote(tariff, "+1 818 555 1234", 61, dt.datetime(2024, 6, 1, 14, 0, tzinfo=dt.timezone(
        dt.timedelta(hours=2))))
    text = q.to_json()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert list(data["rate"]) == sorted(data["rate"])
    assert data["amount"] == "0.10500"
    assert data["matched_prefix"] == "1818"
    assert data["number"] == "18185551234"
    assert data["connect_time"] == "2024-06-01T12:00:00+00:00"
    assert data["period"] == "peak"
    assert data["charged_seconds"] == 66
    assert data["currency"] == "USD"
    assert data["rate"]["rate_id"] == 7 and data["rate"]["version"] == 3
    assert data["rate"]["first_price"] == "0.10"
    assert text == q.to_json()


def test_quote_amount_keeps_five_places_for_round_numbers_and_zero():
    tariff = make_tariff(make_rate("1", f=60, n=60, p1="1", p2="1"))
    assert json.loads(quote(tariff, "1", 60, T0).to_json())["amount"] == "1.00000"
    assert json.loads(quote(tariff, "1", 0, T0).to_json())["amount"] == "0.00000"


def test_quote_reports_offpeak_and_split_parts():
    period = OffPeakPeriod("Etc/UTC", (OffPeakWindow.parse("mon-sun 12:00-12:59"),))
    rate = make_rate("1", mode="peak_offpeak", offpeak_first_interval=60,
                     offpeak_next_interval=60, offpeak_first_price=Decimal("0.01"),
                     offpeak_next_price=Decimal("0.01"))
    data = json.loads(quote(make_tariff(rate, offpeak=period, split_at_boundary=True),
                            "1", 3700, T0).to_json())
    assert data["period"] == "off-peak"
    assert [(p["period"], p["seconds"]) for p in data["parts"]] == [
        ("off-peak", 3600), ("peak", 100)]


def flat(prefix, per_minute, f=60, n=60):
    return make_rate(prefix, f=f, n=n, p1=per_minute, p2=per_minute)


def legs(a_price="0.60", b_price="1.20", f=60, n=60):
    tariff = make_tariff(flat("1", a_price, f, n), flat("44", b_price, f, n))
    return price_leg(tariff, "1818", T0), price_leg(tariff, "4420", T0)


def test_max_duration_budget_exactly_spent_is_allowed():
    a, b = legs()
    # t <= 60: 0.60 + 1.20 = 1.80; t = 61 would cost 1.20 + 2.40
    assert max_duration(Decimal("1.80"), a, 0, b) == 60
    assert max_duration(Decimal("3.59999"), a, 0, b) == 60
    assert max_duration(Decimal("3.60"), a, 0, b) == 120


def test_max_duration_is_zero_when_nothing_fits():
    a, b = legs()
    assert max_duration(Decimal("1.79999"), a, 0, b) == 0
    assert max_duration(Decimal("0"), a, 0, b) == 0
    assert max_duration(Decimal("-5"), a, 0, b) == 0
    # legA already used 0.60 for 30 s; 0.50 left does not even cover that
    assert max_duration(Decimal("0.50"), a, 30, b) == 0


def test_max_duration_counts_leg_a_elapsed_time():
    a, b = legs()
    # legA connected 50 s ago: t = 10 keeps legA inside its first minute
    assert max_duration(Decimal("1.80"), a, 50, b) == 10
    assert max_duration(Decimal("1.80"), a, 60, b) == 0


def test_max_duration_is_capped_by_the_limit_when_calls_are_free():
    a, b = legs("0", "0")
    assert max_duration(Decimal("0"), a, 0, b) == 86400
    assert max_duration(Decimal("0"), a, 0, b, limit=3600) == 3600


def test_max_duration_refuses_float_budgets():
    a, b = legs()
    with pytest.raises(InvalidCallError, match="budget"):
        max_duration(1.5, a, 0, b)


def test_max_duration_limit_is_clamped_to_the_longest_ratable_leg():
    a, b = legs("0", "0")
    assert max_duration(Decimal("1"), a, 100, b, limit=10**9) == 7 * 86400 - 100
    with pytest.raises(InvalidCallError, match="limit"):
        max_duration(Decimal("1"), a, 0, b, limit=-1)
