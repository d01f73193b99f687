"""The start-up readiness check's failure path: PostgreSQL away is one warning, not a traceback.

Driven through the service's public life cycle (``startService``) with a database that fails
every query, the way the pool fails them while PostgreSQL is away.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cbserver.callback.service import CallbackService
from cbserver.config import example_path, parse_config
from cbserver.db.pool import IDatabase
from cbserver.errors import DatabaseUnavailable


@implementer(IDatabase)
class FailingDatabase:
    """Every query fails with ``error`` (a fresh instance each time)."""

    ready = True

    def __init__(self, error):
        self.error = error

    def when_ready(self):
        return defer.succeed(self)

    def _fail(self, *args, **kwargs):
        return defer.fail(self.error())

    runQuery = runOperation = runInteraction = _fail

    def health(self):
        return {"status": "ok"}


def _start_with(error):
    db = FailingDatabase(error)
    verifyObject(IDatabase, db)
    svc = CallbackService(parse_config(example_path().read_text()), db, authorizers={},
                          recorder=None, sip=None, media_factory=None, clock=Clock())
    with capturedLogs() as events:
        svc.startService()
    svc.stopService()
    return [e for e in events if e.get("log_namespace", "").startswith("cbserver.callback.service")
            and e["log_level"] >= LogLevel.warn]


def test_a_database_outage_is_one_warning_line():
    lines = _start_with(lambda: DatabaseUnavailable("connection refused"))
    assert [(e["log_level"], e["log_format"]) for e in lines] == [
        (LogLevel.warn, "readiness not checked: {error} (run `cbserver check` once the database "
                        "is back)")]
    assert lines[0]["error"] == "DatabaseUnavailable: connection refused"
    assert "log_failure" not in lines[0]


def test_a_bug_keeps_its_traceback():
    lines = _start_with(lambda: KeyError("x"))
    assert [(e["log_level"], e["log_format"]) for e in lines] == [
        (LogLevel.critical, "could not check the catalog's readiness")]
    assert lines[0]["log_failure"].check(KeyError)
