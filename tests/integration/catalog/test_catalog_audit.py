"""The audit log (sql/044, billing/audit.py) against the real PostgreSQL: every path writes
exactly one row per change with its before and after, in the change's own transaction, and
the table refuses UPDATE, DELETE and TRUNCATE."""

from __future__ import annotations

import getpass
import json

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import reactor, task

from cbserver.billing.audit import Actor, UnauditedChange
from cbserver.billing.catalog import Catalog
from cbserver.billing.provision import load, provision
from cbserver.billing.validation import ConflictError
from cbserver.db.stores import PostgresCatalogStore
from tests.integration.catalog.admin_client import AdminClient
from tests.integration.catalog.test_catalog_cli import cbs

pytestmark = pytest.mark.integration


def _rows(dsn, where="TRUE", params=()):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT who, source, client, kind, key, action, before, after FROM audit_log "
                    f"WHERE {where} ORDER BY id", params)  # where: fixed text in these tests
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _count(dsn, table):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")  # fixed table names
        return cur.fetchone()[0]


@pytest_twisted.ensureDeferred
async def test_api_changes_write_one_row_each_with_before_and_after(db, pg_dsn, tmp_path):
    api = AdminClient(db, tmp_path)
    made = await api.ok("POST", "/v1/tariffs", {"name": "T", "currency": "USD"})
    await api.ok("PATCH", "/v1/tariffs/T", {"name": "T2"})
    await api.ok("DELETE", "/v1/tariffs/T2")
    code, _ = await api.call("PATCH", "/v1/tariffs/T2", {"name": "T3"})  # gone: no change, no row
    assert code == 404
    rows = _rows(pg_dsn)
    assert [(r["who"], r["source"], r["kind"], r["key"], r["action"]) for r in rows] == [
        ("api-token", "api", "tariff", str(made["id"]), "create"),
        ("api-token", "api", "tariff", str(made["id"]), "update"),
        ("api-token", "api", "tariff", str(made["id"]), "delete")]
    assert all(r["client"] for r in rows)  # the client's address
    create, update, delete = rows
    assert create["before"] is None and create["after"]["name"] == "T"
    assert create["after"]["currency"] == "USD"
    assert update["before"]["name"] == "T" and update["after"]["name"] == "T2"
    assert delete["before"]["name"] == "T2" and delete["after"] is None
    # Read back through the API, newest first, with filters and paging.
    page = await api.ok("GET", f"/v1/audit?kind=tariff&key={made['id']}&limit=2")
    assert page["total"] == 3 and [r["action"] for r in page["items"]] == ["delete", "update"]
    page = await api.ok("GET", f"/v1/audit?kind=tariff&key={made['id']}&limit=2&offset=2")
    assert [r["action"] for r in page["items"]] == ["create"]
    assert (await api.ok("GET", "/v1/audit?who=nobody"))["total"] == 0
    assert (await api.ok("GET", "/v1/audit?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z"))[
        "total"] == 3
    assert (await api.ok("GET", "/v1/audit?since=2999-01-01T00:00:00Z"))["total"] == 0
    code, body = await api.call("GET", "/v1/audit?colour=red")
    assert code == 400 and body["error"]["field"] == "colour"
    code, body = await api.call("GET", "/v1/audit?since=yesterday")
    assert code == 400 and body["error"]["field"] == "since"
    code, _ = await api.call("GET", "/v1/audit", token=None)
    assert code == 401
    code, _ = await api.call("DELETE", "/v1/audit")  # the log cannot be changed over the API
    assert code == 405


@pytest_twisted.ensureDeferred
async def test_payments_accounts_and_generator_runs_are_audited_without_secrets(db, pg_dsn, tmp_path):
    api = AdminClient(db, tmp_path)
    await api.ok("POST", "/v1/destinations", {"prefix": "1"})
    await api.ok("POST", "/v1/tariffs", {"name": "T", "currency": "USD"})
    await api.ok("POST", "/v1/products", {"name": "P", "currency": "USD", "rating_list": [
        {"node": "node1", "access_code": "WEBCALLBACK", "tariff": "T"}]})
    await api.ok("POST", "/v1/customers", {"name": "C", "currency": "USD"})
    await api.ok("POST", "/v1/accounts", {"id": "1000", "customer": "C", "product": "P",
                                          "password": "Very-long-secret-42", "opening_balance": "5"})
    await api.ok("PATCH", "/v1/accounts/1000", {"password": "Another-long-secret-43"})
    await api.ok("POST", "/v1/accounts/1000/payments", {"amount": "10"})
    job = await api.ok("POST", "/v1/generator/jobs", {"customer": "C", "product": "P", "batch": "B",
                                                      "quantity": 3, "prefix": "77", "length": 8},
                       expect=202)
    while job["state"] == "running":
        await task.deferLater(reactor, 0.05, lambda: None)
        job = await api.ok("GET", f"/v1/generator/jobs/{job['id']}")
    assert job["state"] == "done", job
    rows = _rows(pg_dsn)
    assert [(r["kind"], r["action"]) for r in rows] == [
        ("destination", "create"), ("tariff", "create"), ("product", "create"),
        ("customer", "create"), ("account", "create"), ("account", "update"),
        ("account", "payment"), ("batch", "generate")]
    created, changed, paid, generated = rows[4:]
    assert created["after"]["has_password"] is True and changed["after"]["password_changed"] is True
    assert paid["before"]["balance"] == "5" and paid["after"]["balance"] == "15"
    assert paid["after"]["payment"]["amount"] == "10"
    assert generated["key"] == str(job["result"]["batch_id"]) and generated["after"]["quantity"] == 3
    text = json.dumps(rows, default=str)
    assert "scrypt" not in text and "secret-4" not in text  # neither hashes nor passwords
    product = rows[2]["after"]
    assert product["rating_list"][0]["tariff"] == "T"


def test_cli_changes_are_audited_as_the_os_user(pg_dsn):
    cbs("catalog", "create", "destination", "--json", '{"prefix": "55", "country": "Brazil"}',
        "--dsn", pg_dsn)
    cbs("catalog", "update", "destination", "55", "--json", '{"country": "Brasil"}', "--dsn", pg_dsn)
    cbs("catalog", "delete", "destination", "55", "--dsn", pg_dsn)
    rows = _rows(pg_dsn)
    assert [(r["who"], r["source"], r["key"], r["action"]) for r in rows] == [
        (getpass.getuser(), "cli", "55", "create"), (getpass.getuser(), "cli", "55", "update"),
        (getpass.getuser(), "cli", "55", "delete")]
    assert rows[1]["before"]["country"] == "Brazil" and rows[1]["after"]["country"] == "Brasil"
    out = cbs("audit", "list", "--kind", "destination", "--dsn", pg_dsn).stdout.splitlines()
    assert out[-1] == "3 of 3 row(s)"
    assert out[0].endswith(f"{getpass.getuser()}@cli  delete destination/55")
    listed = json.loads(cbs("audit", "list", "--action", "update", "--json", "--dsn", pg_dsn).stdout)
    assert listed["total"] == 1 and listed["items"][0]["after"]["country"] == "Brasil"
    bad = cbs("audit", "list", "--since", "soon", "--dsn", pg_dsn, check=False)
    assert bad.returncode == 1 and "since" in bad.stderr


@pytest_twisted.ensureDeferred
async def test_provisioning_is_audited_as_the_file_and_again_changes_nothing(db, pg_dsn, tmp_path):
    doc = tmp_path / "cat.toml"
    doc.write_text('[[destination]]\nprefix = "1"\n\n[[tariff]]\nname = "T"\ncurrency = "USD"\n'
                   '[[tariff.rate]]\nprefix = "1"\nfirst_interval = 60\nnext_interval = 6\n'
                   'first_price = "0.02"\nnext_price = "0.01"\n'
                   'effective_from = 2026-01-01T00:00:00Z\n')
    out = cbs("provision", str(doc), "--dsn", pg_dsn, "--csv-dir", str(tmp_path)).stdout
    assert "create tariff T" in out
    rows = _rows(pg_dsn)
    assert {(r["who"], r["source"]) for r in rows} == {(getpass.getuser(), f"provision:{doc}")}
    assert [(r["kind"], r["action"]) for r in rows] == [
        ("destination", "create"), ("tariff", "create"), ("rate", "create")]
    assert rows[2]["after"]["first_price"] == "0.02"
    cbs("provision", str(doc), "--dsn", pg_dsn, "--csv-dir", str(tmp_path))
    assert len(_rows(pg_dsn)) == 3  # nothing changed, nothing recorded
    doc.write_text(doc.read_text().replace('"0.02"', '"0.03"'))
    await provision(PostgresCatalogStore(db), reactor, load(doc), csv_dir=tmp_path,
                    actor=Actor("me", f"provision:{doc}"))
    (last,) = _rows(pg_dsn, "id > (SELECT min(id) + 2 FROM audit_log)")
    assert (last["kind"], last["action"], last["who"]) == ("rate", "update", "me")
    assert last["before"]["first_price"] == "0.02" and last["after"]["first_price"] == "0.03"


@pytest_twisted.ensureDeferred
async def test_a_change_and_its_row_commit_together_or_not_at_all(db, pg_dsn):
    store = PostgresCatalogStore(db)
    # 1. The audit row cannot be written: the change is rolled back with it.
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF NEW.who = 'boom' THEN RAISE EXCEPTION 'no audit for boom'; END IF; "
                    "RETURN NEW; END $$; CREATE TRIGGER refuse_boom BEFORE INSERT ON audit_log "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_boom()")
    boom = Catalog(store, reactor).as_actor(Actor("boom", "ui", "10.0.0.9"))
    with pytest.raises(psycopg2.Error):
        await boom.create_tariff({"name": "T", "currency": "USD"})
    assert _count(pg_dsn, "tariffs") == 0 and _count(pg_dsn, "audit_log") == 0
    # 2. The change fails: no row.
    ok = Catalog(store, reactor).as_actor(Actor("alice", "ui", "10.0.0.9"))
    await ok.create_tariff({"name": "T", "currency": "USD"})
    with pytest.raises(ConflictError):
        await ok.create_tariff({"name": "T", "currency": "USD"})
    assert [(r["who"], r["source"], r["client"]) for r in _rows(pg_dsn)] == [("alice", "ui", "10.0.0.9")]
    # 3. A write nobody recorded is refused and rolled back.
    with pytest.raises(UnauditedChange):
        await store.transaction(lambda tx: tx.insert("destinations", {"prefix": "44"}))
    assert _count(pg_dsn, "destinations") == 0


@pytest.mark.parametrize("statement", ["UPDATE audit_log SET who = 'mallory'",
                                       "DELETE FROM audit_log", "TRUNCATE audit_log"])
def test_the_audit_table_is_append_only(pg_dsn, statement):
    cbs("catalog", "create", "destination", "--json", '{"prefix": "55"}', "--dsn", pg_dsn)
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="append-only"):
            cur.execute(statement)
    rows = _rows(pg_dsn)
    assert len(rows) == 1 and rows[0]["who"] == getpass.getuser()


def test_actor_is_checked():
    with pytest.raises(ValueError, match="source"):
        Actor("x", "email")
    with pytest.raises(ValueError, match="name"):
        Actor("", "api")
    assert Actor("x", "provision:/tmp/a.toml").source == "provision:/tmp/a.toml"
