"""The start-up readiness check's failure path: PostgreSQL away is one warning, not a traceback."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.python.failure import Failure

from cbserver.callback.service import CallbackService
from cbserver.db.pool import DatabaseUnavailable


class _Log:
    def __init__(self):
        self.lines = []

    def warn(self, fmt, **kw):
        self.lines.append(("warn", fmt.format(**kw)))

    def failure(self, fmt, failure, **kw):
        self.lines.append(("failure", fmt, failure.value))


def test_a_database_outage_is_one_warning_line():
    log = _Log()
    CallbackService._readiness_failed(SimpleNamespace(log=log),
                                      Failure(DatabaseUnavailable("connection refused")))
    assert log.lines == [("warn", "readiness not checked: DatabaseUnavailable: connection refused "
                                  "(run `cbserver check` once the database is back)")]


def test_a_bug_keeps_its_traceback():
    log = _Log()
    error = KeyError("x")
    CallbackService._readiness_failed(SimpleNamespace(log=log), Failure(error))
    assert log.lines == [("failure", "could not check the catalog's readiness", error)]
