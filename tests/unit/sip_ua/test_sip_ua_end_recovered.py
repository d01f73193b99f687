"""``UserAgent.end_recovered``: a BYE for a dialog another process left up (crash recovery)."""

import json

from twisted.internet.task import Clock

from cbserver.sip.message import parse_name_addr
from cbserver.sip.ua import RECOVERY_CSEQ_GAP, UserAgent
from tests.unit.sip_ua.fakes import FakeTransport
from tests.unit.sip_ua.uafakes import SDP_ANSWER, SDP_OFFER, FarEnd, Listener, config


def answered_call():
    """A call answered on one UA: what its process would have stored."""
    clock, transport = Clock(), FakeTransport()
    ua = UserAgent(transport, clock, config())
    call = ua.place_call("15551234", caller_id="cb1818", sdp_offer=SDP_OFFER, no_answer_timeout=30,
                         listener=Listener())
    far = FarEnd(ua, transport)
    inv = far.last("INVITE")
    far.respond(inv, 200, SDP_ANSWER)
    return call, inv


def test_dialog_state_is_none_before_the_answer_and_json_after():
    clock, transport = Clock(), FakeTransport()
    ua = UserAgent(transport, clock, config())
    call = ua.place_call("1555", caller_id="cb", sdp_offer=SDP_OFFER, no_answer_timeout=30,
                         listener=Listener())
    assert call.dialog_state() is None
    call, _ = answered_call()
    state = json.loads(json.dumps(call.dialog_state()))
    assert state["dialog"]["call_id"] == call.call_id
    assert state["destination"] == ["127.0.0.1", 5080]
    assert state["transport"] == "UDP"


def test_another_ua_ends_the_stored_dialog_with_a_bye_that_fires_when_answered():
    call, inv = answered_call()
    stored = json.loads(json.dumps(call.dialog_state()))
    # A new process (another node, or this one restarted): its own UA and transport.
    clock, transport = Clock(), FakeTransport(host="127.0.0.2")
    ua = UserAgent(transport, clock, config())
    d = ua.end_recovered(stored["dialog"], stored["destination"])
    assert not d.called
    bye, dest = transport.sent[-1]
    assert bye.method == "BYE" and dest == ("127.0.0.1", 5080)
    # RFC 3261 12.2.1.1: the dialog's identifiers, and a CSeq above any the dead process used.
    assert bye.headers.get("Call-ID") == call.call_id
    assert parse_name_addr(bye.headers.get("From")).tag == parse_name_addr(inv.headers.get("From")).tag
    assert parse_name_addr(bye.headers.get("To")).tag == "far"
    assert bye.uri == "sip:far@127.0.0.1:5080"  # the remote target (the 2xx's Contact)
    number = int(bye.headers.get("CSeq").split()[0])
    assert number == stored["dialog"]["local_seq"] + RECOVERY_CSEQ_GAP + 1
    FarEnd(ua, transport).respond(bye, 200)
    assert d.called and d.result == 200


def test_a_bye_nobody_answers_fires_none_after_timer_f():
    call, _ = answered_call()
    stored = call.dialog_state()
    clock, transport = Clock(), FakeTransport()
    ua = UserAgent(transport, clock, config())
    d = ua.end_recovered(stored["dialog"], stored["destination"])
    clock.pump([0.5] * 80)  # 64*T1 = 32 s
    assert d.called and d.result is None
    assert len(transport.requests("BYE")) > 1  # retransmitted over UDP meanwhile
