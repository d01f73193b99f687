"""Rating-list entries for any node (``*``) through the operator's paths: a provisioning file
names them, the catalog shows them, readiness finds every node ready with them, and a node
with neither its own entry nor one for any node is named by readiness."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted

from cbserver.billing import readiness
from cbserver.commands.demo import demo_config
from cbserver.config import load_config
from cbserver.db.stores import PostgresReadinessStore
from tests.integration.xdr.helpers import query

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CBSERVER = str(Path(sys.executable).parent / "cbserver")
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def any_node_demo(pg_dsn, tmp_path):
    """The demo catalog with its rating list for any node, provisioned from a file."""
    source = (ROOT / "demo" / "demo.toml").read_text(encoding="utf-8")
    assert source.count('node = "node1"') == 2
    path = tmp_path / "any-node.toml"
    path.write_text(source.replace('node = "node1"', 'node = "*"'), encoding="utf-8")
    proc = subprocess.run([CBSERVER, "provision", str(path), "--dsn", pg_dsn],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return path


def _config(pg_dsn, tmp_path, node):
    path = tmp_path / f"{node}.toml"
    path.write_text(demo_config(pg_dsn, tmp_path, 18901).replace(
        'node = "node1"', f'node = "{node}"', 1), encoding="utf-8")
    return load_config(path)


@pytest_twisted.ensureDeferred
async def test_provisioned_entries_for_any_node_make_every_node_ready(db, pg_dsn, tmp_path,
                                                                        any_node_demo):
    rows = query(pg_dsn, "SELECT DISTINCT node FROM rating_entries")
    assert rows == [("*",)]
    for node in ("node1", "edge2"):
        cfg = _config(pg_dsn, tmp_path, node)
        assert cfg.server.node == node
        found = await readiness.check_readiness(PostgresReadinessStore(db), cfg, NOW)
        assert found == [], [str(f) for f in found]
    # Provisioning the same file again changes nothing (the '*' entries compare equal).
    again = subprocess.run([CBSERVER, "provision", str(any_node_demo), "--dsn", pg_dsn],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert query(pg_dsn, "SELECT DISTINCT node FROM rating_entries") == [("*",)]


@pytest_twisted.ensureDeferred
async def test_a_node_with_neither_entry_is_named(db, pg_dsn, tmp_path, any_node_demo):
    query(pg_dsn, "UPDATE rating_entries SET node = 'node1'")
    found = await readiness.check_readiness(PostgresReadinessStore(db),
                                            _config(pg_dsn, tmp_path, "edge2"), NOW)
    codes = {f.code for f in found}
    assert {"internal_account_unrated", "no_rating_entry"} <= codes
    assert any("nor for any node, '*'" in f.message for f in found)
    assert await readiness.check_readiness(PostgresReadinessStore(db),
                                           _config(pg_dsn, tmp_path, "node1"), NOW) == []


@pytest_twisted.ensureDeferred
async def test_catalog_lists_the_any_node_entry(catalog, any_node_demo):
    page = await catalog.list_products()
    entries = [e for p in page["items"] for e in p["rating_list"]]
    assert entries and {e["node"] for e in entries} == {"*"}


@pytest_twisted.ensureDeferred
async def test_admin_api_takes_an_entry_for_any_node_and_refuses_a_blank_one(db, tmp_path):
    from tests.integration.catalog.admin_client import AdminClient

    api = AdminClient(db, tmp_path)
    await api.ok("POST", "/v1/tariffs", {"name": "Callback", "currency": "USD"})
    product = await api.ok("POST", "/v1/products", {
        "name": "P", "currency": "USD",
        "rating_list": [{"node": "*", "access_code": "WEBCALLBACK", "tariff": "Callback"},
                        {"node": "edge1", "access_code": "WEBCALLBACK", "tariff": "Callback"}]})
    assert sorted(e["node"] for e in product["rating_list"]) == ["*", "edge1"]
    code, body = await api.call("POST", "/v1/products", {
        "name": "Q", "currency": "USD", "rating_list": [{"node": "  ", "tariff": "Callback"}]})
    assert code == 400 and "node" in body["error"]["field"]
