"""An accepted callback's session runs as running work, although admission starts it (issue 17
item 4): ``CallbackService.request_callback`` drops admission's database priority mark for the
session it starts, and keeps it for the request's own statements (its first status row is the
status writer's, which runs from the reactor: running work)."""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface import implementer

from cbserver import priority
from cbserver.callback import service as service_module
from cbserver.callback.api import CallbackRequest
from cbserver.callback.service import CallbackService
from cbserver.config import example_path, parse_config
from cbserver.db.pool import IDatabase
from tests.unit.callback.fakes import FakeAuthorizer, FakeUA


@implementer(IDatabase)
class NotingDatabase:
    """Answers every statement at once and notes the priority class it was issued in."""

    ready = True
    instance_id = "test-instance"

    def __init__(self):
        self.classes: list[tuple[str, int]] = []

    def when_ready(self):
        return defer.succeed(self)

    def _run(self, sql, *args, **kwargs):
        self.classes.append((str(sql)[:40], priority.current()))
        return defer.succeed([])

    runQuery = runOperation = runInteraction = _run

    def health(self):
        return {"status": "ok"}


def test_the_session_is_started_as_running_work(monkeypatch):
    cfg = parse_config(example_path().read_text())
    clock = Clock()
    clock.advance(1_780_000_000)  # 2026: the fake tariff's rates are in effect
    db = NotingDatabase()
    app = cfg.application[0]
    authorizer = FakeAuthorizer(clock, accounts={"cb1818000001": "x"})
    svc = CallbackService(cfg, db, {a.name: authorizer for a in cfg.application}, None,
                          SimpleNamespace(ua=FakeUA()), None, clock)
    svc.accepting = True
    started = []

    def start(session):
        started.append(priority.current())
        return defer.Deferred()

    monkeypatch.setattr(service_module.CallbackSession, "start", start)
    seen = []

    @defer.inlineCallbacks
    def admit():
        mark = priority.admission()
        try:
            d = svc.request_callback(CallbackRequest(
                application=app.name, mode="extended", phone="15550100", account="cb1818000001",
                password="x", destination="18185550123"))
            seen.append(priority.current())
            return (yield d)
        finally:
            priority.restore(mark)

    result = []
    admit().addBoth(result.append)
    clock.advance(0)  # the status writer sends the first row at the end of the reactor turn
    assert started == [priority.RUNNING], result
    assert len(result) == 1 and isinstance(result[0], str)  # the callback's id: accepted
    # Its first status row went through the status writer, from the reactor: running work.
    assert [k for sql, k in db.classes if "callback_sessions" in sql] == [priority.RUNNING]
    assert seen == [priority.ADMISSION]
    assert priority.current() == priority.RUNNING
