"""Benchmark: callbacks billed per second through PostgreSQL, beside the pure rating core.

Run from the repository root (the local cluster is started if needed)::

    .venv/bin/python bench/bench_rating_db.py [--calls 2000] [--accounts 200] [--concurrency 50]

One "call" is the whole billing path of a callback: ``Authorizer.authorize`` before legA
(account, rating list, tariff from the cache, prices, maximum duration, reservation under
the balance's row lock), the same again before legB (legA 30 s in), then both legs priced
by ``leg_record`` and written by the ``XdrWriter`` (balances changed, reservations
released). ``--concurrency`` calls run at once over ``--accounts`` accounts. The baseline,
in the same run, prices the same legs in-process with ``rate_leg`` alone (no I/O).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import time
from pathlib import Path

from billing_db import account_id, scratch_billing_db
from twisted.internet import defer, task

from cbserver.billing.authorize import Authorizer, AuthRequest
from cbserver.billing.rating import rate_leg
from cbserver.billing.spool import Spool
from cbserver.billing.xdr import XdrWriter, leg_record
from cbserver.db.pool import Database
from cbserver.db.stores import PostgresAuthorizationStore, PostgresXdrStore  # noqa: E402
from cbserver.db.tariff_loader import TariffCache


async def one_call(authorizer, writer, n: int, accounts: int, rng: random.Random) -> None:
    """Authorize legA, then legB 30 s in, and write both legs."""
    session = f"bench-{n}"
    account = account_id(rng.randrange(accounts))
    cli, cld = "18005550100", "442071234567"
    await authorizer.authorize(AuthRequest(session, account, cli, cld))
    a_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    auth = await authorizer.authorize(AuthRequest(session, account, cli, cld, leg_a_elapsed=30,
                                                  leg_a_connect=a_at))
    end = a_at + dt.timedelta(seconds=90)
    b_at = a_at + dt.timedelta(seconds=30)
    legs = [leg_record(auth, "A", trigger_mode="extended", node="node1", connect_time=a_at,
                       disconnect_time=end, duration=90, sip_code=200),
            leg_record(auth, "B", trigger_mode="extended", node="node1", connect_time=b_at,
                       disconnect_time=end, duration=60, sip_code=200)]
    await defer.gatherResults([writer.record(x) for x in legs])


async def run_calls(reactor, dsn: str, calls: int, accounts: int, concurrency: int, spool_dir: str) -> float:
    """Seconds to bill ``calls`` callbacks, ``concurrency`` at a time."""
    pool = Database(dsn, reactor, size=4)
    pool.startService()
    await pool.when_ready()
    writer = XdrWriter(PostgresXdrStore(pool), reactor, Spool(Path(spool_dir) / "bench.spool"))
    writer.startService()
    authorizer = Authorizer(PostgresAuthorizationStore(pool),
                            TariffCache(pool, reactor), reactor, node="node1")
    rng = random.Random(1)
    sem = defer.DeferredSemaphore(concurrency)
    began = time.perf_counter()
    await defer.gatherResults([
        sem.run(lambda n=n: defer.ensureDeferred(one_call(authorizer, writer, n, accounts, rng)))
        for n in range(calls)])
    elapsed = time.perf_counter() - began
    await writer.stopService()
    await pool.stopService()
    return elapsed


def baseline(calls: int, tariff) -> float:
    """Seconds to price the same 2 * ``calls`` legs in-process (rating core only)."""
    at = dt.datetime.now(dt.UTC)
    began = time.perf_counter()
    for _ in range(calls):
        rate_leg(tariff, "18005550100", 90, at)
        rate_leg(tariff, "442071234567", 60, at)
    return time.perf_counter() - began


async def main(reactor, args) -> None:
    """Set up, measure, print, drop the database."""
    with scratch_billing_db("rdb", args.accounts) as (dsn, tmp):
        db_s = await run_calls(reactor, dsn, args.calls, args.accounts, args.concurrency, tmp)
        pool = Database(dsn, reactor, size=1)
        pool.startService()
        await pool.when_ready()
        tariff = (await TariffCache(pool, reactor).get(1)).rates
        await pool.stopService()
    pure_s = baseline(args.calls, tariff)
    print(f"calls: {args.calls}, accounts: {args.accounts}, concurrency: {args.concurrency}, "
          f"cores: {os.cpu_count()}, load: {os.getloadavg()[0]:.1f}")
    print(f"billed through PostgreSQL (2 authorizations + 2 xDRs per call): {db_s:.2f} s, "
          f"{args.calls / db_s:,.0f} calls/s, {2 * args.calls / db_s:,.0f} authorizations/s")
    print(f"baseline: the same legs rated in-process (rate_leg):            {pure_s:.3f} s, "
          f"{2 * args.calls / pure_s:,.0f} legs/s")
    print(f"ratio: {(args.calls / db_s) / (args.calls / pure_s):.4f}")


def parse() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--accounts", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=50)
    return p.parse_args()


if __name__ == "__main__":
    options = parse()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))
