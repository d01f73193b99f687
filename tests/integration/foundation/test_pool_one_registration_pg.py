"""The pool's connections stay registered with the reactor for their whole life.

txpostgres, left to itself, unregisters a connection's socket from epoll when a statement is
sent, registers its cursor instead, and swaps back when the result is in: four ``epoll_ctl``
calls per statement. The pool's connection keeps the socket and hands read events to the
cursor that waits (cbserver/db/connection.py ``_CursorReactor``). These tests count the epoll
calls around real statements and check the cases the swap used to handle: a statement too
large for the socket buffer (a write wait), NOTIFY, a failed statement, and a server that
drops the connection while it is idle or while a statement runs.
"""

from __future__ import annotations

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from cbserver.db.pool import Database

pytestmark = pytest.mark.integration


class _CountingPoller:
    """Wraps the reactor's epoll object and counts its register/modify/unregister calls."""

    def __init__(self, poller):
        self._poller = poller
        self.calls: list[tuple[str, int]] = []

    def register(self, fd, flags):
        self.calls.append(("register", fd))
        return self._poller.register(fd, flags)

    def modify(self, fd, flags):
        self.calls.append(("modify", fd))
        return self._poller.modify(fd, flags)

    def unregister(self, fd):
        self.calls.append(("unregister", fd))
        return self._poller.unregister(fd)

    def __getattr__(self, name):
        return getattr(self._poller, name)


@pytest.fixture
def counting():
    real = reactor._poller
    reactor._poller = counter = _CountingPoller(real)
    yield counter
    reactor._poller = real


async def _ready_pool(dsn, size=2) -> Database:
    pool = Database(dsn, reactor, size=size)
    pool.startService()
    await pool.when_ready()
    return pool


def _reactor_consistent() -> bool:
    """Every descriptor the epoll reactor lists has its reader/writer (a closed descriptor
    left registered breaks this: the reactor's shutdown then fails with KeyError)."""
    return set(reactor._reads) | set(reactor._writes) <= set(reactor._selectables)


def _pool_fds(pool) -> set[int]:
    return {c.fileno() for c in pool._all}


@pytest_twisted.ensureDeferred
async def test_statements_make_no_epoll_calls_and_return_their_rows(pg_dsn, counting):
    pool = await _ready_pool(pg_dsn)
    try:
        fds = _pool_fds(pool)
        del counting.calls[:]
        rows = await defer.gatherResults(
            [pool.runQuery("SELECT %s::int * 2, pg_sleep(0.01)", (i,)) for i in range(40)])
        assert [r[0][0] for r in rows] == [i * 2 for i in range(40)]

        def txn(cur):
            return cur.execute("SELECT 1").addCallback(lambda _: cur.execute("SELECT 2")) \
                .addCallback(lambda _: cur.fetchall())
        assert await pool.runInteraction(txn) == [(2,)]
        assert [c for c in counting.calls if c[1] in fds] == []
    finally:
        await pool.stopService()


@pytest_twisted.ensureDeferred
async def test_a_statement_larger_than_the_socket_buffer_is_sent_whole(pg_dsn, counting):
    pool = await _ready_pool(pg_dsn, size=1)
    try:
        big = "x" * (8 << 20)  # far over a socket's send buffer: psycopg2 asks to wait for writing
        [[n]] = await pool.runQuery("SELECT length(%s)", (big,))
        assert n == len(big)
        fd = pool._all[0].fileno()
        assert ("modify", fd) in counting.calls  # the write wait happened, as the connection
        [[one]] = await pool.runQuery("SELECT 1")  # and the connection reads as before
        assert one == 1
    finally:
        await pool.stopService()


@pytest_twisted.ensureDeferred
async def test_notify_reaches_an_observer_while_idle_and_after_statements(pg_dsn, counting):
    pool = await _ready_pool(pg_dsn, size=1)
    try:
        conn = pool._all[0]
        heard: list[str] = []
        conn.addNotifyObserver(lambda n: heard.append(n.payload))
        await pool.runOperation("LISTEN cbs_probe")
        # from another session: arrives while the pool's connection is idle
        with psycopg2.connect(pg_dsn) as other, other.cursor() as cur:
            cur.execute("NOTIFY cbs_probe, 'idle'")
        other.close()
        for _ in range(100):
            if heard:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        assert heard == ["idle"]
        # delivered with a statement's result: the connection checks when the cursor is done
        await pool.runOperation("NOTIFY cbs_probe, 'inline'")
        for _ in range(100):
            if len(heard) == 2:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        assert heard == ["idle", "inline"]
    finally:
        await pool.stopService()


@pytest_twisted.ensureDeferred
async def test_a_failed_statement_leaves_the_connection_reading(pg_dsn):
    pool = await _ready_pool(pg_dsn, size=1)
    try:
        with pytest.raises(psycopg2.errors.DivisionByZero):
            await pool.runQuery("SELECT 1 / 0")
        [[n]] = await pool.runQuery("SELECT 7")
        assert n == 7
    finally:
        await pool.stopService()


async def _kill_backends(dsn, pool) -> None:
    pids = []
    for conn in pool._all:
        pids.append(conn._connection.info.backend_pid)
    with psycopg2.connect(dsn) as other, other.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", (pids,))
    other.close()


@pytest_twisted.ensureDeferred
async def test_a_connection_killed_while_idle_is_noticed_and_replaced(pg_dsn):
    pool = await _ready_pool(pg_dsn, size=2)
    try:
        old = list(pool._all)
        await _kill_backends(pg_dsn, pool)
        for _ in range(200):  # the idle socket's read fails: the pool drops and reconnects
            if pool.ready and pool._all and pool._all[0] not in old:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        assert pool._all and not set(pool._all) & set(old)
        assert _reactor_consistent()
        [[n]] = await pool.runQuery("SELECT 3")
        assert n == 3
    finally:
        await pool.stopService()


@pytest_twisted.ensureDeferred
async def test_a_connection_killed_mid_statement_fails_it_and_the_pool_reconnects(pg_dsn):
    pool = await _ready_pool(pg_dsn, size=1)
    try:
        slow = pool.runQuery("SELECT pg_sleep(30)")
        await task.deferLater(reactor, 0.3, lambda: None)
        await _kill_backends(pg_dsn, pool)
        with pytest.raises(Exception) as caught:
            await slow
        assert "terminat" in str(caught.value).lower() or "closed" in str(caught.value).lower()
        for _ in range(200):
            if pool.ready:
                break
            await task.deferLater(reactor, 0.05, lambda: None)
        assert _reactor_consistent()
        [[n]] = await pool.runQuery("SELECT 4")
        assert n == 4
    finally:
        await pool.stopService()
