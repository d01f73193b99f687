"""Running callbacks' statements are not stuck behind a queue of admissions (issue 17 item 4),
against the real PostgreSQL, through the real pool and the real rate limiter.

The attack: a flood of new callback requests arrives while callbacks run. Each running
callback's statement (legB's re-authorization, a status or recovery row, an xDR) must get the
next free connection, whatever the number of admission statements queued before it; and the
start-delay gate, reading the pool's admission queue, must refuse the flood's tail at once
(503 ``busy``, no database work) rather than admit requests to starve in the queue.
"""

from __future__ import annotations

import dataclasses

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from cbserver import priority
from cbserver.callback.admission import Admission, RateLimiter
from cbserver.callback.api import CallbackRefused, CallbackRequest
from cbserver.config import LimitsConfig
from cbserver.db.limits_store import PostgresLimitStore
from cbserver.db.pool import Database, _PooledConnection

pytestmark = pytest.mark.integration

SIZE = 2


class _Recording(_PooledConnection):
    """A pooled connection that records, in one shared list, each statement it is given:
    the order in which statements got a connection."""

    def __init__(self, on_lost, log):
        super().__init__(reactor, on_lost)
        self._log = log

    def runQuery(self, sql, params=None):
        self._log.append(sql)
        return super().runQuery(sql, params)

    def runOperation(self, sql, params=None):
        self._log.append(sql)
        return super().runOperation(sql, params)

    def runInteraction(self, fn, *args, **kwargs):
        self._log.append(getattr(fn, "__name__", "interaction"))
        return super().runInteraction(fn, *args, **kwargs)


async def _pool(dsn):
    started: list[str] = []
    db = Database(dsn, reactor, size=SIZE, register=False)
    db._factory = lambda: _Recording(db._lost, started)
    db.startService()
    await db.when_ready()
    return db, started


def _as_admission(fn, *args):
    """Call ``fn`` from a generator marked as admission work, as ``Admission.start`` does."""

    @defer.inlineCallbacks
    def admit():
        token = priority.admission()
        try:
            return (yield fn(*args))
        finally:
            priority.restore(token)

    return admit()


async def _sleep(seconds):
    await task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.ensureDeferred
async def test_a_running_callbacks_statement_takes_the_next_connection(pg_dsn):
    db, started = await _pool(pg_dsn)
    try:
        flood = [_as_admission(db.runQuery, f"SELECT {i} AS admission, pg_sleep(0.02)")
                 for i in range(30)]
        assert sum(db.queued()) == 30 - SIZE
        before = len(started)
        legb = db.runQuery("SELECT 'legB re-authorization'")  # reactor context: running work
        rows = await legb
        assert rows == [("legB re-authorization",)]
        # It was given the first connection freed after it was issued: no admission of the
        # 28 queued before it went first.
        assert started.index("SELECT 'legB re-authorization'") == before
        assert db.queued()[1] >= 30 - SIZE - SIZE  # most of the flood still waits
        # The same statement marked as admission work queues behind the whole flood: the
        # ordering above is the pool's priority, not luck.
        late = _as_admission(db.runQuery, "SELECT 'admission after the flood'")
        waiting = db.queued()[1]
        await late
        assert started.index("SELECT 'admission after the flood'") - before >= waiting
        await defer.gatherResults(flood)
        assert db.queued() == (0, 0) and db.hold_avg > 0
    finally:
        await db.stopService()


class _Service:
    """The callback service as admission sees it, over the real pool: starting a callback
    is one authorization-like statement, then its session runs as ``CallbackService`` runs
    it (``priority.running``) and writes a first recovery-like row."""

    active = 0
    draining = False

    def __init__(self, db):
        self.db = db
        self.clock = reactor
        self.n = 0
        self.sessions: list[defer.Deferred] = []

    def new_callback_id(self):
        self.n += 1
        return f"cb{self.n}"

    @defer.inlineCallbacks
    def request_callback(self, request):
        # 30 ms of connection time per start: the pool's measured hold time, hence the point
        # where the flood is refused, does not depend on how fast this machine is.
        yield self.db.runQuery("SELECT 'authorize', pg_sleep(0.03)")
        self.sessions.append(priority.running(self._session, request.callback_id))
        return request.callback_id

    @defer.inlineCallbacks
    def _session(self, callback_id):
        yield self.db.runQuery(f"SELECT 'session {callback_id}'")


@pytest_twisted.ensureDeferred
async def test_a_flood_of_requests_does_not_delay_running_callbacks(pg_dsn):
    db, started = await _pool(pg_dsn)
    try:
        limits = LimitsConfig(per_client=100000, per_phone=100000, per_account=100000,
                              start_delay_target=0.4, start_delay_interval=1.0)
        service = _Service(db)
        admission = Admission(service, RateLimiter(PostgresLimitStore(db), limits, reactor),
                              None, lambda: True, limits)
        base = CallbackRequest(application="Web callback", mode="simple", phone="15550100",
                               client_address="192.0.2.7")
        # Warm up: a few starts, so the pool has measured how long a statement holds a
        # connection and admission how many statements a start takes.
        for i in range(4):
            await admission.start(dataclasses.replace(base, phone=f"1555020{i}"))
        assert admission.gate.state()["open"] and db.hold_avg > 0
        outcomes: list = []

        def flood(n):
            for i in range(n):
                d = admission.start(dataclasses.replace(base, phone=f"1555{i:06d}"))
                d.addCallbacks(lambda _id: outcomes.append("202"),
                               lambda f: outcomes.append(f.trap(CallbackRefused) and f.value.code))

        checkouts = db.admission_checkouts
        flood(200)
        shut = admission.load_state()
        # The tail of the flood was refused at once: busy, before any database work.
        refused = outcomes.count("busy")
        assert refused > 0 and not shut["gate"]["open"] and shut["gate"]["reason"] == "queue"
        assert shut["db_queue"]["admission"] > 0
        admitted = 200 - refused
        # Each admitted request issued at most its limiter statement so far; none refused did.
        assert db.admission_checkouts - checkouts == admitted
        # Meanwhile running callbacks keep issuing statements; each takes the next
        # connection freed, never waiting behind the queued admissions.
        for k in range(5):
            assert db.queued()[1] > SIZE or k > 0
            before = len(started)
            sql = f"SELECT 'legB {k}'"
            await db.runQuery(sql)
            assert started.index(sql) - before <= len([s for s in started[before:]
                                                       if s.startswith("SELECT 'session")]), \
                "a running callback's statement waited behind admissions"
            await _sleep(0.02)
        # Every admitted request gets its answer (202) and its session runs.
        for _ in range(600):
            if len(outcomes) == 200:
                break
            await _sleep(0.05)
        assert outcomes.count("202") == admitted and set(outcomes) <= {"202", "busy"}
        await defer.gatherResults(service.sessions)
        # The queue drained: the gate opens again, and a new request is admitted.
        assert admission.gate.state()["queue_delay"] <= 0.4
        assert (await admission.start(dataclasses.replace(base, phone="15559999"))).startswith("cb")
    finally:
        await db.stopService()
