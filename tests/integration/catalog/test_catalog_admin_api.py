"""The admin JSON API driven with StubTreq against the real PostgreSQL."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from cbserver.web.admin_openapi import openapi_document
from tests.integration.catalog.admin_client import AdminClient
from tests.integration.catalog.manual_example import check_stored, demo_doc, plain

pytestmark = pytest.mark.integration


@pytest_twisted.ensureDeferred
async def test_manual_example_by_admin_api(db, pg_dsn, tmp_path):
    api = AdminClient(db, tmp_path)
    doc = plain(demo_doc())
    for dest in doc["destination"]:
        await api.ok("POST", "/v1/destinations", dest)
    for tariff in doc["tariff"]:
        rates = tariff.pop("rate")
        created = await api.ok("POST", "/v1/tariffs", tariff)
        for rate in rates:
            await api.ok("POST", f"/v1/tariffs/{created['id']}/rates", rate)
    for kind, path in (("product", "/v1/products"), ("customer", "/v1/customers"),
                       ("account", "/v1/accounts")):
        for item in doc[kind]:
            await api.ok("POST", path, item)
    job = await api.ok("POST", "/v1/generator/jobs", doc["generate"][0], expect=202)
    while job["state"] == "running":
        await task.deferLater(reactor, 0.05, lambda: None)
        job = await api.ok("GET", f"/v1/generator/jobs/{job['id']}")
    assert job["state"] == "done", job
    assert job["result"]["quantity"] == 10 and os.stat(job["result"]["csv_path"]).st_mode & 0o777 == 0o600
    check_stored(pg_dsn)
    account = await api.ok("GET", "/v1/accounts/cb1818000001")
    assert account["balance"] == "20" and "password_hash" not in account and account["has_password"]
    page = await api.ok("GET", "/v1/accounts?batch=demo-cards&limit=3")
    assert page["total"] == 10 and len(page["items"]) == 3
    assert (await api.ok("POST", "/v1/batches/demo-cards/activate", expect=200))["activated"] == 10


@pytest_twisted.ensureDeferred
async def test_token_is_required_and_checked(db, tmp_path):
    api = AdminClient(db, tmp_path)
    code, body = await api.call("GET", "/v1/tariffs", token=None)
    assert code == 401 and body["error"]["code"] == "unauthorized"
    code, _ = await api.call("GET", "/v1/tariffs", token="wrong-token-0123456789")
    assert code == 401
    closed = AdminClient(db, tmp_path, token="")
    code, _ = await closed.call("GET", "/v1/tariffs", token="")
    assert code == 401
    code, doc = await api.call("GET", "/openapi.json", token=None)
    assert code == 200 and doc["openapi"].startswith("3.")


@pytest_twisted.ensureDeferred
async def test_errors_are_400_404_409_with_the_field(db, tmp_path):
    api = AdminClient(db, tmp_path)
    code, body = await api.call("POST", "/v1/tariffs", {"name": "T", "currency": "XYZ"})
    assert code == 400 and body["error"] == {
        "code": "invalid", "field": "currency",
        "message": "unknown currency 'XYZ' (an ISO 4217 code such as USD)"}
    await api.ok("POST", "/v1/tariffs", {"name": "T", "currency": "USD"})
    code, body = await api.call("PATCH", "/v1/tariffs/T", {"currency": "EUR"})
    assert code == 409 and body["error"]["field"] == "currency"
    code, body = await api.call("POST", "/v1/tariffs", {"name": "T", "currency": "USD"})
    assert code == 409 and body["error"]["code"] == "conflict"
    code, body = await api.call("GET", "/v1/tariffs/Nope")
    assert code == 404 and body["error"]["code"] == "not_found"
    code, body = await api.call("POST", "/v1/tariffs/T/rates", {"prefix": "55", "first_interval": 60,
                                                                "next_interval": 6, "first_price": 0.05,
                                                                "next_price": "0.05"})
    assert code == 400 and body["error"]["field"] in ("first_price", "prefix")
    code, body = await api.call("POST", "/v1/tariffs", raw=b"{not json")
    assert code == 400 and body["error"]["field"] == "body"
    code, body = await api.call("GET", "/v1/tariffs?limit=0")
    assert code == 400 and body["error"]["field"] == "limit"


@pytest_twisted.ensureDeferred
async def test_crud_of_destinations_including_the_wildcard(db, tmp_path):
    api = AdminClient(db, tmp_path)
    await api.ok("POST", "/v1/destinations", {"prefix": "|", "description": "anything"})
    await api.ok("POST", "/v1/destinations", {"prefix": "55", "country": "Brazil"})
    assert (await api.ok("GET", "/v1/destinations/%7C"))["description"] == "anything"
    changed = await api.ok("PATCH", "/v1/destinations/55", {"description": "Brazil, all"})
    assert changed["description"] == "Brazil, all"
    page = await api.ok("GET", "/v1/destinations?country=braz")
    assert [d["prefix"] for d in page["items"]] == ["55"]
    await api.ok("DELETE", "/v1/destinations/55")
    code, _ = await api.call("GET", "/v1/destinations/55")
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_rates_update_import_and_delete(db, tmp_path):
    api = AdminClient(db, tmp_path)
    await api.ok("POST", "/v1/destinations", {"prefix": "55"})
    await api.ok("POST", "/v1/tariffs", {"name": "Callback", "currency": "USD"})
    rate = {"prefix": "55", "first_interval": 60, "next_interval": 6, "first_price": "0.05",
            "next_price": "0.05", "effective_from": "2026-01-01T00:00:00Z"}
    created = await api.ok("POST", "/v1/tariffs/Callback/rates", rate)
    updated = await api.ok("PATCH", f"/v1/rates/{created['id']}", {"next_price": "0.04"})
    assert updated["next_price"] == "0.04"
    code, body = await api.call("POST", "/v1/tariffs/Callback/rates/import",
                                {"rates": [rate, {**rate, "prefix": "99"}]})
    assert code == 400 and body["error"]["problems"][0]["line"] == 2
    counts = await api.ok("POST", "/v1/tariffs/Callback/rates/import", {"rates": [rate]}, expect=200)
    assert counts == {"created": 0, "updated": 1, "unchanged": 0}
    assert (await api.ok("GET", "/v1/tariffs/Callback/rates"))["total"] == 1
    await api.ok("DELETE", f"/v1/rates/{created['id']}")
    assert (await api.ok("GET", "/v1/rates?tariff=Callback"))["total"] == 0


@pytest_twisted.ensureDeferred
async def test_generator_refusals_come_back_at_once(db, tmp_path):
    api = AdminClient(db, tmp_path)
    await api.ok("POST", "/v1/tariffs", {"name": "Callback", "currency": "USD"})
    await api.ok("POST", "/v1/products", {"name": "P", "currency": "USD"})
    await api.ok("POST", "/v1/customers", {"name": "C", "currency": "USD"})
    code, body = await api.call("POST", "/v1/generator/jobs", {
        "customer": "C", "product": "P", "quantity": 1000, "prefix": "55", "length": 4, "batch": "b"})
    assert code == 400 and body["error"]["field"] == "quantity"
    assert "only 100 IDs are possible" in body["error"]["message"]
    assert list(Path(tmp_path).iterdir()) == []


def test_openapi_copy_in_the_repository_is_current():
    shipped = Path(__file__).resolve().parents[3] / "cbserver" / "web" / "openapi_admin.json"
    assert json.loads(shipped.read_text()) == json.loads(json.dumps(openapi_document()))


@pytest_twisted.ensureDeferred
async def test_accounts_and_customers_update_and_delete_rules(db, tmp_path):
    api = AdminClient(db, tmp_path)
    await api.ok("POST", "/v1/tariffs", {"name": "Callback", "currency": "USD"})
    await api.ok("POST", "/v1/products", {"name": "P", "currency": "USD",
                                          "rating_list": [{"node": "node1", "tariff": "Callback"}]})
    customer = await api.ok("POST", "/v1/customers", {"name": "C", "currency": "USD", "credit_limit": "100"})
    assert customer["credit_limit"] == "100"
    code, body = await api.call("POST", "/v1/accounts", {"id": "a1", "customer": "C", "product": "P",
                                                         "credit_limit": "5"})
    assert code == 400 and body["error"]["field"] == "credit_limit"
    await api.ok("POST", "/v1/accounts", {"id": "a1", "customer": "C", "product": "P", "status": "inactive",
                                          "opening_balance": "7.50", "password": "long-enough"})
    changed = await api.ok("PATCH", "/v1/accounts/a1", {"language": "pt", "web_login": "a1web",
                                                        "web_password": "web-secret-1"})
    assert changed["language"] == "pt" and changed["has_web_password"] and changed["balance"] == "7.50"
    code, body = await api.call("PATCH", "/v1/accounts/a1", {"account_type": "credit"})
    assert code == 409 and body["error"]["field"] == "account_type"
    assert (await api.ok("POST", "/v1/accounts/a1/activate", expect=200))["activated"] == 1
    code, body = await api.call("DELETE", "/v1/customers/C")
    assert code == 409
    code, body = await api.call("DELETE", "/v1/products/P")
    assert code == 409
    code, body = await api.call("DELETE", "/v1/tariffs/Callback")
    assert code == 409
    await api.ok("DELETE", "/v1/accounts/a1")
    await api.ok("DELETE", "/v1/customers/C")
    code, _ = await api.call("GET", "/v1/accounts/a1")
    assert code == 404
    page = await api.ok("GET", "/v1/customers")
    assert page["total"] == 0
    code, body = await api.call("GET", "/v1/accounts?colour=red")
    assert code == 400 and body["error"]["field"] == "colour"
