"""Nothing lost: PostgreSQL stopped (immediate mode) in the middle of a stream of finished legs
and started again loses no xDR and charges none twice; a restart replays a spool left behind."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, threads

from cbserver.billing.spool import Spool
from cbserver.billing.xdr import LegRecord, XdrWriter
from cbserver.db.pool import Database
from cbserver.db.stores import PostgresXdrStore
from tests.integration.xdr.helpers import balance, query

pytestmark = pytest.mark.integration

ACCOUNTS = ("cb1001", "cb1002", "cb1007")
INSTANCE = "0b7e2f9a-4c1d-4e8b-a6f3-5d2c1b0a9e8f"


def leg(i: int) -> LegRecord:
    now = dt.datetime.now(dt.UTC)
    return LegRecord(session_id=f"s{i // 2}", leg="AB"[i % 2], account_id=ACCOUNTS[i % 3],
                     cli="18005550100", cld="442071234567", node="node1", connect_time=now,
                     disconnect_time=now + dt.timedelta(seconds=10), duration=10, charged_seconds=10,
                     amount=Decimal("0.01") + Decimal(i) / 1000, currency="USD", trigger_mode="simple",
                     sip_code=200, call_id=None if i % 5 == 0 else f"leg-{i}@198.51.100.7",
                     instance_id=INSTANCE)


async def wait_for(predicate, timeout=60.0):
    waited = 0.0
    while not predicate():
        assert waited < timeout, "timed out"
        await task.deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


def totals(dsn):
    return query(dsn, "SELECT count(*), count(DISTINCT (session_id, leg)), sum(amount) FROM xdrs")[0]


def balances(dsn):
    return {a: balance(dsn, a) for a in ACCOUNTS}


@pytest_twisted.ensureDeferred
async def test_database_stopped_mid_run_loses_no_xdr_and_charges_none_twice(own_cluster, tmp_path):
    dsn = own_cluster.dsn()
    before = balances(dsn)
    pool = Database(dsn, reactor, size=2, retry_max=1.0)
    pool.startService()
    await pool.when_ready()
    writer = XdrWriter(PostgresXdrStore(pool), reactor, Spool(tmp_path / "xdr.spool"), retry_delay=0.2)
    writer.startService()
    legs = [leg(i) for i in range(600)]
    acks = []
    depth_seen = []

    async def produce():
        for i, x in enumerate(legs):
            acks.append(writer.record(x))
            depth_seen.append(writer.health()["depth"])
            if i % 10 == 0:
                await task.deferLater(reactor, 0.01, lambda: None)

    producing = defer.ensureDeferred(produce())
    await wait_for(lambda: len(acks) > 100)
    await threads.deferToThread(own_cluster.stop, "immediate")
    await wait_for(lambda: len(acks) > 300)
    assert not pool.ready and writer.health()["mode"] == "spooling"
    await threads.deferToThread(own_cluster.start)
    await producing
    await defer.gatherResults(acks)  # every leg acknowledged: in PostgreSQL or fsync'd in the spool
    await wait_for(lambda: writer.health() == {**writer.health(), "depth": 0, "mode": "direct"})
    assert max(depth_seen) > 0  # the spool really was used
    # Retrying every leg after the outage changes nothing (idempotent on session and leg).
    await defer.gatherResults([writer.record(x) for x in legs])
    await writer.stopService()
    await pool.stopService()

    count, distinct, total = totals(dsn)
    assert count == distinct == 600
    assert total == sum(x.amount for x in legs)
    after = balances(dsn)
    spent = {a: sum(x.amount for x in legs if x.account_id == a) for a in ACCOUNTS}
    assert after["cb1001"] == before["cb1001"] - spent["cb1001"]  # debit: money left
    assert after["cb1002"] == before["cb1002"] + spent["cb1002"]  # credit: amount owed
    assert after["cb1007"] == before["cb1007"] - spent["cb1007"]


@pytest_twisted.ensureDeferred
async def test_a_restart_replays_the_spool_left_behind(own_cluster, tmp_path):
    dsn = own_cluster.dsn()
    pool = Database(dsn, reactor, size=1, retry_max=1.0)
    pool.startService()
    await pool.when_ready()
    await threads.deferToThread(own_cluster.stop, "immediate")
    writer = XdrWriter(PostgresXdrStore(pool), reactor, Spool(tmp_path / "xdr.spool"))
    writer.startService()
    legs = [leg(i) for i in range(20)]
    await defer.gatherResults([writer.record(x) for x in legs])
    assert writer.health()["depth"] == 20
    await writer.stopService()  # the process "dies" with its spool full
    await pool.stopService()

    await threads.deferToThread(own_cluster.start)
    pool = Database(dsn, reactor, size=1)
    again = XdrWriter(PostgresXdrStore(pool), reactor, Spool(tmp_path / "xdr.spool"))
    again.startService()
    assert again.health()["depth"] == 20
    pool.startService()
    await wait_for(lambda: again.health()["depth"] == 0)
    await again.stopService()
    await pool.stopService()
    count, distinct, total = totals(dsn)
    assert count == distinct == 20 and total == sum(x.amount for x in legs)
    # Replayed from the spool, each leg keeps its Call-ID (None stays NULL) and its process.
    stored = query(dsn, "SELECT session_id, leg, call_id, instance_id::text FROM xdrs")
    assert sorted(stored) == sorted((x.session_id, x.leg, x.call_id, x.instance_id) for x in legs)
