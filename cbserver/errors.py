"""The project's own errors for what lies below the domain: the database.

``cbserver.db`` turns psycopg2's errors into these, so nothing above ``db/`` needs the
driver to tell "PostgreSQL is away" from "this transaction lost a race".
"""

from __future__ import annotations


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be used right now (refused before sending, or the connection broke).

    ``str(error)`` says why; when a driver error caused it, that error is ``__cause__``.
    """
