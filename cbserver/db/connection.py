"""The pool's txpostgres connection: registered with the reactor from connect to close.

``_PooledConnection`` stays its socket's reader for its whole life and hands read events to
the cursor whose statement is in flight (``_CursorReactor``, ``_PooledCursor``), instead of
txpostgres's unregister/register swap per statement; it tells the pool
(``cbserver.db.pool.Database``) at once when its socket dies while idle. It relies on
txpostgres internals (``_pollingD``, ``continuePolling``, ``_cursors``):
tests/integration/foundation/test_pool_one_registration_pg.py covers them on a real server.
"""

from __future__ import annotations

import os

import psycopg2
from twisted.python.failure import Failure
from txpostgres import txpostgres

# What psycopg2 raises when the connection itself is gone (or never came).
DEAD = (psycopg2.OperationalError, psycopg2.InterfaceError)


class _CursorReactor:
    """The reactor as a pooled cursor sees it: its socket waits go through its connection.

    A txpostgres cursor waits for its result by registering itself as the reader of the
    connection's socket, after the connection unregistered itself, and the other way round
    when the statement is done: four ``epoll_ctl`` calls and their bookkeeping per statement.
    Here the connection stays registered and hands read events to the cursor that is
    polling (``_PooledConnection.doRead``), so a cursor's reader calls are no-ops and its
    (rare) write waits are the connection's.
    """

    def __init__(self, reactor, connection):
        self._reactor = reactor
        self._connection = connection
        self.callLater = reactor.callLater

    def addReader(self, _cursor) -> None:
        """The connection is the socket's reader and forwards to the polling cursor."""
        self._connection._keep_reading()

    def removeReader(self, _cursor) -> None:
        """Nothing to undo (see ``addReader``)."""

    def addWriter(self, _cursor) -> None:
        """A statement too big for the socket buffer: wait for writability as the connection."""
        self._reactor.addWriter(self._connection)

    def removeWriter(self, _cursor) -> None:
        """The wait for writability is over."""
        self._reactor.removeWriter(self._connection)

    def __getattr__(self, name):
        return getattr(self._reactor, name)


class _PooledCursor(txpostgres.Cursor):
    """A txpostgres cursor whose socket waits go through its connection (``_CursorReactor``)."""

    def __init__(self, cursor, connection):
        super().__init__(cursor, connection)
        self.reactor = connection._cursor_reactor


class _PooledConnection(txpostgres.Connection):
    """A txpostgres connection that stays its socket's reader and tells the pool of its loss.

    An idle connection is watched for NOTIFY; when PostgreSQL stops, that read fails with
    ``OperationalError`` and txpostgres, with no query to fail, raises it into the reactor,
    which logs an "Unhandled Error" traceback per connection and leaves the pool believing
    it is ready until its next query or heartbeat. Here the pool hears of it at once instead
    (it drops every connection and reconnects with back-off).

    While a statement runs, the read events go to its cursor (``_CursorReactor``): the
    socket stays in the reactor's epoll set from connect to close. It is registered under a
    duplicate of libpq's descriptor, because libpq closes its own as soon as it sees the
    connection fail, inside a poll: a closed descriptor leaves the kernel's epoll set by
    itself, and the reactor, still listing it, would fail (EBADF) to unregister it, or take
    a new socket given the same number for the old one. txpostgres avoided that by never
    being registered while it polled; the duplicate keeps the socket open until ``close``.
    """

    cursorFactory = _PooledCursor

    def __init__(self, reactor, on_lost):
        super().__init__(reactor=reactor)
        self._on_lost = on_lost
        self._cursor_reactor = _CursorReactor(reactor, self)
        self._polling = None  # the cursor whose statement is in flight
        self._fd: int | None = None  # our duplicate of libpq's socket, once connected

    def connect(self, *args, **kwargs):
        """Connect as txpostgres does, then read through a duplicate descriptor (see above)."""
        return super().connect(*args, **kwargs).addCallback(self._hold_socket)

    def _hold_socket(self, result):
        if not self._connection.closed and self._fd is None:
            self.reactor.removeReader(self)  # registered under libpq's number by txpostgres
            self._fd = os.dup(self._connection.fileno())
            self.reactor.addReader(self)
        return result

    def fileno(self):
        """The descriptor the reactor watches: our duplicate once connected."""
        if self._fd is not None:
            return self._fd
        return super().fileno()

    def close(self):
        """Close as txpostgres does, then leave the reactor and close our duplicate."""
        try:
            super().close()
        finally:
            if self._fd is not None:
                self.reactor.removeReader(self)
                self.reactor.removeWriter(self)
                os.close(self._fd)
                self._fd = None

    def cursorRunning(self, cursor):
        """A statement was sent: its cursor gets the socket's read events (no re-registering)."""
        self._cursors.add(cursor)
        self._polling = cursor
        self._keep_reading()

    def cursorFinished(self, cursor):
        """The statement's result was delivered: read events are the connection's again."""
        if self._polling is cursor:
            self._polling = None
        super().cursorFinished(cursor)

    def _keep_reading(self) -> None:
        """Be the socket's reader (a set lookup when already registered)."""
        if not self._connection.closed:
            self.reactor.addReader(self)

    def doRead(self):
        """Hand the event to the polling cursor, or read NOTIFY / a loss as txpostgres does."""
        cursor = self._polling
        try:
            if cursor is not None and cursor._pollingD is not None:
                cursor.continuePolling()
            else:
                super().doRead()
        except DEAD:
            # Nothing is waiting for this connection: stop reading a dead socket (epoll is
            # level-triggered) and let the pool reconnect.
            self.reactor.removeReader(self)
            self._on_lost(Failure())

    def doWrite(self):
        """A cursor's statement waited for the socket to take more of it (see addWriter)."""
        cursor = self._polling
        if cursor is not None and cursor._pollingD is not None:
            self.reactor.removeWriter(self)
            cursor.continuePolling()
        else:
            super().doWrite()
