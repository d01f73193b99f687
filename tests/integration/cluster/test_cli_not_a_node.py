"""Operator commands are not nodes: ``provision``, ``check``, ``catalog``, ``accounts`` and
``db upgrade`` leave no row in ``server_nodes`` (before, each run of a pool-based command
registered a process that looked like a node that had stopped or died)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from cbserver.commands.demo import demo_config
from cbserver.db.pool import Database
from tests.integration.xdr.helpers import query

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CBSERVER = str(Path(sys.executable).parent / "cbserver")


def _cbs(*args):
    proc = subprocess.run([CBSERVER, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_commands_leave_no_server_nodes_row(pg_dsn, tmp_path):
    config = tmp_path / "cbserver.toml"
    config.write_text(demo_config(pg_dsn, tmp_path, 18901))
    _cbs("db", "upgrade", "--dsn", pg_dsn)
    _cbs("provision", str(ROOT / "demo" / "demo.toml"), "--dsn", pg_dsn)
    _cbs("check", "--config", str(config))
    _cbs("catalog", "list", "tariff", "--dsn", pg_dsn)
    _cbs("catalog", "list", "account", "--dsn", pg_dsn)
    assert query(pg_dsn, "SELECT node, pid FROM server_nodes") == []


@pytest_twisted.ensureDeferred
async def test_a_server_pool_still_registers_and_beats(pg_dsn):
    db = Database(pg_dsn, reactor, size=1, node="edge4")
    db.startService()
    await db.when_ready()
    try:
        rows = query(pg_dsn, "SELECT node, stopped_at FROM server_nodes WHERE instance_id = %s",
                     (db.instance_id,))
        assert rows == [("edge4", None)]
    finally:
        await db.stopService()
    stopped = query(pg_dsn, "SELECT stopped_at IS NOT NULL FROM server_nodes WHERE instance_id = %s",
                    (db.instance_id,))
    assert stopped == [(True,)]
