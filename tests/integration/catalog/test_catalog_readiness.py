"""Readiness against the real PostgreSQL: the demo catalog is ready, and each way of breaking
it (as an operator could, through the catalog) is named by its own finding, by the service
functions and by ``cbserver check``."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import pytest_twisted

from cbserver.billing import readiness
from cbserver.commands.demo import demo_config
from cbserver.config import load_config
from cbserver.db.stores import PostgresReadinessStore
from tests.integration.catalog.admin_client import AdminClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CBSERVER = str(Path(sys.executable).parent / "cbserver")
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def _cbs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CBSERVER, *args], capture_output=True, text=True, timeout=120)


def _sql(dsn: str, *statements: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
    conn.close()


@pytest.fixture
def demo(pg_dsn, tmp_path):
    """The demo catalog provisioned into a fresh database; the demo's config for it."""
    proc = _cbs("provision", str(ROOT / "demo" / "demo.toml"), "--dsn", pg_dsn)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "cbserver.toml"
    path.write_text(demo_config(pg_dsn, tmp_path, 18901))
    return path


async def _findings(db, config_path):
    return await readiness.check_readiness(PostgresReadinessStore(db), load_config(config_path), NOW)


def _codes(findings):
    return sorted((f.severity, f.code, f.subject) for f in findings)


@pytest_twisted.ensureDeferred
async def test_the_demo_catalog_is_ready(db, demo):
    assert await _findings(db, demo) == []
    proc = _cbs("check", "--config", str(demo), "--at", NOW.isoformat())
    assert proc.returncode == 0, proc.stderr
    assert "ready: every instance of node 'node1'" in proc.stdout


@pytest_twisted.ensureDeferred
async def test_an_unusable_internal_account_is_an_error_and_fails_the_check(db, demo, pg_dsn):
    _sql(pg_dsn, "UPDATE accounts SET status = 'inactive' WHERE id = 'cb-internal'")
    found = await _findings(db, demo)
    assert _codes(found) == [("error", "internal_account_unusable", "application 'Web callback'")]
    assert found[0].details == {"account": "cb-internal", "refusal": "inactive"}
    proc = _cbs("check", "--config", str(demo), "--at", NOW.isoformat())
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "error: application 'Web callback': internal account 'cb-internal' cannot be used "
        "(inactive: account cb-internal is inactive); Hosted callbacks will be refused"]
    _sql(pg_dsn, "DELETE FROM accounts WHERE id = 'cb-internal'")
    found = await _findings(db, demo)
    assert [(f.code, f.details["refusal"]) for f in found] == [
        ("internal_account_unusable", "unknown_account")]


@pytest_twisted.ensureDeferred
async def test_a_product_without_the_instances_entry_is_named_with_its_accounts(db, demo, pg_dsn):
    _sql(pg_dsn, "UPDATE rating_entries SET access_code = 'OTHER' WHERE access_code = 'WEBCALLBACK'")
    found = await _findings(db, demo)
    # The internal account shares the product: Hosted cannot be rated at all (an error), and
    # the product's own accounts are refused too (a warning naming how many).
    assert _codes(found) == [
        ("error", "internal_account_unrated", "application 'Web callback'"),
        ("warning", "no_rating_entry", "product 'Callback Services'")]
    warning = next(f for f in found if f.code == "no_rating_entry")
    active = _count(pg_dsn, "SELECT count(*) FROM accounts WHERE status = 'active' AND NOT internal")
    assert f"callbacks of its {active} active accounts are refused" in warning.message
    assert "access code 'WEBCALLBACK'" in warning.message
    # An entry with an empty access code is the fallback authorization uses: ready again.
    _sql(pg_dsn, "UPDATE rating_entries SET access_code = '' WHERE access_code = 'OTHER'")
    assert await _findings(db, demo) == []


@pytest_twisted.ensureDeferred
async def test_the_admin_api_reports_the_same_findings(db, demo, pg_dsn, tmp_path):
    api = AdminClient(db, tmp_path, cfg=load_config(demo))
    code, body = await api.call("GET", "/v1/readiness")
    assert code == 200
    assert (body["node"], body["ready"], body["findings"]) == ("node1", True, [])
    _sql(pg_dsn, "UPDATE accounts SET status = 'inactive' WHERE id = 'cb-internal'")
    code, body = await api.call("GET", "/v1/readiness")
    assert code == 200 and body["ready"] is False
    assert [(f["severity"], f["code"], f["details"]["refusal"]) for f in body["findings"]] == [
        ("error", "internal_account_unusable", "inactive")]
    assert (await api.call("GET", "/v1/readiness", token="wrong"))[0] == 401
    # An admin endpoint without callback instances (as the catalog tests build it) has nothing
    # to check: 404, not an empty "ready".
    assert (await AdminClient(db, tmp_path).call("GET", "/v1/readiness"))[0] == 404


@pytest_twisted.ensureDeferred
async def test_the_simple_mode_number_without_a_rate(db, demo, pg_dsn):
    _sql(pg_dsn, "DELETE FROM rates r USING tariffs t WHERE t.id = r.tariff_id "
                 "AND t.name = 'Callback' AND r.prefix = '1'")
    found = await _findings(db, demo)
    assert _codes(found) == [("warning", "second_number_unrated", "tariff 'Callback'")]
    assert found[0].details["number"] == "18005550100"
    proc = _cbs("check", "--config", str(demo), "--at", NOW.isoformat(), "--json")
    assert proc.returncode == 0  # a warning does not fail the check
    assert [f["code"] for f in json.loads(proc.stdout)] == ["second_number_unrated"]


@pytest_twisted.ensureDeferred
async def test_a_tariff_whose_rates_all_start_later(db, demo, pg_dsn):
    _sql(pg_dsn, "UPDATE rates r SET effective_from = '2027-01-01Z' FROM tariffs t "
                 "WHERE t.id = r.tariff_id AND t.name = 'Callback'")
    found = await _findings(db, demo)
    assert ("warning", "no_rate_in_effect", "tariff 'Callback'") in _codes(found)
    # From the day the rates start, nothing is left to say.
    later = await readiness.check_readiness(PostgresReadinessStore(db), load_config(demo),
                                            dt.datetime(2027, 1, 2, tzinfo=dt.UTC))
    assert later == []


@pytest_twisted.ensureDeferred
async def test_offpeak_prices_in_a_tariff_without_an_offpeak_period(db, demo, pg_dsn):
    _sql(pg_dsn, "UPDATE tariffs SET offpeak_timezone = NULL, offpeak_periods = NULL "
                 "WHERE name = 'Callback'")
    found = await _findings(db, demo)
    assert _codes(found) == [("warning", "offpeak_without_period", "tariff 'Callback'")]
    assert found[0].message.startswith("1 rate in peak/off-peak mode")


@pytest_twisted.ensureDeferred
async def test_special_charge_without_a_callback_fail_entry(db, demo, pg_dsn):
    _sql(pg_dsn, "DELETE FROM rating_entries WHERE access_code = 'CALLBACK_FAIL'")
    found = await _findings(db, demo)
    assert _codes(found) == [("warning", "no_callback_fail_entry", "product 'Callback Services'")]
    assert "charged by tariff 'Callback' instead" in found[0].message


@pytest_twisted.ensureDeferred
async def test_a_product_without_voice(db, demo, pg_dsn):
    _sql(pg_dsn, "DELETE FROM product_services")
    found = await _findings(db, demo)
    assert ("warning", "no_voice_service", "product 'Callback Services'") in _codes(found)


def _count(dsn: str, query: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(query)
        n = cur.fetchone()[0]
    conn.close()
    return n
