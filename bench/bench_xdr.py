"""Benchmark: xDRs written per second with their balance updates, beside a plain ``COPY``.

Run from the repository root (the local cluster is started if needed)::

    .venv/bin/python bench/bench_xdr.py [--legs 50000] [--accounts 200] [--window 2000]

A fresh database is created on the local cluster, migrated, and provisioned (through
``cbserver provision``) with ``--accounts`` debit accounts. The measured path is
``XdrWriter.record`` on a 4-connection pool: group-commit transactions that lock the
balances, skip legs already stored, insert the xDRs, update the balances and release
reservations. ``--window`` legs are kept outstanding (a steady stream, as from many calls
ending) until ``--legs`` are acknowledged. The baseline, in the same run against the same
server, is one ``COPY`` of the same rows into a scratch table: no locks, no balances.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import time
from decimal import Decimal
from pathlib import Path

import psycopg2
from billing_db import account_id, scratch_billing_db
from twisted.internet import defer, task

from cbserver.billing.spool import Spool
from cbserver.billing.xdr import LegRecord, XdrWriter
from cbserver.db.pool import Database
from cbserver.db.stores import PostgresXdrStore  # noqa: E402
from cbserver.db.xdr_store import copy_baseline


def legs(n: int, accounts: int, tag: str) -> list[LegRecord]:
    """``n`` connected legs spread over the accounts, each with its own (session, leg)."""
    start = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    out = []
    for i in range(n):
        connect = start + dt.timedelta(seconds=i)
        out.append(LegRecord(session_id=f"{tag}-{i // 2}", leg="AB"[i % 2],
                             account_id=account_id(i % accounts), cli="18005550100", cld="18185550100",
                             node="node1", connect_time=connect,
                             disconnect_time=connect + dt.timedelta(seconds=61), duration=61,
                             charged_seconds=66, amount=Decimal("0.10500"), currency="USD",
                             trigger_mode="extended", tariff_id=1, tariff_name="Bench", prefix="1",
                             rate_id=1, rate_version=1, peak=True, sip_code=200, sip_reason="OK"))
    return out


def feed(writer: XdrWriter, records: list[LegRecord], window: int) -> defer.Deferred:
    """Record every leg, keeping ``window`` unacknowledged (a steady stream); fire when all are."""
    finished = defer.Deferred()
    state = {"next": 0, "pending": 0}

    def ack(_):
        state["pending"] -= 1
        if state["next"] == len(records) and state["pending"] == 0:
            finished.callback(None)
        else:
            top_up()

    def top_up():
        while state["pending"] < window and state["next"] < len(records):
            state["pending"] += 1
            leg = records[state["next"]]
            state["next"] += 1
            writer.record(leg).addCallback(ack).addErrback(finished.errback)

    top_up()
    return finished


async def run_writer(reactor, dsn: str, records: list[LegRecord], window: int, spool_dir: str,
                     batch: int = 500, in_flight: int = 2) -> float:
    """Seconds to have every record acknowledged by the writer, ``window`` outstanding."""
    pool = Database(dsn, reactor, size=4)
    pool.startService()
    await pool.when_ready()
    writer = XdrWriter(PostgresXdrStore(pool),
                       reactor, Spool(Path(spool_dir) / "bench.spool"), batch_max=batch,
                       max_in_flight=in_flight)
    writer.startService()
    began = time.perf_counter()
    await feed(writer, records, window)
    elapsed = time.perf_counter() - began
    assert writer.health()["depth"] == 0, "bench must not spool"
    await writer.stopService()
    await pool.stopService()
    return elapsed


def balances_spent(dsn: str, accounts: int) -> Decimal:
    """Money gone from the bench accounts (for the sanity check), via ``cbserver report``."""
    out = subprocess.run([str(Path(os.sys.executable).with_name("cbserver")), "report", "revenue",
                          "--from", "2000-01-01", "--to", "2100-01-01", "--csv", "--dsn", dsn],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return sum((Decimal(line.split(",")[-1]) for line in out[1:]), Decimal(0))


async def main(reactor, args) -> None:
    """Set up, measure both paths, print figures and the ratio, drop the database."""
    with scratch_billing_db("xdr", args.accounts) as (dsn, tmp):
        records = legs(args.legs, args.accounts, "w")
        writer_s = await run_writer(reactor, dsn, records, args.window, tmp, args.batch, args.in_flight)
        copy_records = legs(args.legs, args.accounts, "c")
        conn = psycopg2.connect(dsn)
        began = time.perf_counter()
        copy_baseline(conn, copy_records)
        copy_s = time.perf_counter() - began
        conn.close()
        spent = balances_spent(dsn, args.accounts)
        expected = sum(r.amount for r in records)
        assert spent == expected, (spent, expected)
    w_rate = args.legs / writer_s
    c_rate = args.legs / copy_s
    print(f"legs: {args.legs}, accounts: {args.accounts}, window: {args.window}, batch_max: {args.batch}, "
          f"max_in_flight: {args.in_flight}, cores: {os.cpu_count()}, load: {os.getloadavg()[0]:.1f}")
    print(f"xDR writer (insert + balance + reservation release, group commit): "
          f"{writer_s:.2f} s, {w_rate:,.0f} xDRs/s  (target >= 5,000/s)")
    print(f"baseline: plain COPY of the same rows:                             "
          f"{copy_s:.2f} s, {c_rate:,.0f} rows/s")
    print(f"ratio writer / COPY: {w_rate / c_rate:.2f}")
    print(f"balance check: {spent} spent = sum of xDR amounts")


def parse() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--legs", type=int, default=50000)
    p.add_argument("--accounts", type=int, default=200)
    p.add_argument("--window", type=int, default=4000)
    p.add_argument("--batch", type=int, default=500, help="XdrWriter batch_max")
    p.add_argument("--in-flight", type=int, default=2, help="XdrWriter max_in_flight")
    return p.parse_args()


if __name__ == "__main__":
    options = parse()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))
