"""Blocking PostgreSQL access for the CLI and the server's start-up check.

The commands under ``commands/`` and ``tap.preflight`` run before (or without) a reactor;
they open one connection, use it and close it. This module is their only way to the
driver: a refused connection is ``DatabaseUnavailable`` and a refused statement is
``DatabaseError`` (``cbserver.errors``), each with the driver's message and the driver
error as ``__cause__``, so nothing above ``db/`` imports psycopg2.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2

from cbserver.errors import DatabaseError, DatabaseUnavailable


def connect_sync(dsn: str, timeout: int = 10):
    """Open a blocking connection to ``dsn``, giving up after ``timeout`` seconds.

    Raises ``DatabaseUnavailable`` whose text is the driver's message (stripped).
    """
    try:
        return psycopg2.connect(dsn, connect_timeout=timeout)
    except psycopg2.OperationalError as e:
        raise DatabaseUnavailable(str(e).strip()) from e


@contextmanager
def sync_cursor(dsn: str, timeout: int = 10) -> Iterator:
    """A cursor in one transaction on a new connection: committed when the block ends,
    rolled back if it raises; the connection is closed either way.

    A connection refused is ``DatabaseUnavailable``; a statement PostgreSQL refused is
    ``DatabaseError``. Other exceptions from the block go up unchanged.
    """
    conn = connect_sync(dsn, timeout)
    try:
        with conn, conn.cursor() as cur:
            yield cur
    except psycopg2.Error as e:
        raise DatabaseError(str(e).strip()) from e
    finally:
        conn.close()
