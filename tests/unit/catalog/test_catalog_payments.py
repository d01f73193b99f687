"""Payments without a database: amount and currency checks, the sign convention, and that a
payment makes ``authorize.spendable`` grow by exactly its amount for every kind of balance."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from cbserver.billing import payments
from cbserver.billing.authorize import spendable
from cbserver.billing.currencies import minor_units
from cbserver.billing.domain import AccountInfo, Balance
from cbserver.billing.validation import ValidationError, clean


def test_amount_is_a_positive_exact_decimal():
    assert clean(payments.PAYMENT, {"amount": "10.00"}) == {
        "amount": Decimal("10.00"), "kind": "payment", "currency": None, "note": ""}
    for bad in ("-5", "0", 0, 1.5, "ten", None, True):
        with pytest.raises(ValidationError) as e:
            clean(payments.PAYMENT, {"amount": bad})
        assert e.value.field == "amount"
    with pytest.raises(ValidationError, match="refund"):
        clean(payments.PAYMENT, {"amount": "-5"})
    with pytest.raises(ValidationError) as e:
        clean(payments.PAYMENT, {})
    assert e.value.field == "amount"
    with pytest.raises(ValidationError) as e:
        clean(payments.PAYMENT, {"amount": "1", "kind": "chargeback"})
    assert e.value.field == "kind"
    with pytest.raises(ValidationError) as e:
        clean(payments.PAYMENT, {"amount": "1", "note": "x" * 501})
    assert e.value.field == "note"


def test_decimals_follow_the_currency():
    assert (minor_units("USD"), minor_units("JPY"), minor_units("KWD")) == (2, 0, 3)
    assert payments.check_amount(Decimal("10.50"), "USD") == Decimal("10.50")
    assert payments.check_amount(Decimal("10.500"), "KWD") == Decimal("10.500")
    assert payments.check_amount(Decimal("1000"), "JPY") == Decimal("1000")
    for amount, currency in (("10.005", "USD"), ("1.5", "JPY"), ("0.0001", "KWD"), ("0", "USD")):
        with pytest.raises(ValidationError) as e:
            payments.check_amount(Decimal(amount), currency)
        assert e.value.field == "amount"


def test_another_currency_is_refused():
    assert payments.check_currency(None, "USD") == "USD"
    assert payments.check_currency("USD", "USD") == "USD"
    with pytest.raises(ValidationError) as e:
        payments.check_currency("EUR", "USD")
    assert e.value.field == "currency" and "USD" in e.value.reason


def test_sign_convention():
    ten = Decimal(10)
    assert payments.balance_delta("debit", "payment", ten) == ten       # money left grows
    assert payments.balance_delta("debit", "refund", ten) == -ten
    assert payments.balance_delta("credit", "payment", ten) == -ten     # owes less
    assert payments.balance_delta("credit", "refund", ten) == ten
    assert payments.balance_delta("customer", "payment", ten) == -ten   # owes less / holds more
    assert payments.balance_delta("customer", "refund", ten) == ten


def test_money_left_is_known_only_where_the_balance_is_money():
    assert payments.money_left("debit", Decimal(3), None) == Decimal(3)
    assert payments.money_left("customer", Decimal(-7), None, "prepaid") == Decimal(7)
    assert payments.money_left("customer", Decimal(-7), Decimal(5), "prepaid") is None
    assert payments.money_left("customer", Decimal(2), None, "postpaid") is None
    assert payments.money_left("credit", Decimal(1), Decimal(5)) is None


_BASE = AccountInfo(
    id="a", customer_id=1, product_id=1, account_type="debit", balance_control="individual",
    balance=Decimal(0), credit_limit=None, status="active", activation_date=None,
    expiration_date=None, avail_after_first_use_days=None, avail_after_last_use_days=None,
    first_usage=None, last_usage=None, password_hash=None, internal=False, has_voice=True,
    customer_balance_control="prepaid", customer_balance=Decimal(0), customer_credit_limit=None,
    customer_currency="USD", product_currency="USD")

# (account fields, balance owner for balance_delta, balance, credit limit)
_CASES = [
    ({}, "debit", Decimal("2.50"), None),
    ({"account_type": "credit"}, "credit", Decimal("4"), Decimal("5")),
    ({"account_type": "credit"}, "credit", Decimal("-1"), Decimal("5")),       # paid in advance
    ({"balance_control": "subordinate"}, "customer", Decimal("0"), None),        # prepaid, empty
    ({"balance_control": "subordinate"}, "customer", Decimal("-3"), None),       # prepaid, 3 left
    ({"balance_control": "subordinate"}, "customer", Decimal("97"), Decimal("100")),
    ({"balance_control": "subordinate", "customer_balance_control": "postpaid"}, "customer",
     Decimal("97"), Decimal("100")),
]


@pytest.mark.parametrize(("fields", "owner", "balance", "limit"), _CASES)
def test_a_payment_makes_spendable_grow_by_exactly_its_amount(fields, owner, balance, limit):
    account = dataclasses.replace(_BASE, **fields)
    amount = Decimal("12.34")
    before = spendable(account, Balance(balance, limit, Decimal(0), 0))
    after = spendable(account, Balance(balance + payments.balance_delta(owner, "payment", amount),
                                       limit, Decimal(0), 0))
    assert after - before == amount
    refunded = spendable(account, Balance(balance + payments.balance_delta(owner, "refund", amount),
                                          limit, Decimal(0), 0))
    assert before - refunded == amount


def test_unlimited_balances_stay_unlimited():
    for fields, owner in (({"account_type": "credit"}, "credit"),
                          ({"balance_control": "subordinate",
                            "customer_balance_control": "postpaid"}, "customer")):
        account = dataclasses.replace(_BASE, **fields)
        moved = Decimal(5) + payments.balance_delta(owner, "payment", Decimal(3))
        assert moved == Decimal(2)
        assert spendable(account, Balance(moved, None, Decimal(0), 0)) is None
