"""The project's own errors for what lies below the domain: the database.

``cbserver.db`` turns psycopg2's errors into these, so nothing above ``db/`` needs the
driver to tell "PostgreSQL is away" from "this transaction lost a race".
"""

from __future__ import annotations


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be used right now (refused before sending, or the connection broke).

    ``str(error)`` says why; when a driver error caused it, that error is ``__cause__``.
    """


class ConcurrentWrite(RuntimeError):
    """A transaction lost a race with another writer and changed nothing; running it again may
    succeed (a deadlock, a serialization failure, a duplicate key another writer stored first).
    """


class TransactionAborted(ConcurrentWrite):
    """PostgreSQL aborted the transaction to break a deadlock (40P01) or a serialization
    conflict (40001); it changed nothing."""


class DatabaseError(RuntimeError):
    """PostgreSQL refused a statement for a reason that is not a lost connection or a race.

    ``str(error)`` is the server's message; the driver error is ``__cause__``.
    """
