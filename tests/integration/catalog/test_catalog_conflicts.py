"""Refusals name the objects involved, never PostgreSQL's text (API, service and CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import pytest_twisted

from cbserver.billing.validation import ConflictError

from .admin_client import AdminClient

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "cbserver")


async def _catalog_in_use(catalog):
    await catalog.create_destination({"prefix": "55", "country": "Brazil"})
    await catalog.create_tariff({"name": "A", "currency": "USD"})
    await catalog.create_rate("A", {"prefix": "55", "first_interval": 60, "next_interval": 6,
                                    "first_price": "0.05", "next_price": "0.05"})
    await catalog.create_product({"name": "P", "currency": "USD", "rating_list": [
        {"node": "node1", "access_code": "WEBCALLBACK", "tariff": "A"}]})


@pytest_twisted.ensureDeferred
async def test_deleting_what_is_in_use_names_its_users(catalog):
    await _catalog_in_use(catalog)
    with pytest.raises(ConflictError) as e:
        await catalog.delete_tariff("A")
    assert str(e.value) == "tariff 'A' is used by product 'P''s rating list entry WEBCALLBACK/node1"
    with pytest.raises(ConflictError) as e:
        await catalog.delete_destination("55")
    assert str(e.value) == "destination '55' is used by tariff 'A' (1 rate)"
    with pytest.raises(ConflictError) as e:
        await catalog.create_tariff({"name": "A", "currency": "USD"})
    assert str(e.value) == "a tariff with name 'A' already exists"
    with pytest.raises(ConflictError) as e:
        await catalog.create_destination({"prefix": "55"})
    assert str(e.value) == "a destination with prefix '55' already exists"


@pytest_twisted.ensureDeferred
async def test_a_rule_only_the_database_knows_is_named_too(accounts, catalog):
    await accounts.create_customer({"name": "C", "currency": "USD"})
    await accounts.create_batch({"name": "B", "customer": "C"})
    with pytest.raises(ConflictError) as e:  # delete_customer counts accounts, not batches
        await accounts.delete_customer("C")
    message = str(e.value)
    assert "is still used by a batch" in message and message.startswith("customer with id")
    assert "referenced" not in message and "Key (" not in message


@pytest_twisted.ensureDeferred
async def test_admin_api_409_names_the_objects(db, tmp_path):
    api = AdminClient(db, tmp_path)
    await api.ok("POST", "/v1/destinations", {"prefix": "55"})
    await api.ok("POST", "/v1/tariffs", {"name": "A", "currency": "USD"})
    await api.ok("POST", "/v1/products", {"name": "P", "currency": "USD", "rating_list": [
        {"node": "node1", "access_code": "WEBCALLBACK", "tariff": "A"}]})
    code, body = await api.call("DELETE", "/v1/tariffs/A")
    assert code == 409
    assert body["error"]["message"] == ("tariff 'A' is used by product 'P''s rating list entry "
                                        "WEBCALLBACK/node1")
    code, body = await api.call("POST", "/v1/tariffs", {"name": "A", "currency": "USD"})
    assert code == 409 and body["error"]["message"] == "a tariff with name 'A' already exists"


def test_cli_conflict_and_create_help(pg_dsn):
    def cbs(*args):
        return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120)

    first = cbs("catalog", "create", "destination", "--json", '{"prefix": "55"}', "--dsn", pg_dsn)
    assert first.returncode == 0
    again = cbs("catalog", "create", "destination", "--json", '{"prefix": "55"}', "--dsn", pg_dsn)
    assert again.returncode == 1
    assert again.stderr.strip().endswith("a destination with prefix '55' already exists")
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM destinations")
        assert cur.fetchone() == (1,)
    conn.close()
    shown = cbs("catalog", "create", "tariff", "--help")
    assert shown.returncode == 0
    lines = shown.stdout.splitlines()
    assert "fields of a tariff (keys of the JSON object):" in lines
    assert any(line.split()[:3] == ["currency", "required;", "cannot"] for line in lines)
    assert any(line.split() == ["split_at_boundary", "default", "false"] for line in lines)
    product = cbs("catalog", "create", "product", "--help").stdout
    assert "each entry of rating_list:" in product and "overdraft_protection" in product
    made = cbs("catalog", "create", "tariff", "--json", json.dumps({"name": "T", "currency": "USD"}),
               "--dsn", pg_dsn)
    assert made.returncode == 0 and json.loads(made.stdout)["name"] == "T"
