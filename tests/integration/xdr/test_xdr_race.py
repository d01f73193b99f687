"""Two cbserver processes (two separate pools, authorizers and writers) racing on one debit
account: reservations taken under the balance's row lock mean they never overspend it, and
the balance changes by exactly the sum of the account's xDR amounts."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from cbserver.billing.authorize import Authorizer, AuthRequest
from cbserver.billing.spool import Spool
from cbserver.billing.xdr import LegRecord, XdrWriter, leg_record
from cbserver.db.pool import Database
from cbserver.db.stores import PostgresAuthorizationStore, PostgresXdrStore
from cbserver.db.tariff_loader import TariffCache
from tests.integration.xdr.helpers import balance, query, reservations, xdr_total

pytestmark = pytest.mark.integration


async def one_call(authorizer, writer, session, rng, outcomes):
    auth = await authorizer.authorize(AuthRequest(session, "cb1001", "18005550100", "442071234567"))
    if auth.max_seconds == 0:
        outcomes.append(auth.reason)
        return
    # The call lasts anything up to its maximum, as the session's timer guarantees.
    seconds = rng.choice([auth.max_seconds, rng.randint(1, auth.max_seconds)])
    await task.deferLater(reactor, rng.random() / 50, lambda: None)
    now = dt.datetime.now(dt.UTC)
    end = now + dt.timedelta(seconds=seconds)
    legs = [leg_record(auth, leg, trigger_mode="extended", node="node1", connect_time=now,
                       disconnect_time=end, duration=seconds, sip_code=200) for leg in "AB"]
    await defer.gatherResults([writer.record(x) for x in legs])
    outcomes.append(seconds)


async def worker(authorizer, writer, name, seed, outcomes):
    rng = random.Random(seed)
    waves = []
    for wave in range(8):
        waves.append(defer.gatherResults([
            defer.ensureDeferred(one_call(authorizer, writer, f"{name}-{wave}-{i}", rng, outcomes))
            for i in range(6)]))
        await waves[-1]


@pytest_twisted.ensureDeferred
async def test_two_writers_racing_never_overspend_a_debit_account(cat_dsn, tmp_path):
    query(cat_dsn, "UPDATE accounts SET balance = 3.00 WHERE id = 'cb1001'")
    processes = []
    for n in (1, 2):
        pool = Database(cat_dsn, reactor, size=3, node="node1")
        pool.startService()
        await pool.when_ready()
        writer = XdrWriter(PostgresXdrStore(pool), reactor, Spool(tmp_path / f"spool{n}"))
        writer.startService()
        authorizer = Authorizer(PostgresAuthorizationStore(pool),
                                TariffCache(pool, reactor), reactor, node="node1")
        processes.append((pool, writer, authorizer))
    outcomes: list = []
    try:
        await defer.gatherResults([
            defer.ensureDeferred(worker(authorizer, writer, f"p{n}", n, outcomes))
            for n, (_, writer, authorizer) in enumerate(processes)])
    finally:
        for pool, writer, _ in processes:
            await writer.stopService()
            await pool.stopService()
    calls = [o for o in outcomes if isinstance(o, int)]
    refusals = [o for o in outcomes if isinstance(o, str)]
    assert calls and refusals and set(refusals) == {"no_balance"}  # both happened: a real race
    left = balance(cat_dsn, "cb1001")
    count, spent = xdr_total(cat_dsn, "cb1001")
    assert count == 2 * len(calls)
    assert left >= 0  # never overspent
    assert Decimal("3.00") - left == spent  # exactly the xDR amounts, nothing twice
    assert reservations(cat_dsn) == []
    assert left < Decimal("0.20")  # and the budget was in fact used up


@pytest_twisted.ensureDeferred
async def test_two_writers_recording_the_same_legs_store_and_charge_them_once(cat_dsn, tmp_path):
    writers = []
    for n in (1, 2):
        pool = Database(cat_dsn, reactor, size=2, node="node1")
        pool.startService()
        await pool.when_ready()
        writer = XdrWriter(PostgresXdrStore(pool), reactor, Spool(tmp_path / f"spool{n}"))
        writer.startService()
        writers.append((pool, writer))
    now = dt.datetime.now(dt.UTC)
    legs = [LegRecord(session_id=f"dup{i // 2}", leg="AB"[i % 2], account_id="cb1001", cli="1", cld="2",
                      node="node1", connect_time=now, disconnect_time=now, duration=1, charged_seconds=1,
                      amount=Decimal("0.01000"), currency="USD", trigger_mode="simple")
            for i in range(300)]
    try:
        await defer.gatherResults([w.record(x) for x in legs for _, w in writers])
    finally:
        for pool, writer in writers:
            await writer.stopService()
            await pool.stopService()
    assert xdr_total(cat_dsn, "cb1001") == (300, Decimal("3.00000"))
    assert balance(cat_dsn, "cb1001") == Decimal("7.00000")
    assert all(w.health()["rejected"] == 0 for _, w in writers)
