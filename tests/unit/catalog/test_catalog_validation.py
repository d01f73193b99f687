"""Field parsers, the clean/immutable helpers, rate checks and password hashing (no database)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from cbserver.billing import passwords
from cbserver.billing import validation as v
from cbserver.billing.catalogrules import RATE, TARIFF, check_rate, check_tariff
from cbserver.billing.validation import ConflictError, ValidationError

UTC = dt.UTC


def _rate(**over):
    base = {"prefix": "55", "first_interval": 60, "next_interval": 6, "first_price": "0.05",
            "next_price": "0.05", "effective_from": "2026-01-01T00:00:00+00:00"}
    row = v.clean(RATE, {**base, **over})
    check_rate(row)
    return row


def test_unknown_currency_names_the_field():
    with pytest.raises(ValidationError) as e:
        v.clean(TARIFF, {"name": "T", "currency": "XYZ"})
    assert e.value.field == "currency" and "XYZ" in e.value.reason


def test_lower_case_currency_is_refused():
    with pytest.raises(ValidationError):
        v.currency("currency", "usd")


def test_unknown_field_is_refused():
    with pytest.raises(ValidationError) as e:
        v.clean(TARIFF, {"name": "T", "currency": "USD", "colour": "red"})
    assert e.value.field == "colour"


def test_required_field_missing_is_named():
    with pytest.raises(ValidationError) as e:
        v.clean(TARIFF, {"currency": "USD"})
    assert e.value.field == "name"


def test_manual_labels_are_accepted():
    row = v.clean(TARIFF, {"name": "T", "currency": "USD", "service": "Voice calls",
                           "managed_by": "Administrator only", "applied_to": "Customer"})
    assert (row["service"], row["managed_by"], row["applied_to"]) == ("voice", "administrator", "customer")


@pytest.mark.parametrize("field,value", [("first_interval", 0), ("next_interval", -6),
                                         ("first_interval", "abc"), ("next_interval", True)])
def test_zero_negative_or_non_numeric_intervals_are_refused(field, value):
    with pytest.raises(ValidationError) as e:
        _rate(**{field: value})
    assert e.value.field == field


def test_negative_price_is_refused():
    with pytest.raises(ValidationError) as e:
        _rate(next_price="-0.01")
    assert e.value.field == "next_price"


def test_float_price_is_refused():
    with pytest.raises(ValidationError) as e:
        _rate(first_price=0.05)
    assert e.value.field == "first_price" and "float" in e.value.reason


def test_prices_are_decimals():
    assert _rate(first_price="0.0123")["first_price"] == Decimal("0.0123")


def test_peak_offpeak_without_offpeak_fields_names_the_missing_one():
    with pytest.raises(ValidationError) as e:
        _rate(rating_mode="peak_offpeak", offpeak_first_interval=60, offpeak_next_interval=6,
              offpeak_first_price="0.01")
    assert e.value.field == "offpeak_next_price"


def test_flat_rate_with_offpeak_fields_is_refused():
    with pytest.raises(ValidationError) as e:
        _rate(offpeak_first_interval=60)
    assert e.value.field == "offpeak_first_interval"


def test_complete_peak_offpeak_rate_is_accepted():
    row = _rate(rating_mode="Separate peak / off-peak rate", offpeak_first_interval=30,
                offpeak_next_interval=6, offpeak_first_price="0.01", offpeak_next_price="0.01")
    assert row["rating_mode"] == "peak_offpeak"


def test_effective_from_without_a_time_zone_is_refused():
    with pytest.raises(ValidationError) as e:
        _rate(effective_from="2026-01-01T00:00:00")
    assert e.value.field == "effective_from" and "time zone" in e.value.reason
    with pytest.raises(ValidationError):
        _rate(effective_from=dt.datetime(2026, 1, 1))


def test_effective_from_in_another_zone_is_kept_aware():
    row = _rate(effective_from="2026-03-01T09:00:00-03:00")
    assert row["effective_from"].astimezone(UTC) == dt.datetime(2026, 3, 1, 12, tzinfo=UTC)


def test_bad_formula_is_refused_with_its_column():
    with pytest.raises(ValidationError) as e:
        _rate(formula="amount + * 2")
    assert e.value.field == "formula" and "column" in e.value.reason


def test_good_formula_is_accepted():
    assert _rate(formula="amount + 0.10")["formula"] == "amount + 0.10"


def test_offpeak_period_needs_zone_and_windows():
    with pytest.raises(ValidationError) as e:
        check_tariff(v.clean(TARIFF, {"name": "T", "currency": "USD",
                                       "offpeak_timezone": "America/Sao_Paulo"}))
    assert e.value.field == "offpeak_periods"


def test_bad_offpeak_window_is_named():
    with pytest.raises(ValidationError) as e:
        v.clean(TARIFF, {"name": "T", "currency": "USD", "offpeak_timezone": "UTC",
                         "offpeak_periods": ["someday 18:00-23:59"]})
    assert e.value.field == "offpeak_periods[0]"


def test_unknown_time_zone_is_refused():
    with pytest.raises(ValidationError) as e:
        v.clean(TARIFF, {"name": "T", "currency": "USD", "offpeak_timezone": "Mars/Olympus",
                         "offpeak_periods": ["sat-sun 00:00-23:59"]})
    assert e.value.field == "offpeak_timezone"


def test_changing_an_immutable_field_is_a_conflict():
    with pytest.raises(ConflictError) as e:
        v.check_immutable(TARIFF, {"currency": "EUR"}, {"currency": "USD"})
    assert e.value.field == "currency"
    v.check_immutable(TARIFF, {"currency": "USD"}, {"currency": "USD"})  # same value: fine


def test_page_arguments_are_bounded():
    assert v.page_args("10", "20") == (10, 20)
    with pytest.raises(ValidationError):
        v.page_args(0, 0)
    with pytest.raises(ValidationError):
        v.page_args(10, -1)


def test_password_hash_is_salted_and_verifies():
    a = passwords.hash_password("demo-pass-1", passwords.GENERATED)
    b = passwords.hash_password("demo-pass-1", passwords.GENERATED)
    assert a != b and a.startswith("scrypt$16$4$1$")
    assert passwords.verify_password("demo-pass-1", a)
    assert not passwords.verify_password("demo-pass-2", a)
    assert not passwords.verify_password("demo-pass-1", None)
    assert not passwords.verify_password("x", "not-a-hash")


def test_generated_passwords_use_secrets_alphabet():
    pw = passwords.generate()
    assert len(pw) == passwords.GENERATED_LENGTH and set(pw) <= set(passwords.ALPHABET)


@pytest.mark.parametrize("weak", ["short", "alllowercaseletters", "Password1", "cb-internal-Pass1"])
def test_weak_internal_passwords_are_refused(weak):
    with pytest.raises(ValidationError) as e:
        passwords.check_password("password", weak, strong=True, account_id="cb-internal")
    assert e.value.field == "password"


def test_strong_internal_password_is_accepted():
    assert passwords.check_password("password", "Vq7#mZ2!pL9x", strong=True, account_id="cb-internal")
