import datetime as dt
from decimal import Decimal

import pytest

from cbserver.billing.formula import FormulaError
from cbserver.billing.model import (
    OffPeakPeriod,
    OffPeakWindow,
    Rate,
    RateDefinitionError,
    RatingMode,
)

from .helpers import EPOCH_2020, make_rate, make_tariff


def test_naive_effective_from_is_refused():
    with pytest.raises(RateDefinitionError) as info:
        make_rate(since=dt.datetime(2020, 1, 1))
    assert info.value.field == "effective_from"


def test_float_prices_are_refused():
    with pytest.raises(RateDefinitionError, match="first_price"):
        Rate("1818", 60, 6, 0.1, Decimal("0.05"), EPOCH_2020)


@pytest.mark.parametrize(("field", "kw"), [
    ("first_interval", {"f": 0}),
    ("next_interval", {"n": -6}),
    ("next_price", {"p2": "-0.01"}),
    ("prefix", {"prefix": "18a"}),
    ("prefix", {"prefix": ""}),
])
def test_invalid_fields_are_named(field, kw):
    with pytest.raises(RateDefinitionError) as info:
        make_rate(**kw)
    assert info.value.field == field


def test_peak_offpeak_mode_requires_all_four_offpeak_fields():
    with pytest.raises(RateDefinitionError) as info:
        make_rate(mode="peak_offpeak", offpeak_first_interval=60, offpeak_next_interval=6,
                  offpeak_first_price=Decimal("0.1"))
    assert info.value.field == "offpeak_next_price"


def test_flat_mode_refuses_offpeak_fields():
    with pytest.raises(RateDefinitionError, match="offpeak_first_interval"):
        make_rate(offpeak_first_interval=60)


def test_mode_is_normalised_to_the_enum():
    assert make_rate(mode="flat").mode is RatingMode.FLAT


def test_formula_is_parsed_when_the_rate_is_entered():
    with pytest.raises(FormulaError) as info:
        make_rate(formula="amount + bogus")
    assert info.value.column == 10
    assert isinstance(info.value, RateDefinitionError)
    assert info.value.field == "formula"
    assert "unknown variable 'bogus'" in str(info.value)


def test_tariff_refuses_duplicate_versions_and_bad_currency():
    rate = make_rate()
    with pytest.raises(RateDefinitionError, match="two versions"):
        make_tariff(rate, make_rate())
    with pytest.raises(RateDefinitionError, match="currency"):
        make_tariff(rate, currency="usd")


def test_offpeak_window_parse_and_validation():
    window = OffPeakWindow.parse("mon-fri 18:00-23:59")
    assert window.days == frozenset(range(5))
    assert (window.start_minute, window.stop_minute) == (18 * 60, 24 * 60)
    with pytest.raises(RateDefinitionError):
        OffPeakWindow.parse("fri-mon 18:00-23:59")
    with pytest.raises(RateDefinitionError, match="before start"):
        OffPeakWindow(frozenset({0}), dt.time(22), dt.time(6))
    with pytest.raises(RateDefinitionError, match="timezone"):
        OffPeakPeriod("Mars/Olympus", (window,))


def test_rates_of_other_zones_are_indexed_in_utc():
    berlin = dt.timezone(dt.timedelta(hours=1))
    early = make_rate(since=dt.datetime(2024, 1, 1, 0, 30, tzinfo=berlin), version=2)
    tariff = make_tariff(make_rate(since=EPOCH_2020), early)
    starts = tariff.index["1818"].starts
    assert starts[1] == dt.datetime(2023, 12, 31, 23, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize("text", ["mon-fri 18:00-23:59", "mon,wed-thu,sun 00:00-07:59",
                                  "sat 12:30-12:30", "mon-sun 00:00-23:59"])
def test_offpeak_window_text_round_trips(text):
    assert OffPeakWindow.parse(text).text == text
    assert OffPeakWindow.parse(OffPeakWindow.parse(text).text) == OffPeakWindow.parse(text)
