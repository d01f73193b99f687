"""Payments through the admin API and the CLI, against the real PostgreSQL."""

from __future__ import annotations

import json

import psycopg2
import pytest
import pytest_twisted

from tests.integration.catalog.admin_client import AdminClient
from tests.integration.catalog.test_catalog_cli import cbs

pytestmark = pytest.mark.integration


async def _world(api):
    await api.ok("POST", "/v1/tariffs", {"name": "Callback", "currency": "USD"})
    await api.ok("POST", "/v1/products", {"name": "P", "currency": "USD",
                                          "rating_list": [{"node": "node1", "tariff": "Callback"}]})
    await api.ok("POST", "/v1/customers", {"name": "Shop", "currency": "USD", "balance_control": "prepaid"})
    await api.ok("POST", "/v1/accounts", {"id": "card1", "customer": "Shop", "product": "P",
                                          "opening_balance": "1.00"})
    await api.ok("POST", "/v1/accounts", {"id": "sub1", "customer": "Shop", "product": "P",
                                          "balance_control": "subordinate"})


@pytest_twisted.ensureDeferred
async def test_account_payments_over_the_admin_api(db, tmp_path):
    api = AdminClient(db, tmp_path)
    await _world(api)
    paid = await api.ok("POST", "/v1/accounts/card1/payments", {"amount": "10.00", "note": "cash"})
    assert (paid["amount"], paid["balance_after"], paid["made_by"], paid["kind"], paid["note"]) == \
        ("10.00", "11.00", "admin-api", "payment", "cash")
    assert (await api.ok("GET", "/v1/accounts/card1"))["balance"] == "11.00"
    await api.ok("POST", "/v1/accounts/card1/payments", {"amount": "0.50", "kind": "refund"})
    page = await api.ok("GET", "/v1/accounts/card1/payments?limit=1")
    assert page["total"] == 2 and [p["kind"] for p in page["items"]] == ["refund"]
    for body, field in (({"amount": "-1"}, "amount"), ({"amount": "1.001"}, "amount"),
                        ({"amount": "1", "currency": "EUR"}, "currency"), ({}, "amount"),
                        ({"amount": "ten"}, "amount")):
        code, err = await api.call("POST", "/v1/accounts/card1/payments", body)
        assert (code, err["error"]["field"]) == (400, field), body
    code, err = await api.call("POST", "/v1/accounts/nobody/payments", {"amount": "1"})
    assert code == 404 and err["error"]["code"] == "not_found"
    code, _ = await api.call("GET", "/v1/accounts/nobody/payments")
    assert code == 404
    code, err = await api.call("POST", "/v1/accounts/sub1/payments", {"amount": "1"})
    assert (code, err["error"]["field"]) == (409, "account")
    code, _ = await api.call("POST", "/v1/accounts/card1/payments", {"amount": "1"}, token="wrong")
    assert code == 401
    # an account with payments is part of the money's record: it cannot be deleted
    code, _ = await api.call("DELETE", "/v1/accounts/card1")
    assert code == 409


@pytest_twisted.ensureDeferred
async def test_customer_payments_over_the_admin_api(db, tmp_path):
    api = AdminClient(db, tmp_path)
    await _world(api)
    paid = await api.ok("POST", "/v1/customers/Shop/payments", {"amount": "25", "currency": "USD"})
    assert (paid["balance_after"], paid["account_id"]) == ("-25", None)
    assert (await api.ok("GET", "/v1/customers/Shop"))["balance"] == "-25"
    listed = await api.ok("GET", f"/v1/customers/{paid['customer_id']}/payments")
    assert listed["total"] == 1 and listed["items"][0]["id"] == paid["id"]
    code, err = await api.call("POST", "/v1/customers/Shop/payments", {"amount": "30", "kind": "refund"})
    assert (code, err["error"]["field"]) == (400, "amount")
    code, _ = await api.call("POST", "/v1/customers/Nobody/payments", {"amount": "1"})
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_recharge_from_the_cli(db, tmp_path, pg_dsn):
    await _world(AdminClient(db, tmp_path))
    out = cbs("accounts", "recharge", "card1", "--amount", "5.25", "--note", "kiosk 7", "--dsn", pg_dsn)
    paid = json.loads(out.stdout)
    assert (paid["balance_after"], paid["made_by"], paid["note"]) == ("6.25", "cli", "kiosk 7")
    out = cbs("accounts", "recharge", "--customer", "Shop", "--amount", "3", "--dsn", pg_dsn)
    assert json.loads(out.stdout)["balance_after"] == "-3"
    out = cbs("accounts", "recharge", "card1", "--amount", "1.25", "--refund", "--dsn", pg_dsn)
    assert json.loads(out.stdout)["balance_after"] == "5.00"
    listed = json.loads(cbs("accounts", "payments", "card1", "--dsn", pg_dsn).stdout)
    assert [(p["kind"], p["amount"]) for p in listed["items"]] == [("refund", "1.25"), ("payment", "5.25")]
    bad = cbs("accounts", "recharge", "card1", "--amount", "1.001", "--dsn", pg_dsn, check=False)
    assert bad.returncode == 1 and "amount:" in bad.stderr
    bad = cbs("accounts", "recharge", "card1", "--amount", "1", "--currency", "EUR", "--dsn", pg_dsn,
              check=False)
    assert bad.returncode == 1 and "currency:" in bad.stderr
    bad = cbs("accounts", "recharge", "--amount", "1", "--dsn", pg_dsn, check=False)
    assert bad.returncode != 0 and "--customer" in bad.stderr
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM payments")
        assert cur.fetchone() == (3,)
    conn.close()
