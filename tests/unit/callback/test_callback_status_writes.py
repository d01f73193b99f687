"""The service stores each callback's status with one write in flight, newest state last."""

import json
from types import SimpleNamespace

from twisted.internet import defer

from cbserver.callback.service import CallbackService


class SlowDb:
    """runOperation returns Deferreds the test fires by hand."""

    def __init__(self):
        self.writes = []

    def runOperation(self, sql, params):
        d = defer.Deferred()
        self.writes.append((json.loads(params[1]), d))
        return d


class Session:
    def __init__(self):
        self.id = "s1"
        self.account_id = "cb1"
        self.b = SimpleNamespace(number="1818")
        self.status = "calling_you"

    def as_dict(self):
        return {"id": self.id, "status": self.status}


def service(db):
    cfg = SimpleNamespace(application=())
    return CallbackService(cfg, db, {}, None, None, None, None)


def test_changes_during_a_write_are_coalesced_into_one_write_of_the_newest_state():
    db = SlowDb()
    svc = service(db)
    s = Session()
    svc._changed(s)
    for status in ("answered", "calling_destination", "connected"):
        s.status = status
        svc._changed(s)
    assert [w[0]["status"] for w in db.writes] == ["calling_you"]
    settled = []
    svc._settled("s1").addCallback(settled.append)
    db.writes[0][1].callback(None)
    assert [w[0]["status"] for w in db.writes] == ["calling_you", "connected"]
    assert settled == []
    db.writes[1][1].callback(None)
    assert settled == [None]
    assert svc._settled("s1").called


def test_a_failed_write_does_not_stop_later_ones():
    db = SlowDb()
    svc = service(db)
    s = Session()
    svc._changed(s)
    s.status = "ended"
    svc._changed(s)
    db.writes[0][1].errback(RuntimeError("database away"))
    assert [w[0]["status"] for w in db.writes] == ["calling_you", "ended"]
    db.writes[1][1].callback(None)
    assert svc._settled("s1").called
