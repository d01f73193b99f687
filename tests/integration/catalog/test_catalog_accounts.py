"""Customers, batches and accounts against the real PostgreSQL."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg2
import pytest
import pytest_twisted

from cbserver.billing.passwords import verify_password
from cbserver.billing.validation import ConflictError, NotFound, ValidationError

pytestmark = pytest.mark.integration

STRONG = "Vq7#mZ2!pL9x-Internal"


async def _setup(catalog, accounts):
    await catalog.create_tariff({"name": "Callback", "currency": "USD"})
    await catalog.create_product({"name": "Callback Services", "currency": "USD",
                                  "rating_list": [{"node": "node1", "access_code": "WEBCALLBACK",
                                                   "tariff": "Callback"}]})
    return await accounts.create_customer({
        "name": "Retail", "balance_control": "postpaid", "currency": "USD", "credit_limit": "1000",
        "business_model": "universal", "customer_class": "Default", "billing_period": "monthly",
        "billing_period_timezone": "America/Sao_Paulo"})


def _hashes(pg_dsn, account_id):
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT password_hash, web_password_hash FROM accounts WHERE id = %s", [account_id])
        return cur.fetchone()


@pytest_twisted.ensureDeferred
async def test_customer_fields_are_stored(catalog, accounts):
    c = await _setup(catalog, accounts)
    assert (c["balance_control"], c["currency"], c["credit_limit"], c["billing_period_timezone"]) == \
        ("postpaid", "USD", Decimal("1000"), "America/Sao_Paulo")
    with pytest.raises(ConflictError):
        await accounts.update_customer("Retail", {"currency": "EUR"})
    changed = await accounts.update_customer("Retail", {"credit_limit": "500"})
    assert changed["credit_limit"] == Decimal("500")
    assert (await accounts.list_customers({"name": "ret"}))["total"] == 1


@pytest_twisted.ensureDeferred
async def test_debit_account_with_password_is_hashed_and_shown_without_hashes(catalog, accounts, pg_dsn):
    await _setup(catalog, accounts)
    a = await accounts.create_account({
        "id": "cb1818000001", "customer": "Retail", "product": "Callback Services",
        "opening_balance": "20", "password": "demo-pass-1", "web_login": "demo1",
        "web_password": "demo-web-1", "time_zone": "America/Sao_Paulo", "language": "pt-BR",
        "activation_date": "2026-01-01T00:00:00+00:00", "expiration_date": "2027-01-01T00:00:00+00:00",
        "avail_after_first_use_days": 90, "avail_after_last_use_days": 30, "distributor": "Kiosk 7",
        "ecommerce": True})
    assert a["balance"] == Decimal("20") and a["opening_balance"] == Decimal("20")
    assert a["has_password"] and a["has_web_password"] and "password_hash" not in a
    assert (a["customer"], a["product"], a["currency"], a["status"]) == \
        ("Retail", "Callback Services", "USD", "active")
    service_hash, web_hash = _hashes(pg_dsn, "cb1818000001")
    assert "demo-pass-1" not in service_hash and verify_password("demo-pass-1", service_hash)
    assert verify_password("demo-web-1", web_hash)
    assert await accounts.check_service_password("cb1818000001", "demo-pass-1")
    assert not await accounts.check_service_password("cb1818000001", "wrong-pass")


@pytest_twisted.ensureDeferred
async def test_debit_account_with_a_credit_limit_is_refused(catalog, accounts):
    await _setup(catalog, accounts)
    with pytest.raises(ValidationError) as e:
        await accounts.create_account({"id": "a1", "customer": "Retail", "product": "Callback Services",
                                       "credit_limit": "10"})
    assert e.value.field == "credit_limit"


@pytest_twisted.ensureDeferred
async def test_internal_account_needs_a_strong_password(catalog, accounts, pg_dsn):
    await _setup(catalog, accounts)
    base = {"id": "cb-internal", "customer": "Retail", "product": "Callback Services",
            "account_type": "credit", "balance_control": "subordinate", "internal": True}
    with pytest.raises(ValidationError) as e:
        await accounts.create_account(base)
    assert e.value.field == "password"
    with pytest.raises(ValidationError) as e:
        await accounts.create_account({**base, "password": "password"})
    assert e.value.field == "password"
    a = await accounts.create_account({**base, "password": STRONG, "credit_limit": "100"})
    assert (a["internal"], a["account_type"], a["balance_control"], a["balance"]) == \
        (True, "credit", "subordinate", Decimal(0))
    with pytest.raises(ValidationError):
        await accounts.update_account("cb-internal", {"password": None})
    # The database refuses an internal account without a password too.
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.CheckViolation):
            cur.execute("UPDATE accounts SET password_hash = NULL WHERE id = 'cb-internal'")


@pytest_twisted.ensureDeferred
async def test_product_in_another_currency_than_the_customer_is_refused(catalog, accounts):
    await _setup(catalog, accounts)
    await catalog.create_product({"name": "Euro product", "currency": "EUR"})
    with pytest.raises(ValidationError) as e:
        await accounts.create_account({"id": "a1", "customer": "Retail", "product": "Euro product"})
    assert e.value.field == "product"


@pytest_twisted.ensureDeferred
async def test_duplicate_account_id_is_a_conflict(catalog, accounts):
    await _setup(catalog, accounts)
    data = {"id": "a1", "customer": "Retail", "product": "Callback Services"}
    await accounts.create_account(data)
    with pytest.raises(ConflictError) as e:
        await accounts.create_account(data)
    assert e.value.field == "id"


@pytest_twisted.ensureDeferred
async def test_naive_dates_and_bad_periods_are_refused(catalog, accounts):
    await _setup(catalog, accounts)
    base = {"id": "a1", "customer": "Retail", "product": "Callback Services"}
    with pytest.raises(ValidationError) as e:
        await accounts.create_account({**base, "expiration_date": "2027-01-01T00:00:00"})
    assert e.value.field == "expiration_date"
    with pytest.raises(ValidationError) as e:
        await accounts.create_account({**base, "activation_date": "2027-01-01T00:00:00Z",
                                       "expiration_date": "2026-01-01T00:00:00Z"})
    assert e.value.field == "expiration_date"
    with pytest.raises(ValidationError) as e:
        await accounts.create_account({**base, "avail_after_first_use_days": 0})
    assert e.value.field == "avail_after_first_use_days"


@pytest_twisted.ensureDeferred
async def test_account_updates_keep_fixed_fields(catalog, accounts):
    await _setup(catalog, accounts)
    await accounts.create_account({"id": "a1", "customer": "Retail", "product": "Callback Services",
                                   "status": "inactive", "opening_balance": "5"})
    with pytest.raises(ConflictError):
        await accounts.update_account("a1", {"account_type": "credit"})
    with pytest.raises(ConflictError):
        await accounts.update_account("a1", {"opening_balance": "7"})
    a = await accounts.update_account("a1", {"language": "pt", "expiration_date": "2030-01-01T00:00:00Z",
                                             "customer": "Retail"})
    assert a["language"] == "pt" and a["expiration_date"] == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert await accounts.activate_account("a1") == 1
    assert (await accounts.get_account("a1"))["status"] == "active"
    assert await accounts.activate_account("a1") == 0
    with pytest.raises(NotFound):
        await accounts.activate_account("nobody")


@pytest_twisted.ensureDeferred
async def test_batches_activate_and_are_protected_while_holding_accounts(catalog, accounts):
    await _setup(catalog, accounts)
    await accounts.create_batch({"name": "cards-1", "customer": "Retail"})
    for i in range(3):
        await accounts.create_account({"id": f"cb{i}", "customer": "Retail", "product": "Callback Services",
                                       "batch": "cards-1", "status": "inactive"})
    assert (await accounts.get_batch("cards-1"))["accounts"] == {"inactive": 3}
    assert await accounts.activate_batch("cards-1") == 3
    assert (await accounts.list_accounts({"batch": "cards-1", "status": "active"}))["total"] == 3
    with pytest.raises(ConflictError):
        await accounts.delete_batch("cards-1")
    with pytest.raises(ConflictError):
        await accounts.delete_customer("Retail")
    with pytest.raises(ConflictError):
        await catalog.delete_product("Callback Services")
    for i in range(3):
        await accounts.delete_account(f"cb{i}")
    await accounts.delete_batch("cards-1")
    await accounts.delete_customer("Retail")
    with pytest.raises(NotFound):
        await accounts.get_customer("Retail")


@pytest_twisted.ensureDeferred
async def test_account_list_filters_and_paginates(catalog, accounts):
    await _setup(catalog, accounts)
    for i in range(5):
        await accounts.create_account({"id": f"cb{i}", "customer": "Retail", "product": "Callback Services",
                                       "status": "inactive" if i % 2 else "active"})
    await accounts.create_account({"id": "x9", "customer": "Retail", "product": "Callback Services"})
    page = await accounts.list_accounts({"id_prefix": "cb", "status": "active"}, limit=2)
    assert page["total"] == 3 and [a["id"] for a in page["items"]] == ["cb0", "cb2"]
    assert (await accounts.list_accounts({"internal": "false"}))["total"] == 6
