"""The pool against the real PostgreSQL: an error a query raises while the server is up
(a deadlock, a statement timeout) fails that query only; it is not a lost connection.

psycopg2 files these under ``OperationalError``, the class it also uses for a broken
connection, so the pool must tell them apart by SQLSTATE: dropping every connection and
reconnecting with back-off because two transactions deadlocked would fail every other
query in flight and refuse callbacks for seconds.
"""

from __future__ import annotations

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher

from cbserver.db.pool import Database

pytestmark = pytest.mark.integration


def _setup(dsn: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE lockers (id int PRIMARY KEY, n int NOT NULL DEFAULT 0)")
        cur.execute("INSERT INTO lockers (id) VALUES (1), (2)")
    conn.close()


@pytest_twisted.ensureDeferred
async def test_a_deadlock_fails_one_transaction_and_keeps_the_pool(pg_dsn):
    _setup(pg_dsn)
    events: list = []
    globalLogPublisher.addObserver(events.append)
    pool = Database(pg_dsn, reactor, size=3)
    pool.startService()
    try:
        await pool.when_ready()
        # Two transactions lock the two rows in opposite orders, each waiting until the other
        # holds its first row: PostgreSQL detects the cycle (deadlock_timeout, 1 s) and
        # aborts one of them.
        first_locked = {1: defer.Deferred(), 2: defer.Deferred()}

        def crossing(mine, theirs):
            @defer.inlineCallbacks
            def run(cur):
                yield cur.execute("UPDATE lockers SET n = n + 1 WHERE id = %s", (mine,))
                first_locked[mine].callback(None)
                yield first_locked[theirs]
                yield cur.execute("UPDATE lockers SET n = n + 1 WHERE id = %s", (theirs,))
            return run

        results = await defer.DeferredList([pool.runInteraction(crossing(1, 2)),
                                            pool.runInteraction(crossing(2, 1))],
                                           consumeErrors=True)
        outcomes = sorted(ok for ok, _ in results)
        assert outcomes == [False, True]
        [failure] = [f for ok, f in results if not ok]
        assert failure.check(psycopg2.errors.DeadlockDetected)
        # The pool is still up, with every connection, and answers at once.
        assert pool.ready
        assert (await pool.runQuery("SELECT sum(n) FROM lockers"))[0][0] == 2
        assert len(pool._all) == 3
        lost = [e for e in events if "connection lost" in str(e.get("log_format", ""))]
        assert lost == []
    finally:
        globalLogPublisher.removeObserver(events.append)
        await pool.stopService()


@pytest_twisted.ensureDeferred
async def test_a_lock_timeout_fails_that_transaction_only(pg_dsn):
    _setup(pg_dsn)
    holder = psycopg2.connect(pg_dsn)
    pool = Database(pg_dsn, reactor, size=2)
    pool.startService()
    try:
        await pool.when_ready()
        with holder.cursor() as cur:  # holds row 1 until rolled back
            cur.execute("SELECT * FROM lockers WHERE id = 1 FOR UPDATE")

        @defer.inlineCallbacks
        def blocked(cur):
            yield cur.execute("SET LOCAL lock_timeout = '100ms'")
            yield cur.execute("UPDATE lockers SET n = n + 1 WHERE id = 1")

        other = task.deferLater(reactor, 0.01, pool.runQuery, "SELECT n FROM lockers WHERE id = 2")
        try:
            await pool.runInteraction(blocked)
        except psycopg2.errors.LockNotAvailable:
            pass
        else:
            raise AssertionError("the lock wait did not time out")
        assert (await other) == [(0,)]
        assert pool.ready and len(pool._all) == 2
        assert (await pool.runQuery("SELECT 1")) == [(1,)]
    finally:
        holder.rollback()
        holder.close()
        await pool.stopService()


@pytest_twisted.ensureDeferred
async def test_catalog_transactions_run_again_after_a_deadlock(pg_dsn):
    from cbserver.db import catalog_store

    _setup(pg_dsn)
    pool = Database(pg_dsn, reactor, size=3)
    pool.startService()
    try:
        await pool.when_ready()
        first_locked = {1: defer.Deferred(), 2: defer.Deferred()}
        runs = {1: 0, 2: 0}

        def crossing(mine, theirs):
            async def run(cur):
                runs[mine] += 1
                await cur.execute("UPDATE lockers SET n = n + 1 WHERE id = %s", (mine,))
                if not first_locked[mine].called:
                    first_locked[mine].callback(None)
                await first_locked[theirs]
                await cur.execute("UPDATE lockers SET n = n + 1 WHERE id = %s", (theirs,))
            return run

        await defer.gatherResults([catalog_store.transaction(pool, crossing(1, 2)),
                                   catalog_store.transaction(pool, crossing(2, 1))])
        # Both committed, the one PostgreSQL chose as the victim on its second run.
        assert sorted(runs.values()) == [1, 2]
        assert (await pool.runQuery("SELECT sum(n) FROM lockers"))[0][0] == 4
    finally:
        await pool.stopService()
