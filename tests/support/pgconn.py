"""The set-up the PostgreSQL tests repeat: a plain psycopg2 connection closed after, and a
started node pool (``cbserver.db.pool.Database``) stopped after."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import psycopg2
from twisted.internet import reactor

from cbserver.db.pool import Database


@contextlib.contextmanager
def pg_connection(dsn: str) -> Iterator:
    """A psycopg2 connection to ``dsn``, closed when the block ends (``with conn:`` inside
    still makes a transaction; psycopg2's own ``with`` does not close)."""
    conn = psycopg2.connect(dsn)
    try:
        yield conn
    finally:
        conn.close()


@contextlib.asynccontextmanager
async def running_pool(dsn: str, node: str = "node-a", size: int = 1, **options
                       ) -> AsyncIterator[Database]:
    """A node's pool on ``dsn``, started and ready (its process registered, as a server's);
    stopped when the block ends. ``options``: more ``Database`` arguments (``retry_max``)."""
    db = Database(dsn, reactor, size=size, node=node, **options)
    db.startService()
    try:
        await db.when_ready()
        yield db
    finally:
        await db.stopService()
