"""Busy refusals counted by reason (``Admission.load_state()["refused"]``, ``/readyz``)."""

from __future__ import annotations

from twisted.internet import task

from cbserver.callback.admission import Admission
from cbserver.callback.api import CallbackRefused, CallbackRequest
from cbserver.config import LimitsConfig
from tests.unit.callback.test_loadgate import PassLimiter, SlowService

REQ = CallbackRequest(application="Web callback", mode="simple", phone="15550100")


def refuse(admission) -> str:
    """Start one request that must be refused; its code."""
    out = []
    admission.start(REQ).addErrback(lambda f: out.append(f.trap(CallbackRefused) and f.value.code))
    assert out, "the request was not refused"
    return out[0]


def test_each_busy_refusal_is_counted_under_the_rule_that_refused_it():
    clock = task.Clock()
    service = SlowService(clock)
    admission = Admission(service, PassLimiter(), None, lambda: True,
                          LimitsConfig(node_max_active=5, node_max_starting=2,
                                       start_delay_target=0.4))
    assert admission.load_state()["refused"] == {"active": 0, "starting": 0, "start_delay": 0,
                                                  "queue": 0}
    service.active = 5
    assert refuse(admission) == "busy"
    service.active = 0
    admission.start(REQ)
    admission.start(REQ)  # two starting: at node_max_starting
    assert refuse(admission) == "busy" and refuse(admission) == "busy"
    admission.gate.queue_delay = lambda: 1.0  # a new start would queue 1 s for the database
    service.pending.pop().callback(None)
    assert refuse(admission) == "busy"
    assert admission.load_state()["refused"] == {"active": 1, "starting": 2, "start_delay": 0,
                                                  "queue": 1}
    assert len(service.pending) == 1  # no refused request reached the service
