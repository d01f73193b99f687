"""The PostgreSQL connection pool as a Twisted service, with reconnection and health.

``Database`` opens ``size`` txpostgres connections in ``startService``. While PostgreSQL is
unreachable it retries with exponential back-off (never crash-looping the process) and keeps
the reason for ``/healthz``. Once connected it checks the schema version; a schema older than
the code needs is reported the same way, with the command that upgrades it. A connection that
dies mid-query makes the pool reconnect. Callers wait for ``when_ready()``. The connection
itself (one reactor registration from connect to close) is ``cbserver.db.connection``.
"""

from __future__ import annotations

import collections
import os
import socket
import uuid

import psycopg2
from twisted.application import service
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

from cbserver import __version__, priority
from cbserver.db.connection import DEAD as _DEAD
from cbserver.db.connection import _PooledConnection
from cbserver.db.migrations import (
    FUNCTION_CHECKSUMS,
    SchemaTooOld,
    check_functions,
    required_version,
)
from cbserver.errors import DatabaseUnavailable
from cbserver.logs import Logger, describe_failure

__all__ = ["Database", "IDatabase", "connection_failed"]


class IDatabase(Interface):
    """What the rest of cbserver may ask of the database layer."""

    ready = Attribute("True while connected with a current schema")

    def when_ready():
        """A Deferred firing once the pool is usable."""

    def runQuery(sql, params=None):
        """Run a query and return its rows."""

    def runOperation(sql, params=None):
        """Run a statement whose result is not needed."""

    def runInteraction(fn, *args, **kwargs):
        """Run ``fn(cursor, ...)`` inside one transaction."""

    def health():
        """A dict: status ``ok`` / ``down``, and the reason when down."""


def _queues() -> tuple[collections.deque, ...]:
    """One empty waiter queue per class of work, in the order the pool serves them."""
    return tuple(collections.deque() for _ in priority.CLASSES)


# SQLSTATEs that end the session itself: class 08 (connection exception), and the server
# shutting down or not yet accepting connections (57P01 admin_shutdown, 57P02
# crash_shutdown, 57P03 cannot_connect_now). PostgreSQL documentation, Appendix A.
_SESSION_ENDED = ("08", "57P01", "57P02", "57P03")


def connection_failed(exc: BaseException) -> bool:
    """Did ``exc`` break the connection (reconnect), rather than fail one statement on it?

    psycopg2 files a deadlock (40P01), a serialization failure (40001), a statement timeout
    (57014) and a lock timeout (55P03) under ``OperationalError``, like a dropped connection.
    Those abort one transaction and leave the session usable: treating them as a lost
    connection would close every connection and fail every other query in flight. An error
    without a SQLSTATE never came from the server: the client lost it.
    """
    if isinstance(exc, psycopg2.InterfaceError):
        return True
    if not isinstance(exc, psycopg2.OperationalError):
        return False
    code = getattr(exc, "pgcode", None)
    return code is None or code.startswith(_SESSION_ENDED)


@implementer(IDatabase)
class Database(service.Service):
    """A pool of txpostgres connections that reconnects with back-off."""

    log = Logger()
    name = "database"
    ping_interval = 5.0

    def __init__(self, dsn: str, reactor, size: int = 4, retry_max: float = 30.0,
                 node: str = "node1", connection_factory=None, required: int | None = None,
                 register: bool = True):
        self.dsn = dsn
        self.reactor = reactor
        self.size = size
        self.retry_max = retry_max
        self.node = node
        # A server registers its process in server_nodes and keeps its heartbeat; a command
        # (cbserver provision, check, accounts...) is no node and leaves no row (issue 16).
        self.register = register
        self.instance_id = str(uuid.uuid4())
        self._factory = connection_factory or (lambda: _PooledConnection(reactor, self._lost))
        self._required = required
        self._idle: list = []
        self._all: list = []
        # One queue per class of work (cbserver.priority), in the order they are served:
        # a freed connection goes to the oldest waiter of the first class that has one.
        self._waiters: tuple[collections.deque, ...] = _queues()
        # Mean seconds a connection is held per use (exponentially weighted; None until the
        # first use), and how many admission checkouts were served: the queue-time estimate.
        self.hold_avg: float | None = None
        self.admission_checkouts = 0
        self._ready_waiters: list[defer.Deferred] = []
        self._retry_delay = 0.5
        self._retry_call = None
        self._ping_call = None
        self._connecting = False
        self.ready = False
        self.reason = "not started"
        self.attempts = 0

    # -- life cycle ---------------------------------------------------------------------

    def startService(self) -> None:
        """Begin connecting; never raises, failures schedule a retry."""
        super().startService()
        self._connect()

    @defer.inlineCallbacks
    def stopService(self):
        """Mark the node stopped (best effort) and close every connection."""
        super().stopService()
        for call in (self._retry_call, self._ping_call):
            if call is not None and call.active():
                call.cancel()
        self._retry_call = self._ping_call = None
        if self.ready and self.register:
            try:
                yield self.runOperation(
                    "UPDATE server_nodes SET stopped_at = now() WHERE instance_id = %s",
                    (self.instance_id,))
            except Exception as e:  # noqa: BLE001 - shutting down: log and go on
                self.log.warn("could not mark node stopped: {err}", err=describe_failure(e))
        self._drop_connections("stopped")

    def when_ready(self) -> defer.Deferred:
        """A Deferred that fires (with self) once connected with a current schema."""
        if self.ready:
            return defer.succeed(self)
        d = defer.Deferred()
        self._ready_waiters.append(d)
        return d

    def health(self) -> dict:
        """The pool's state for ``/healthz``."""
        if self.ready:
            return {"status": "ok", "connections": len(self._all), "idle": len(self._idle)}
        return {"status": "down", "reason": self.reason, "attempts": self.attempts}

    # -- connecting ---------------------------------------------------------------------

    @defer.inlineCallbacks
    def _connect(self):
        """One attempt to open the pool; schedules the next attempt on failure."""
        if self._connecting or not self.running:
            return
        self._connecting = True
        self.attempts += 1
        conns = [self._factory() for _ in range(self.size)]
        try:
            results = yield defer.DeferredList(
                [c.connect(self.dsn, connect_timeout=10) for c in conns], consumeErrors=True)
            failures = [r for ok, r in results if not ok]
            if failures:
                raise DatabaseUnavailable(describe_failure(failures[0]))
            self._all, self._idle = conns, list(conns)
            yield self._check_schema(conns[0])
            if self.register:
                yield self._register(conns[0])
        except (DatabaseUnavailable, SchemaTooOld, *_DEAD) as e:
            for c in conns:
                self._close_quietly(c)
            self._all, self._idle = [], []
            self._connecting = False
            self._retry(e)
            return
        self._connecting = False
        self.ready = True
        self.reason = ""
        self._retry_delay = 0.5
        self.log.info("database ready ({n} connections) node={node}", n=self.size, node=self.node)
        if self.register:
            self._ping_call = self.reactor.callLater(self.ping_interval, self._ping)
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(self)

    @defer.inlineCallbacks
    def _check_schema(self, conn):
        """Refuse a schema older than the shipped migrations, or whose functions differ from
        the shipped ``sql/functions/`` files (SchemaTooOld, FunctionsOutOfDate)."""
        need = self._required if self._required is not None else required_version()
        rows = yield conn.runQuery("SELECT to_regclass('schema_migrations') IS NOT NULL")
        have = 0
        if rows[0][0]:
            rows = yield conn.runQuery("SELECT coalesce(max(version), 0) FROM schema_migrations")
            have = int(rows[0][0])
        if have < need:
            raise SchemaTooOld(have, need)
        if self._required is None:
            # The shipped files are the measure (a given ``required`` names another schema):
            # functions that differ from them are reported as needing `cbserver db upgrade`,
            # never replaced here (see cbserver.db.migrations for why).
            rows = yield conn.runQuery(FUNCTION_CHECKSUMS)
            check_functions(dict(rows), have)

    def _register(self, conn):
        """Record this process in server_nodes (its heartbeat row)."""
        return conn.runOperation(
            "INSERT INTO server_nodes (node, instance_id, hostname, pid, version) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (instance_id) DO UPDATE "
            "SET last_seen = now(), stopped_at = NULL",
            (self.node, self.instance_id, socket.gethostname(), os.getpid(), __version__))

    def _retry(self, why) -> None:
        """Remember why we are down and schedule the next attempt with back-off."""
        self.reason = str(why) if isinstance(why, SchemaTooOld) else describe_failure(why)
        if not self.running:
            return
        delay = self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self.retry_max)
        self.log.warn("database unavailable: {reason}; retrying in {delay:.1f}s",
                      reason=self.reason, delay=delay)
        self._retry_call = self.reactor.callLater(delay, self._connect)

    def _ping(self) -> None:
        """Heartbeat: refresh this node's row, which also notices a dead server early."""
        self._ping_call = None
        d = self.runOperation("UPDATE server_nodes SET last_seen = now() WHERE instance_id = %s",
                              (self.instance_id,))

        def again(_):
            if self.running and self.ready and self._ping_call is None:
                self._ping_call = self.reactor.callLater(self.ping_interval, self._ping)

        def failed(f):
            if not f.check(DatabaseUnavailable, *_DEAD):
                self.log.failure("heartbeat failed", failure=f)

        d.addErrback(failed).addBoth(again)

    def _close_quietly(self, conn) -> None:
        """Close a connection, ignoring a connection that never opened."""
        try:
            conn.close()
        except (psycopg2.Error, AttributeError, RuntimeError):
            pass

    def _drop_connections(self, reason: str) -> None:
        """Close everything and fail queued callers."""
        self.ready = False
        self.reason = reason
        for c in self._all:
            self._close_quietly(c)
        self._all, self._idle = [], []
        waiters, self._waiters = self._waiters, _queues()
        for queue in waiters:
            for d, _since in queue:
                d.errback(DatabaseUnavailable(reason))

    def _lost(self, failure) -> None:
        """A query failed because the server went away: reconnect."""
        if not self.ready:
            return
        why = describe_failure(failure)
        self.log.warn("database connection lost: {why}", why=why)
        self._drop_connections(why)
        if self._ping_call is not None and self._ping_call.active():
            self._ping_call.cancel()
        self._ping_call = None
        self._retry(failure.value)

    # -- running work -------------------------------------------------------------------

    def _checkout(self) -> defer.Deferred:
        """Get an idle connection, waiting for one if all are busy.

        A waiter queues by the class of the work issuing it (``priority.current()``): running
        callbacks' statements are never stuck behind a queue of new requests' admissions.
        """
        if not self.ready:
            return defer.fail(DatabaseUnavailable(self.reason or "database not ready"))
        klass = priority.current()
        if klass == priority.ADMISSION:
            self.admission_checkouts += 1
        if self._idle and not any(self._waiters):
            return defer.succeed(self._idle.pop())
        d = defer.Deferred()
        self._waiters[klass].append((d, self.reactor.seconds()))
        return d

    def _checkin(self, conn) -> None:
        """Return a connection to the pool or hand it to the next waiter, running work first."""
        if conn not in self._all:
            return
        for queue in self._waiters:
            if queue:
                queue.popleft()[0].callback(conn)
                return
        self._idle.append(conn)

    def queued(self) -> tuple[int, int]:
        """Statements waiting for a connection: (running callbacks' — urgent or not —,
        admissions')."""
        admissions = len(self._waiters[priority.ADMISSION])
        return sum(len(q) for q in self._waiters) - admissions, admissions

    def admission_wait(self) -> float:
        """Seconds an admission statement issued now would wait for a connection (estimate).

        The longer of: how long the oldest admission waiter has already waited (a measure,
        which grows while running work keeps every connection), and the work queued ahead of
        a newcomer — every waiter of both queues plus itself — at the measured mean time a
        connection is held per use, spread over the pool's connections. 0 while a
        connection is idle and nobody waits.
        """
        admissions = self._waiters[priority.ADMISSION]
        queued = sum(len(q) for q in self._waiters)
        if not queued and (self._idle or not self.ready):
            return 0.0
        waited = self.reactor.seconds() - admissions[0][1] if admissions else 0.0
        ahead = (queued + 1) * (self.hold_avg or 0.0) / max(1, self.size)
        return max(waited, ahead)

    def _held(self, since: float) -> None:
        """Account for one use of a connection that began at ``since``."""
        held = self.reactor.seconds() - since
        self.hold_avg = held if self.hold_avg is None else self.hold_avg + (held - self.hold_avg) / 16

    def _with_connection(self, call: str, *args, **kwargs) -> defer.Deferred:
        """Run ``conn.<call>(*args)`` on a pooled connection."""

        def run(conn):
            since = self.reactor.seconds()
            d = getattr(conn, call)(*args, **kwargs)

            def done(result):
                self._held(since)
                self._checkin(conn)
                return result

            def failed(f):
                if connection_failed(f.value):
                    self._lost(f)
                    # Callers above db/ see the project's error, not the driver's.
                    lost = DatabaseUnavailable(describe_failure(f))
                    lost.__cause__ = f.value
                    return Failure(lost)
                self._held(since)
                self._checkin(conn)
                return f

            return d.addCallbacks(done, failed)

        return self._checkout().addCallback(run)

    def runQuery(self, sql: str, params=None) -> defer.Deferred:
        """Run a query and return its rows."""
        return self._with_connection("runQuery", sql, params)

    def runOperation(self, sql: str, params=None) -> defer.Deferred:
        """Run a statement, discarding its result."""
        return self._with_connection("runOperation", sql, params)

    def runInteraction(self, fn, *args, **kwargs) -> defer.Deferred:
        """Run ``fn(cursor, *args, **kwargs)`` in a transaction (rolled back on error)."""
        return self._with_connection("runInteraction", fn, *args, **kwargs)
