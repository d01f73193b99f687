"""``cbserver report``: revenue per destination and day, an account's statement, ASR/ACD,
callback outcomes by failure reason; text and CSV, run as the operator runs them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads

from cbserver.billing.spool import Spool
from cbserver.billing.xdr import LegRecord, XdrWriter
from cbserver.db.stores import PostgresXdrStore

pytestmark = pytest.mark.integration

CLI = [str(Path(sys.executable).with_name("cbserver")), "report"]
DAY = dt.datetime(2026, 6, 1, 10, 0, tzinfo=dt.UTC)


def leg(session, which, prefix, duration, amount, code, reason, minutes=0, mode="extended"):
    start = DAY + dt.timedelta(minutes=minutes)
    return LegRecord(session_id=session, leg=which, account_id="cb1001", cli="18005550100",
                     cld="442071234567", node="node1", connect_time=start if duration else None,
                     disconnect_time=start + dt.timedelta(seconds=duration), duration=duration,
                     charged_seconds=duration, amount=Decimal(amount), currency="USD",
                     trigger_mode=mode, prefix=prefix, sip_code=code, sip_reason=reason)


LEGS = [
    leg("r1", "A", "1", 60, "0.10000", 200, "OK", 0),
    leg("r1", "B", "44", 120, "1.20000", 200, "OK", 1),
    leg("r2", "A", "1", 20, "0.50000", 200, "OK", 10),
    leg("r2", "B", "44", 0, "0", 486, "Busy Here", 10),
    leg("r3", "A", "1", 0, "0", 480, "Temporarily Unavailable", 20, mode="simple"),
    leg("r3", "B", None, 0, "0", None, "", 20, mode="simple"),
    leg("r4", "A", "1", 30, "0.10000", 200, "OK", 60 * 24),  # the next day
    leg("r4", "B", "44", 30, "0.30000", 200, "OK", 60 * 24),
]


@pytest_twisted.async_yield_fixture
async def data(db, tmp_path, cat_dsn):
    writer = XdrWriter(PostgresXdrStore(db), reactor, Spool(tmp_path / "spool"))
    writer.startService()
    for i in range(0, len(LEGS), 2):  # one call after the other, both legs at its end
        await defer.gatherResults([writer.record(x) for x in LEGS[i:i + 2]])
    await writer.stopService()
    yield cat_dsn


async def report(dsn, *args):
    return await threads.deferToThread(
        subprocess.run, [*CLI, *args, "--dsn", dsn], capture_output=True, text=True, timeout=60)


def rows(out):
    return list(csv.DictReader(io.StringIO(out.stdout)))


@pytest_twisted.ensureDeferred
async def test_revenue_per_destination_per_day(data):
    out = await report(data, "revenue", "--from", "2026-06-01", "--to", "2026-06-03", "--csv")
    assert out.returncode == 0, out.stderr
    got = [(r["day"], r["prefix"], r["legs"], r["connected"], r["minutes"], r["revenue"]) for r in rows(out)]
    assert got == [
        ("2026-06-01", "", "1", "0", "0.00", "0.00000"),
        ("2026-06-01", "1", "3", "2", "1.33", "0.60000"),
        ("2026-06-01", "44", "2", "1", "2.00", "1.20000"),
        ("2026-06-02", "1", "1", "1", "0.50", "0.10000"),
        ("2026-06-02", "44", "1", "1", "0.50", "0.30000"),
    ]
    one_day = await report(data, "revenue", "--from", "2026-06-02", "--to", "2026-06-03", "--csv")
    assert len(rows(one_day)) == 2


@pytest_twisted.ensureDeferred
async def test_statement_shows_each_call_and_the_balance_after_it(data):
    out = await report(data, "statement", "--from", "2026-06-01", "--to", "2026-06-03",
                       "--account", "cb1001", "--csv")
    assert out.returncode == 0, out.stderr
    got = [(r["session_id"], r["a_seconds"], r["a_amount"], r["b_seconds"], r["b_amount"], r["amount"],
            r["balance_after"], r["failure"]) for r in rows(out)]
    assert got == [
        ("r1", "60", "0.10000", "120", "1.20000", "1.30000", "8.70000", ""),
        ("r2", "20", "0.50000", "0", "0.00000", "0.50000", "8.20000", "B: 486 Busy Here"),
        ("r3", "0", "0.00000", "0", "0.00000", "0.00000", "8.20000", "A: 480 Temporarily Unavailable"),
        ("r4", "30", "0.10000", "30", "0.30000", "0.40000", "7.80000", ""),
    ]
    assert rows(out)[0]["ended"] == "2026-06-01T10:03:00.000Z"
    table = await report(data, "statement", "--from", "2026-06-01", "--to", "2026-06-03",
                         "--account", "cb1001")
    assert table.stdout.splitlines()[0].split()[:3] == ["ended", "session_id", "mode"]
    assert table.stdout.rstrip().endswith("(4 rows)")


@pytest_twisted.ensureDeferred
async def test_asr_and_acd_per_destination(data):
    out = await report(data, "asr_acd", "--from", "2026-06-01", "--to", "2026-06-03", "--csv")
    got = {r["prefix"]: (r["attempts"], r["answered"], r["asr_percent"], r["acd_seconds"]) for r in rows(out)}
    assert got == {"44": ("3", "2", "66.7", "75.0"), "": ("1", "0", "0.0", "0")}


@pytest_twisted.ensureDeferred
async def test_callback_outcomes_by_failure_reason(data):
    out = await report(data, "outcomes", "--from", "2026-06-01", "--to", "2026-06-03", "--csv")
    got = [(r["mode"], r["outcome"], r["reason"], r["callbacks"]) for r in rows(out)]
    assert got == [
        ("extended", "connected", "", "2"),
        ("extended", "legB failed", "486 Busy Here", "1"),
        ("simple", "legA failed", "480 Temporarily Unavailable", "1"),
    ]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(("args", "message"), [
    (["nope", "--from", "2026-06-01", "--to", "2026-06-02"], "unknown report 'nope'"),
    (["revenue", "--from", "2026-06-01"], "--from and --to are required"),
    (["revenue", "--from", "2026-06-01T00:00", "--to", "2026-06-02"], "has no time zone"),
    (["revenue", "--from", "June", "--to", "2026-06-02"], "expected YYYY-MM-DD"),
    (["revenue", "--from", "2026-06-02", "--to", "2026-06-01"], "--to must be after --from"),
    (["statement", "--from", "2026-06-01", "--to", "2026-06-02"], "needs --account"),
])
async def test_bad_report_requests_are_one_line_exit_1(cat_dsn, args, message):
    out = await report(cat_dsn, *args)
    assert out.returncode == 1 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and message in out.stderr, out.stderr


@pytest_twisted.ensureDeferred
async def test_list_names_every_report(cat_dsn):
    out = await threads.deferToThread(subprocess.run, [*CLI, "list"], capture_output=True, text=True)
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["asr_acd", "outcomes", "revenue",
                                                                     "statement"]
