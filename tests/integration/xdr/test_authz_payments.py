"""Payments against the real PostgreSQL, seen through authorization: a recharge buys a longer
call, a prepaid customer's payment funds its subordinate accounts, a credit account's payment
lowers what it owes, refusals, concurrent payments, and recharge as the start of availability."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_CEILING, Decimal

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from cbserver.billing.authorize import AuthorizationError, Authorizer, AuthRequest
from cbserver.billing.payments import Payments
from cbserver.billing.validation import ConflictError, NotFound, ValidationError
from cbserver.db import authz_store
from cbserver.db.stores import PostgresAuthorizationStore, PostgresCatalogStore
from cbserver.db.tariff_loader import TariffCache
from tests.integration.xdr.helpers import balance, query

pytestmark = pytest.mark.integration

US = "18005550100"
UK = "442071234567"  # 1 cent a second


def req(account, session="s1"):
    return AuthRequest(session_id=session, account_id=account, cli=US, cld=UK)


@pytest.fixture
def payments(db):
    return Payments(PostgresCatalogStore(db), reactor)


@pytest.fixture
def plain(db):
    """An authorizer without the CALLBACK_FAIL hold, so budgets read simply."""
    return Authorizer(PostgresAuthorizationStore(db), TariffCache(db, reactor, ttl=0), reactor, node="node1")


@pytest_twisted.ensureDeferred
async def test_a_recharged_debit_card_can_call_longer(plain, payments, cat_dsn):
    before = await plain.authorize(req("cb1010"))  # 0.50 USD
    await plain.release("s1")
    paid = await payments.recharge_account("cb1010", {"amount": "10.00", "note": "receipt 42"},
                                           made_by="test")
    assert (paid["kind"], paid["amount"], paid["currency"], paid["balance_after"]) == \
        ("payment", Decimal("10.00"), "USD", Decimal("10.50"))
    assert (paid["account_id"], paid["customer_id"], paid["made_by"], paid["note"]) == \
        ("cb1010", None, "test", "receipt 42")
    assert balance(cat_dsn, "cb1010") == Decimal("10.50")
    after = await plain.authorize(req("cb1010", session="s2"))
    assert after.budget == before.budget + Decimal(10)
    assert after.max_seconds > before.max_seconds + 900  # 10 USD more at about 1 cent a second


@pytest_twisted.ensureDeferred
async def test_a_prepaid_customer_funds_its_subordinate_accounts(plain, payments, cat_dsn):
    # Retail (customer 1) is prepaid without a credit limit and holds nothing yet.
    query(cat_dsn, "INSERT INTO accounts (id, customer_id, product_id, balance_control) "
                   "VALUES ('sub1', 1, 1, 'subordinate')")
    refused = await plain.authorize(req("sub1"))
    assert (refused.max_seconds, refused.reason) == (0, "no_balance")
    paid = await payments.recharge_customer("Retail", {"amount": "5.00"}, made_by="test")
    assert (paid["customer_id"], paid["account_id"], paid["balance_after"]) == (1, None, Decimal("-5.00"))
    auth = await plain.authorize(req("sub1", session="s2"))
    assert auth.reason is None and auth.budget == Decimal("5.00") and auth.max_seconds > 0
    with pytest.raises(ConflictError) as e:  # the account has no balance of its own
        await payments.recharge_account("sub1", {"amount": "1"}, made_by="test")
    assert e.value.field == "account"


@pytest_twisted.ensureDeferred
async def test_a_postpaid_customers_payment_pays_off_what_it_owes(plain, payments, cat_dsn):
    assert (await plain.authorize(req("cb1003"))).budget == Decimal(3)  # Corp: limit 100, owes 97
    await plain.release("s1")  # budgets below are then what the balance allows, nothing held
    paid = await payments.recharge_customer(2, {"amount": "50"}, made_by="test")
    assert paid["balance_after"] == Decimal(47)
    assert (await plain.authorize(req("cb1003", session="s2"))).budget == Decimal(53)


@pytest_twisted.ensureDeferred
async def test_a_credit_accounts_payment_lowers_what_it_owes(plain, payments, cat_dsn):
    assert (await plain.authorize(req("cb1002"))).budget == Decimal("4.00")  # limit 5, owes 1
    await plain.release("s1")
    paid = await payments.recharge_account("cb1002", {"amount": "0.75"}, made_by="test")
    assert paid["balance_after"] == Decimal("0.25") == balance(cat_dsn, "cb1002")
    assert (await plain.authorize(req("cb1002", session="s2"))).budget == Decimal("4.75")


@pytest_twisted.ensureDeferred
async def test_bad_payments_are_refused_and_change_nothing(payments, cat_dsn):
    cases = [({"amount": "1", "currency": "EUR"}, "currency"),
             ({"amount": "1.005"}, "amount"),
             ({"amount": "-5"}, "amount"),
             ({"amount": 0}, "amount"),
             ({"amount": "1", "extra": 1}, "extra")]
    for data, field in cases:
        with pytest.raises(ValidationError) as e:
            await payments.recharge_account("cb1001", data, made_by="test")
        assert e.value.field == field, data
    with pytest.raises(NotFound):
        await payments.recharge_account("nobody", {"amount": "1"}, made_by="test")
    with pytest.raises(NotFound):
        await payments.recharge_customer("Nobody", {"amount": "1"}, made_by="test")
    assert balance(cat_dsn, "cb1001") == Decimal("10.00")
    assert query(cat_dsn, "SELECT count(*) FROM payments") == [(0,)]


@pytest_twisted.ensureDeferred
async def test_a_refund_leaves_what_calls_in_progress_hold(plain, payments, cat_dsn):
    await payments.recharge_account("cb1010", {"amount": "10.00"}, made_by="test")  # 10.50 left
    # A call in progress holds what its longest duration costs: here nearly all of it.
    call = await plain.authorize(req("cb1010"))
    held = call.reserved_a + call.reserved_b
    free = Decimal("10.50") - held
    cent = Decimal("0.01")
    assert Decimal(0) <= free < Decimal("0.10")
    over = (free + cent).quantize(cent, rounding=ROUND_CEILING)  # USD refunds are whole cents
    with pytest.raises(ValidationError, match="held by calls in progress"):
        await payments.recharge_account("cb1010", {"amount": str(over), "kind": "refund"},
                                        made_by="test")
    assert balance(cat_dsn, "cb1010") == Decimal("10.50")
    # Once the call is over (its hold released), the money is free to give back.
    await plain.release("s1")
    back = await payments.recharge_account("cb1010", {"amount": "10.00", "kind": "refund"},
                                           made_by="test")
    assert back["balance_after"] == Decimal("0.50")


@pytest_twisted.ensureDeferred
async def test_refunds_give_back_no_more_than_was_paid_or_is_left(payments, cat_dsn):
    with pytest.raises(ValidationError, match="more than was paid"):  # opening balance is not paid in
        await payments.recharge_account("cb1001", {"amount": "1", "kind": "refund"}, made_by="test")
    await payments.recharge_account("cb1001", {"amount": "5"}, made_by="test")
    query(cat_dsn, "UPDATE accounts SET balance = 2 WHERE id = 'cb1001'")  # calls spent the rest
    with pytest.raises(ValidationError, match="money left"):
        await payments.recharge_account("cb1001", {"amount": "3", "kind": "refund"}, made_by="test")
    back = await payments.recharge_account("cb1001", {"amount": "2", "kind": "refund",
                                                      "note": "customer asked"}, made_by="test")
    assert (back["kind"], back["amount"], back["balance_after"]) == ("refund", Decimal(2), Decimal(0))
    listed = await payments.list_account_payments("cb1001")
    assert [(p["kind"], p["amount"]) for p in listed["items"]] == [("refund", 2), ("payment", 5)]
    assert listed["total"] == 2
    # a refund is not a recharge: only the payment stamped the account
    stamps = query(cat_dsn, "SELECT first_recharge = last_recharge, last_recharge IS NOT NULL "
                            "FROM accounts WHERE id = 'cb1001'")
    assert stamps == [(True, True)]


@pytest_twisted.ensureDeferred
async def test_concurrent_payments_are_both_counted(payments, cat_dsn):
    results = await defer.gatherResults([
        defer.ensureDeferred(payments.recharge_account("cb1001", {"amount": amount}, made_by="test"))
        for amount in ("1.00", "2.00", "4.00")])
    assert balance(cat_dsn, "cb1001") == Decimal("17.00")
    # each saw the balance the one before it left: the row lock serialised them
    assert sorted(r["balance_after"] for r in results)[-1] == Decimal("17.00")
    assert len({r["balance_after"] for r in results}) == 3


@pytest_twisted.ensureDeferred
async def test_payments_are_append_only(payments, cat_dsn):
    await payments.recharge_account("cb1001", {"amount": "1"}, made_by="test")
    for sql in ("UPDATE payments SET amount = 100", "DELETE FROM payments"):
        with pytest.raises(psycopg2.errors.CheckViolation):
            query(cat_dsn, sql)


@pytest_twisted.ensureDeferred
async def test_a_recharge_restarts_availability_after_last_use(plain, payments, cat_dsn, db):
    query(cat_dsn, "UPDATE accounts SET avail_after_last_use_days = 30, "
                   "last_usage = '2020-01-01T00:00:00Z' WHERE id = 'cb1001'")
    with pytest.raises(AuthorizationError) as e:
        await plain.authorize(req("cb1001"))
    assert e.value.reason == "expired"
    await payments.recharge_account("cb1001", {"amount": "1"}, made_by="test")
    assert (await plain.authorize(req("cb1001", session="s2"))).max_seconds > 0
    info = await authz_store.fetch_account(db, "cb1001")  # the hosted mode's read agrees
    assert info.last_usage > dt.datetime(2020, 1, 2, tzinfo=dt.UTC)


@pytest_twisted.ensureDeferred
async def test_availability_after_first_use_counts_from_a_first_recharge(plain, payments, cat_dsn):
    query(cat_dsn, "UPDATE accounts SET avail_after_first_use_days = 1 WHERE id = 'cb1001'")
    paid = await payments.recharge_account("cb1001", {"amount": "1"}, made_by="test")
    assert query(cat_dsn, "SELECT first_usage, first_recharge FROM accounts WHERE id = 'cb1001'") \
        == [(None, paid["created_at"])]
    assert (await plain.authorize(req("cb1001"))).max_seconds > 0
    # two days later (moved back rather than waited for): the day after the recharge is over,
    # though the card was never used
    query(cat_dsn, "UPDATE accounts SET first_recharge = first_recharge - interval '2 days', "
                   "last_recharge = last_recharge - interval '2 days' WHERE id = 'cb1001'")
    with pytest.raises(AuthorizationError) as e:
        await plain.authorize(req("cb1001", session="s2"))
    assert e.value.reason == "expired"
    # and a later recharge does not restart a period that counts from the *first* one
    await payments.recharge_account("cb1001", {"amount": "1"}, made_by="test")
    with pytest.raises(AuthorizationError):
        await plain.authorize(req("cb1001", session="s3"))
