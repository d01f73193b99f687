"""Voice applications as catalog objects (sql/043, billing/applications.py) on the real
PostgreSQL: the admin API, the CLI, provisioning files and the config's seeding, all audited."""

from __future__ import annotations

import getpass
import json

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import reactor

from cbserver.billing.applications import Applications
from cbserver.billing.audit import Actor
from cbserver.billing.provision import load, provision
from cbserver.config import example_path, parse_config
from cbserver.db.applications_store import PostgresApplicationSource
from cbserver.db.stores import PostgresCatalogStore
from tests.integration.catalog.admin_client import AdminClient
from tests.integration.catalog.test_catalog_cli import cbs

pytestmark = pytest.mark.integration

SALES = {"name": "Sales callback", "callback_page_address": "https://cb.example.net/sales",
         "path": "sales", "second_number": "+1 800 555-0100", "hosts": ["Sales.Example.net"]}


def _audit(dsn):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT who, source, key, action, before, after FROM audit_log "
                    "WHERE kind = 'application' ORDER BY id")
        return cur.fetchall()


@pytest_twisted.ensureDeferred
async def test_api_crud_normalises_validates_names_the_field_and_audits(db, pg_dsn, tmp_path):
    api = AdminClient(db, tmp_path)
    made = await api.ok("POST", "/v1/applications", SALES)
    # Stored as the config would take it: the page's phone form, host names lower-cased.
    assert made["second_number"] == "18005550100" and made["hosts"] == ["sales.example.net"]
    assert made["url_path"] == "/sales" and made["access_code"] == "WEBCALLBACK"
    assert (await api.ok("GET", "/v1/applications/Sales callback"))["id"] == made["id"]
    assert (await api.ok("GET", f"/v1/applications/{made['id']}"))["name"] == "Sales callback"
    assert (await api.ok("GET", "/v1/applications?name=sales"))["total"] == 1
    changed = await api.ok("PATCH", "/v1/applications/Sales callback",
                           {"second_number": "(1) 800 555.0177", "special_charge_if_legb_fails": True})
    assert changed["second_number"] == "18005550177" and changed["hosts"] == ["sales.example.net"]
    # Refusals name the field, as the config's do.
    for body, field in (({"second_number": "helpdesk"}, "second_number"),
                        ({"hosts": ["sales.example.net:8901"]}, "hosts"),
                        ({"account_id_translation_rule": "s/^/cb/e"}, "account_id_translation_rule"),
                        ({"hosted_allowed_clients": ["10.0.0.0/8"], "internal_account": ""},
                         "internal_account"),
                        ({"access_code": "no spaces"}, "access_code"),
                        ({"path": "<anything>"}, "path"), ({"path": "a/../admin"}, "path"),
                        ({"hosts": "sales.example.net"}, "hosts"),
                        ({"special_charge_if_legb_fails": "yes"}, "special_charge_if_legb_fails"),
                        ({"allowed_destinations": ["1900", 5]}, "allowed_destinations[1]"),
                        ({"colour": "red"}, "colour")):
        code, err = await api.call("PATCH", "/v1/applications/Sales callback", body)
        assert code == 400 and err["error"]["field"] == field, (body, err)
    code, _ = await api.call("POST", "/v1/applications", {**SALES, "name": "X"}, token=None)
    assert code == 401  # a stranger changes nothing
    code, err = await api.call("POST", "/v1/applications", {"name": "No address"})
    assert code == 400 and err["error"]["field"] == "callback_page_address"
    # Two applications may not share a page path or a host name; a name cannot change.
    code, err = await api.call("POST", "/v1/applications", {**SALES, "name": "Other", "hosts": []})
    assert code == 409 and err["error"]["field"] == "path"
    code, err = await api.call("POST", "/v1/applications", {**SALES, "name": "Other", "path": "o"})
    assert code == 409 and err["error"]["field"] == "hosts"
    code, err = await api.call("POST", "/v1/applications", {**SALES, "hosts": [], "path": "p"})
    assert code == 409 and err["error"]["field"] == "name"
    code, err = await api.call("PATCH", "/v1/applications/Sales callback", {"name": "Renamed"})
    assert code == 409 and err["error"]["field"] == "name"
    await api.ok("DELETE", "/v1/applications/Sales callback")
    code, _ = await api.call("GET", "/v1/applications/Sales callback")
    assert code == 404
    rows = _audit(pg_dsn)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("api-token", "api", "Sales callback", "create"), ("api-token", "api", "Sales callback", "update"),
        ("api-token", "api", "Sales callback", "delete")]
    assert rows[1][4]["second_number"] == "18005550100" and rows[1][5]["second_number"] == "18005550177"


@pytest_twisted.ensureDeferred
async def test_hosted_tokens_are_kept_out_of_the_audit_log(db, pg_dsn, tmp_path):
    api = AdminClient(db, tmp_path)
    made = await api.ok("POST", "/v1/applications", {
        **SALES, "internal_account": "cb-internal",
        "hosted_allowed_clients": ["10.0.0.0/8", "token:very-secret-hosted-token"]})
    assert made["hosted_allowed_clients"][1] == "token:very-secret-hosted-token"  # the operator sees it
    (row,) = _audit(pg_dsn)
    assert row[5]["hosted_allowed_clients"] == ["10.0.0.0/8", "token:(set)"]
    assert "very-secret" not in json.dumps(row)


def test_cli_manages_applications(pg_dsn):
    out = cbs("catalog", "create", "application", "--json", json.dumps(SALES), "--dsn", pg_dsn).stdout
    assert json.loads(out)["second_number"] == "18005550100"
    cbs("catalog", "update", "application", "Sales callback", "--json", '{"language": "pt"}',
        "--dsn", pg_dsn)
    listed = json.loads(cbs("catalog", "list", "application", "--dsn", pg_dsn).stdout)
    assert [a["language"] for a in listed["items"]] == ["pt"]
    bad = cbs("catalog", "update", "application", "Sales callback", "--json",
              '{"second_number": "x"}', "--dsn", pg_dsn, check=False)
    assert bad.returncode == 1 and "second_number: Enter a phone number" in bad.stderr
    cbs("catalog", "delete", "application", "Sales callback", "--dsn", pg_dsn)
    assert [(r[0], r[1], r[3]) for r in _audit(pg_dsn)] == [
        (getpass.getuser(), "cli", "create"), (getpass.getuser(), "cli", "update"),
        (getpass.getuser(), "cli", "delete")]


def test_provisioning_file_application_section(pg_dsn, tmp_path):
    doc = tmp_path / "apps.toml"
    doc.write_text('[[application]]\nname = "Sales callback"\n'
                   'callback_page_address = "https://cb.example.net/sales"\npath = "sales"\n'
                   'second_number = "+1 800 555-0100"\n')
    assert "create application Sales callback" in cbs("provision", str(doc), "--dsn", pg_dsn).stdout
    assert "nothing to change" in cbs("provision", str(doc), "--dsn", pg_dsn).stdout
    doc.write_text(doc.read_text().replace("0100", "0111"))
    assert "update application Sales callback" in cbs("provision", str(doc), "--dsn", pg_dsn).stdout
    doc.write_text(doc.read_text() + 'language = 5\n')
    bad = cbs("provision", str(doc), "--dsn", pg_dsn, check=False)
    assert bad.returncode == 1 and "application[0].language" in bad.stderr
    rows = _audit(pg_dsn)
    assert [(r[1], r[3]) for r in rows] == [(f"provision:{doc}", "create"), (f"provision:{doc}", "update")]
    assert rows[1][5]["second_number"] == "18005550111"


@pytest_twisted.ensureDeferred
async def test_config_applications_are_seeded_once_then_the_database_wins(db, pg_dsn, tmp_path):
    cfg = parse_config(example_path().read_text())
    (config_app,) = cfg.application
    store = PostgresCatalogStore(db)
    apps = Applications(store, reactor, Actor("ops", "provision:/etc/cbserver/cbserver.toml"))
    source = PostgresApplicationSource(db)
    counter = await source.counter()
    assert await apps.seed(cfg.application) == [config_app.name]
    assert await source.counter() != counter  # every node notices
    assert await apps.seed(cfg.application) == []  # already there
    await apps.update_application(config_app.name, {"language": "pt"})
    assert await apps.seed(cfg.application) == []  # the database wins: not overwritten
    assert (await apps.get_application(config_app.name))["language"] == "pt"
    await apps.delete_application(config_app.name)
    assert await apps.seed(cfg.application) == []  # an operator's delete is not undone by a restart
    # `cbserver applications import` makes the catalog match the config on purpose.
    assert await apps.sync(cfg.application) == [("create", config_app.name)]
    assert await apps.sync(cfg.application) == [("unchanged", config_app.name)]
    (row,) = await source.load()
    assert row["name"] == config_app.name and row["language"] == config_app.language
    assert {r[1] for r in _audit(pg_dsn)} == {"provision:/etc/cbserver/cbserver.toml"}


def test_applications_import_command(pg_dsn, tmp_path):
    config = tmp_path / "cbserver.toml"
    config.write_text(example_path().read_text().replace(
        'second_number = "18005550100"', 'second_number = "+1 800 555-0100"'))
    out = cbs("applications", "import", "--config", str(config), "--dsn", pg_dsn).stdout
    assert out.splitlines() == ["create application Web callback"]
    out = cbs("applications", "import", "--config", str(config), "--dsn", pg_dsn).stdout
    assert out.splitlines() == ["unchanged application Web callback"]
    ((who, source, key, action, _before, after),) = _audit(pg_dsn)
    assert (source, action, after["second_number"]) == (f"provision:{config}", "create", "18005550100")


@pytest_twisted.ensureDeferred
async def test_provision_function_takes_applications(db, tmp_path):
    doc = tmp_path / "apps.toml"
    doc.write_text('[[application]]\nname = "A"\ncallback_page_address = "https://a.example/"\n'
                   '[[application]]\nname = "B"\ncallback_page_address = "https://b.example/"\n'
                   'path = "a"\n')
    with pytest.raises(Exception, match="path") as e:
        await provision(PostgresCatalogStore(db), reactor, load(doc), csv_dir=tmp_path)
    assert getattr(e.value, "field", "") == "path"
    assert await PostgresApplicationSource(db).load() == []  # all or nothing


def test_readiness_checks_the_catalogs_applications(pg_dsn, tmp_path):
    config = tmp_path / "cbserver.toml"
    text = example_path().read_text().replace(
        'dsn = "host=127.0.0.1 port=5432 dbname=cbserver user=cbserver"', f'dsn = "{pg_dsn}"')
    config.write_text(text.split("[[application]]")[0])  # a node whose config lists none
    cbs("catalog", "create", "application", "--json", json.dumps({
        **SALES, "internal_account": "cb-nobody", "hosted_allowed_clients": ["127.0.0.0/8"]}),
        "--dsn", pg_dsn)
    proc = cbs("check", "--config", str(config), "--json", check=False)
    found = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert [(f["code"], f["subject"]) for f in found if f["severity"] == "error"][0] == (
        "internal_account_unusable", "application 'Sales callback'"), found
