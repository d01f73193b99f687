"""The pure rules of authorization: rating-entry choice, account state, what may be spent."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from cbserver.billing.authorize import account_refusal, choose_entry, spendable, usable_seconds
from cbserver.billing.domain import AccountInfo, Balance, RatingEntry

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def account(**kw):
    values = dict(id="cb1", customer_id=7, product_id=1, account_type="debit",
                  balance_control="individual", balance=Decimal("10"), credit_limit=None, status="active",
                  activation_date=None, expiration_date=None, avail_after_first_use_days=None,
                  avail_after_last_use_days=None, first_usage=None, last_usage=None, password_hash=None,
                  internal=False, has_voice=True, customer_balance_control="prepaid",
                  customer_balance=Decimal("0"), customer_credit_limit=None, customer_currency="USD",
                  product_currency="USD")
    values.update(kw)
    return AccountInfo(**values)


def bal(balance, limit=None):
    return Balance(Decimal(balance), None if limit is None else Decimal(limit), Decimal(0), 0)


def test_entry_for_the_access_code_wins_over_the_empty_one():
    entries = [RatingEntry("", 2, False), RatingEntry("WEBCALLBACK", 1, False)]
    assert choose_entry(entries, "WEBCALLBACK").tariff_id == 1
    assert choose_entry(entries, "OTHER").tariff_id == 2
    assert choose_entry([RatingEntry("CALLBACK_FAIL", 3, False)], "WEBCALLBACK") is None


@pytest.mark.parametrize(("change", "reason"), [
    ({"status": "inactive"}, "inactive"),
    ({"activation_date": NOW + dt.timedelta(seconds=1)}, "inactive"),
    ({"expiration_date": NOW}, "expired"),
    ({"first_usage": NOW - dt.timedelta(days=30), "avail_after_first_use_days": 30}, "expired"),
    ({"last_usage": NOW - dt.timedelta(days=7), "avail_after_last_use_days": 7}, "expired"),
    ({"has_voice": False}, "no_voice_service"),
])
def test_account_refusals(change, reason):
    assert account_refusal(account(**change), NOW).reason == reason


@pytest.mark.parametrize("change", [
    {"activation_date": NOW},
    {"expiration_date": NOW + dt.timedelta(seconds=1)},
    {"first_usage": NOW - dt.timedelta(days=29, hours=23), "avail_after_first_use_days": 30},
    {"last_usage": NOW - dt.timedelta(days=6), "avail_after_last_use_days": 7},
    {"avail_after_first_use_days": 30},  # never used yet: the period has not started
])
def test_account_may_call_on_the_edges(change):
    assert account_refusal(account(**change), NOW) is None


def test_what_each_kind_of_balance_may_spend():
    assert spendable(account(), bal("10")) == Decimal("10")
    assert spendable(account(), bal("-1")) == Decimal("-1")  # overdrawn debit: nothing
    assert spendable(account(account_type="credit"), bal("3", "5")) == Decimal("2")
    assert spendable(account(account_type="credit"), bal("3")) is None  # no credit limit
    sub = {"balance_control": "subordinate"}
    assert spendable(account(**sub), bal("97", "100")) == Decimal("3")
    assert spendable(account(**sub, customer_balance_control="prepaid"), bal("-20")) == Decimal("20")
    assert spendable(account(**sub, customer_balance_control="postpaid"), bal("50")) is None


def test_owner_key_names_the_balance_drawn_on():
    assert account().owner_key == "account:cb1"
    assert account(balance_control="subordinate").owner_key == "customer:7"


def test_a_call_may_last_only_while_the_account_stays_usable():
    day = 86400
    assert usable_seconds(account(), NOW) is None  # no end: only max_call_seconds applies
    assert usable_seconds(account(expiration_date=NOW + dt.timedelta(minutes=5)), NOW) == 300
    assert usable_seconds(account(expiration_date=NOW - dt.timedelta(seconds=1)), NOW) == 0
    # Availability after first use: from the first use, or from now for a first call.
    assert usable_seconds(account(first_usage=NOW - dt.timedelta(days=6, hours=23),
                                  avail_after_first_use_days=7), NOW) == 3600
    assert usable_seconds(account(avail_after_first_use_days=2), NOW) == 2 * day
    # The earlier end wins.
    assert usable_seconds(account(expiration_date=NOW + dt.timedelta(days=1),
                                  avail_after_first_use_days=2), NOW) == day
    # Availability after last use: the call itself is a use, so it sets no end.
    assert usable_seconds(account(last_usage=NOW - dt.timedelta(days=6, hours=23),
                                  avail_after_last_use_days=7), NOW) is None
