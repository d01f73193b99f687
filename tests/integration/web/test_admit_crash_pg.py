"""PostgreSQL crashing (``pg_ctl stop -m immediate``) right after ``cb_admit``'s asynchronous
commit (``cbserver/db/limits_store.py`` ``ASYNC_COMMIT``), on a private cluster this module
starts and crashes (the shared one serves the other tests):

- an admission followed by any synchronous commit (here another connection's callback row,
  as the callback path writes next) survives the crash: the WAL is flushed in order, so the
  synchronous commit's flush carries the admission's counter hit and slot with it;
- admissions the crash caught before any flush are each kept whole or lost whole (a counter
  hit with its slot, or neither: one transaction), and the node's pool reconnects once
  PostgreSQL is back and admits the next callback against the recovered counters and slots.

The WAL writer is slowed to its maximum delay (10 s) so that the crash finds the
asynchronous commits unflushed, as it would in a busy instant of a real server.
"""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads

from cbserver.callback.admission import SlotClaim
from cbserver.db.limits_store import PostgresLimitStore
from cbserver.db.migrations import upgrade
from cbserver.errors import DatabaseUnavailable
from tests.support.pgconn import pg_connection, running_pool
from tests.support.pgprivate import private_cluster

pytestmark = pytest.mark.integration

WINDOW = 600
START = 1_800_000_000 - 1_800_000_000 % WINDOW
CAPS = {"client": 5}
SLOT_CAP = 100  # the account's concurrency cap: never the reason of a refusal here
BURST = 20  # admissions the second crash catches unflushed


@pytest.fixture(scope="module")
def crash_cluster():
    """A private cluster with a slow WAL writer, its ``cbserver`` database at the schema."""
    with private_cluster("cbs_admit_crash_") as cluster:
        cluster.sql("ALTER SYSTEM SET wal_writer_delay = '10s'")
        cluster.sql("SELECT pg_reload_conf()")
        upgrade(cluster.dsn(), report=lambda _line: None)
        yield cluster


def _rows(dsn, sql, params=()):
    with pg_connection(dsn) as conn, conn, conn.cursor() as cur:  # synchronous commit
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _hits(dsn, key: str) -> int:
    rows = _rows(dsn, "SELECT hits FROM rate_limit_counters WHERE kind = 'client' AND key = %s "
                      "AND window_start = %s", (key, START))
    return rows[0][0] if rows else 0


def _slot(dsn, slot: str) -> bool:
    return bool(_rows(dsn, "SELECT 1 FROM callback_slots WHERE slot_id = %s", (slot,)))


async def _admit(store, key: str, slot: str, account: str):
    return await store.admit([("client", key)], [], START, START - WINDOW, 1.0, CAPS,
                             SlotClaim(slot, account, SLOT_CAP, 600, None))


async def _crash_and_restart(cluster) -> None:
    # pg_ctl in a thread: it waits for the server to be gone, then to be back.
    await threads.deferToThread(cluster.stop, "immediate")
    await threads.deferToThread(cluster.start)


async def _admit_when_back(db, store, key, slot, account, timeout: float = 60.0):
    """Admit once the pool has reconnected; the failures before it are the outage's."""
    deadline = reactor.seconds() + timeout
    while True:
        if db.ready:
            try:
                return await _admit(store, key, slot, account)
            except DatabaseUnavailable:
                pass
        assert reactor.seconds() < deadline, "the pool never reconnected"
        await task.deferLater(reactor, 0.1, lambda: None)


@pytest_twisted.ensureDeferred
async def test_an_admission_then_a_synchronous_commit_survives_a_crash(crash_cluster):
    dsn = crash_cluster.dsn()
    tag = uuid.uuid4().hex[:8]
    key, slot, account, callback = f"198.51.100.{tag}", str(uuid.uuid4()), f"cbc{tag}", tag
    async with running_pool(dsn, "crash-a", retry_max=1.0) as db:
        try:
            assert await _admit(PostgresLimitStore(db), key, slot, account) == (
                {"client": (1, 0)}, {}, False, True)
            # What the callback path commits next, synchronously, on another connection.
            _rows(dsn, "INSERT INTO callback_sessions (id, application, mode, phone, status, "
                       "state, node, instance_id) VALUES (%s, 'Web callback', 'extended', "
                       "'1555', 'connected', '{}', 'crash-a', %s)", (callback, db.instance_id))
            await _crash_and_restart(crash_cluster)
            assert _hits(dsn, key) == 1
            assert _slot(dsn, slot)
            assert _rows(dsn, "SELECT count(*) FROM callback_sessions WHERE id = %s",
                         (callback,)) == [(1,)]
        finally:
            await threads.deferToThread(crash_cluster.start)  # never leave it down for the next


@pytest_twisted.ensureDeferred
async def test_a_crash_keeps_each_admission_whole_and_the_node_admits_again(crash_cluster):
    dsn = crash_cluster.dsn()
    tag = uuid.uuid4().hex[:8]
    account = f"cbd{tag}"
    burst = [(f"203.0.113.{tag}.{i}", str(uuid.uuid4())) for i in range(BURST)]
    async with running_pool(dsn, "crash-b", size=2, retry_max=1.0) as db:
        try:
            store = PostgresLimitStore(db)
            for key, slot in burst:  # asynchronous commits only, nothing flushes them on purpose
                (_, _, refused, taken) = await _admit(store, key, slot, account)
                assert (refused, taken) == (False, True)
            await _crash_and_restart(crash_cluster)
            kept = 0
            for key, slot in burst:
                hit, has_slot = _hits(dsn, key), _slot(dsn, slot)
                # One transaction: the hit and the slot are both there or both gone.
                assert (hit, has_slot) in ((1, True), (0, False)), (key, hit, has_slot)
                kept += has_slot
            # The pool finds its connections dead at their next use and reconnects by itself
            # (retry_max 1 s); until then an admission fails whole (DatabaseUnavailable).
            key, slot = f"203.0.113.{tag}.new", str(uuid.uuid4())
            counted, _, refused, taken = await _admit_when_back(db, store, key, slot, account)
            assert (counted, refused, taken) == ({"client": (1, 0)}, False, True)
            # The new slot is counted with exactly the burst's survivors, nothing half-written.
            assert _rows(dsn, "SELECT count(*) FROM callback_slots WHERE account_id = %s",
                         (account,)) == [(kept + 1,)]
            # A repeated request from a surviving key counts on from the recovered counter.
            if kept:
                key0, _slot0 = next((k, s) for k, s in burst if _slot(dsn, s))
                counted, _, _, _ = await _admit(store, key0, str(uuid.uuid4()), account)
                assert counted == {"client": (2, 0)}
        finally:
            await threads.deferToThread(crash_cluster.start)
