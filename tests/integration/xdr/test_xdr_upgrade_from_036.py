"""A database of the previous release (migrations 001..036) keeps its xDRs through ``db upgrade``:
every old row unchanged, its new columns (``call_id``, ``instance_id``) NULL; the writer then
stores new legs with them, and the statement report reads old and new rows together."""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from cbserver.billing.spool import Spool
from cbserver.billing.xdr import LegRecord, XdrWriter
from cbserver.db.migrations import FUNCTIONS_DIR, discover, required_version, upgrade
from cbserver.db.pool import Database
from cbserver.db.stores import PostgresXdrStore
from cbserver.resources import sql_dir
from tests.integration.xdr.helpers import balance, load_fixture, query

pytestmark = pytest.mark.integration

PREVIOUS = 36
INSTANCE = "5d0c3b1e-2f4a-4e6b-8c7d-9a0b1c2d3e4f"
OLD_COLUMNS = ("session_id, leg, account_id, customer_id, cli, cld, access_code, node, tariff_id, "
               "tariff_name, prefix, rate_id, rate_version, peak, connect_time, disconnect_time, "
               "duration, charged_seconds, amount, currency, sip_code, sip_reason, trigger_mode, "
               "balance_after")
# Two legs as the previous release wrote them (its writer knew only these columns).
OLD_XDRS = f"""
INSERT INTO xdrs ({OLD_COLUMNS}) VALUES
  ('old-1', 'A', 'cb1001', '1', '18005550100', '442071234567', 'WEBCALLBACK', 'node1', NULL, 'Callback',
   '1', NULL, 1, true, '2026-05-01T10:00:00.250Z', '2026-05-01T10:01:00.500Z', 61, 66, 0.11000, 'USD',
   200, 'OK', 'extended', 9.89000),
  ('old-1', 'B', 'cb1001', '1', '18005550100', '442071234567', 'WEBCALLBACK', 'node1', NULL, 'Callback',
   '44', NULL, 1, true, '2026-05-01T10:00:20.000Z', '2026-05-01T10:01:00.500Z', 41, 41, 0.41000, 'USD',
   200, 'OK', 'extended', 9.48000)
"""
SNAPSHOT = f"SELECT id, {OLD_COLUMNS}, recorded_at FROM xdrs ORDER BY id"


def folder_at_previous(tmp_path: Path) -> Path:
    """sql/ as the previous release shipped it: migrations up to 036 and the function files."""
    out = tmp_path / f"sql_at_{PREVIOUS:03d}"
    out.mkdir()
    for m in discover():
        if m.version <= PREVIOUS:
            shutil.copy(m.path, out / m.path.name)
    shutil.copytree(sql_dir() / FUNCTIONS_DIR, out / FUNCTIONS_DIR)
    return out


def leg(which: str, call_id: str, amount: str) -> LegRecord:
    start = dt.datetime(2026, 5, 2, 9, 0, tzinfo=dt.UTC)
    return LegRecord(session_id="new-1", leg=which, account_id="cb1001", cli="18005550100",
                     cld="442071234567", node="node1", connect_time=start,
                     disconnect_time=start + dt.timedelta(seconds=30), duration=30, charged_seconds=30,
                     amount=Decimal(amount), currency="USD", trigger_mode="extended", sip_code=200,
                     sip_reason="OK", call_id=call_id, instance_id=INSTANCE)


@pytest_twisted.ensureDeferred
async def test_an_upgraded_database_keeps_its_xdrs_and_takes_the_new_columns(tmp_path, empty_pg_dsn):
    dsn = empty_pg_dsn
    await threads.deferToThread(upgrade, dsn, folder_at_previous(tmp_path), lambda _line: None)
    assert query(dsn, "SELECT max(version) FROM schema_migrations") == [(PREVIOUS,)]
    assert query(dsn, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'xdrs' "
                      "AND column_name IN ('call_id', 'instance_id')") == [(0,)]
    load_fixture(dsn)
    query(dsn, OLD_XDRS)
    before = query(dsn, SNAPSHOT)

    said = []
    done = await threads.deferToThread(upgrade, dsn, None, said.append)

    assert [d.path.name for d in done] == [m.path.name for m in discover() if m.version > PREVIOUS]
    assert query(dsn, "SELECT max(version) FROM schema_migrations") == [(required_version(),)]
    assert query(dsn, SNAPSHOT) == before  # every old row and column as it was
    assert query(dsn, "SELECT session_id, leg, call_id, instance_id FROM xdrs ORDER BY id") == [
        ("old-1", "A", None, None), ("old-1", "B", None, None)]

    pool = Database(dsn, reactor, size=1)
    pool.startService()
    writer = XdrWriter(PostgresXdrStore(pool), reactor, Spool(tmp_path / "xdr.spool"))
    try:
        await pool.when_ready()
        writer.startService()
        start = balance(dsn, "cb1001")
        await writer.record(leg("A", "a-new@198.51.100.7", "0.05000"))
        await writer.record(leg("B", "b-new@198.51.100.7", "0.20000"))
        await writer.stopService()
    finally:
        await pool.stopService()
    assert start - balance(dsn, "cb1001") == Decimal("0.25000")
    assert query(dsn, "SELECT session_id, leg, call_id, instance_id::text FROM xdrs ORDER BY id") == [
        ("old-1", "A", None, None), ("old-1", "B", None, None),
        ("new-1", "A", "a-new@198.51.100.7", INSTANCE), ("new-1", "B", "b-new@198.51.100.7", INSTANCE)]

    cli = [str(Path(sys.executable).with_name("cbserver")), "report", "statement", "--from", "2026-05-01",
           "--to", "2026-05-03", "--account", "cb1001", "--csv", "--dsn", dsn]
    out = await threads.deferToThread(subprocess.run, cli, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = [(r["session_id"], r["amount"], r["a_call_id"], r["b_call_id"])
           for r in csv.DictReader(io.StringIO(out.stdout))]
    assert got == [("old-1", "0.52000", "", ""),
                   ("new-1", "0.25000", "a-new@198.51.100.7", "b-new@198.51.100.7")]
