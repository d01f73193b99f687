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
    assert admission.load_state()["refused"] == {"active": 0, "starting": 0, "media": 0, "start_delay": 0,
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
    assert admission.load_state()["refused"] == {"active": 1, "starting": 2, "media": 0, "start_delay": 0,
                                                  "queue": 1}
    assert len(service.pending) == 1  # no refused request reached the service


def test_a_node_short_of_rtp_ports_for_one_more_callback_refuses_it_busy():
    from cbserver.media.ports import PortPool

    clock = task.Clock()
    service = SlowService(clock)
    admission = Admission(service, PassLimiter(), None, lambda: True,
                          LimitsConfig(start_delay_target=0.4))
    admission.media = PortPool(40000, 40011)  # six pairs: three callbacks of two legs
    for _ in range(2):
        admission.start(REQ)  # two starting
    service.active = 0
    admission.start(REQ)  # the third: pairs for both its legs remain
    assert len(service.pending) == 3
    assert refuse(admission) == "busy"  # a fourth would find no pair for its second leg
    service.pending.pop().callback(None)
    service.active = 2  # two of them now running, one still starting
    assert refuse(admission) == "busy"
    assert admission.load_state()["refused"]["media"] == 2
    service.active = 1  # one ended: its pairs are free again
    service.pending.pop().callback(None)
    admission.start(REQ)
    assert len(service.pending) == 2
