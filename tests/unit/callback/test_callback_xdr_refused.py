"""A refused xDR ends the session: status ended, slot and holds released, the xDR on the log."""

import json

import pytest
from twisted.internet import defer
from twisted.logger import LogLevel
from zope.interface import implementer

from cbserver.billing.xdr import ICallRecorder, XdrRejected
from cbserver.callback.states import State
from cbserver.web.metrics import Metrics
from tests.unit.callback.test_callback_session import Harness


@implementer(ICallRecorder)
class RefusingRecorder:
    """Stores legA, refuses legB with ``error``."""

    def __init__(self, error):
        self.error = error
        self.records = []

    def record(self, leg):
        self.records.append(leg)
        return defer.fail(self.error) if leg.leg == "B" else defer.succeed(None)




@pytest.mark.parametrize("error, reason", [
    (XdrRejected("new row violates check constraint"), "rejected"),
    (OSError(28, "No space left on device"), "spool_failed"),
])
def test_a_refused_xdr_ends_the_session_and_logs_the_money(logged, error, reason):
    h = Harness()
    metrics = Metrics()
    h.session.ctx.metrics = metrics
    h.session.ctx.recorder = recorder = RefusingRecorder(error)
    h.a.answer()
    h.b.answer()
    h.clock.advance(42)
    h.b.bye()
    s = h.session
    assert s.state is State.ENDED and s.status == "ended"
    assert h.changes[-1] == "ended"  # the final row: the concurrency slot is free
    assert h.final and h.final[0]["status"] == "ended" and h.final[0]["charges"] is None
    assert h.final[0]["cause"]["code"] == "legb_hung_up"
    assert h.authorizer.released == ["s1"]  # the refused leg's reservation too
    assert s.shutdown().called  # the service's stop does not wait for it for ever
    h.assert_clean()
    lines = [e for e in logged if e.get("log_format", "").startswith("xDRs refused")]
    assert len(lines) == 1 and lines[0]["log_level"] == LogLevel.error
    assert lines[0]["callback_id"] == "s1" and "log_failure" not in lines[0]
    xdrs = json.loads(lines[0]["xdrs"])  # the money, in full, on the line
    legb = recorder.records[1]
    assert {"leg": "B", "duration": 42, "amount": format(legb.amount, "f")}.items() <= \
        [x for x in xdrs if x["leg"] == "B"][0].items()
    assert [x["leg"] for x in xdrs] == ["A", "B"] and legb.amount > 0
    assert metrics.registry.get_sample_value("cbserver_xdr_refused_total",
                                             {"reason": reason}) == 1
