"""The user agent over a fake transport and a task.Clock: call flows end to end."""

import pytest
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from cbserver.sip.auth import _split_params
from cbserver.sip.message import parse_name_addr, parse_via
from cbserver.sip.ua import CallError, ICallListener, UserAgent
from tests.unit.sip_ua.fakes import FakeTransport
from tests.unit.sip_ua.uafakes import SDP_ANSWER, SDP_OFFER, FarEnd, Listener, config


def setup(no_answer_timeout=30, **kw):
    clock, transport = Clock(), FakeTransport()
    ua = UserAgent(transport, clock, config(**kw))
    listener = Listener()
    call = ua.place_call(
        "15551234",
        caller_id="cb1818",
        display_name="Call Back",
        sdp_offer=SDP_OFFER,
        extra_headers=[("X-Leg", "A")],
        no_answer_timeout=no_answer_timeout,
        listener=listener,
    )
    return ua, clock, transport, call, listener, FarEnd(ua, transport)


def finish(ua, clock):
    """Stop the UA and let every transaction run out; nothing may stay scheduled."""
    d = ua.stop()
    for _ in range(200):
        if not clock.getDelayedCalls():
            break
        clock.advance(1)
    assert d.called
    assert clock.getDelayedCalls() == []


def answer(far):
    inv = far.last("INVITE")
    far.respond(inv, 180)
    far.respond(inv, 200, SDP_ANSWER)
    return inv


def test_listener_fake_provides_the_interface():
    assert verifyObject(ICallListener, Listener())


def test_invite_carries_identity_contact_and_offer():
    ua, clock, transport, call, listener, far = setup()
    inv, dest = transport.sent[0]
    assert dest == ("127.0.0.1", 5080)
    assert inv.method == "INVITE" and inv.uri == "sip:15551234@127.0.0.1:5080"
    frm = parse_name_addr(inv.headers.get("From"))
    assert frm.display == '"Call Back"' and frm.uri.user == "cb1818"
    assert frm.uri.host == "cb.example" and frm.tag
    assert parse_name_addr(inv.headers.get("P-Asserted-Identity")).uri.user == "cb1818"
    assert inv.headers.get("Contact") == "<sip:cbuser@127.0.0.1:5070>"
    via = parse_via(inv.headers.get("Via"))
    assert "rport" in via.params and via.branch.startswith("z9hG4bK")
    assert inv.headers.get("X-Leg") == "A"
    assert inv.body == SDP_OFFER and inv.headers.get("Call-ID") == call.call_id
    far.respond(inv, 486)
    finish(ua, clock)


def test_answer_flow_ringing_then_answer_then_ack_and_reack():
    ua, clock, transport, call, listener, far = setup()
    inv = far.last("INVITE")
    far.respond(inv, 100)
    far.respond(inv, 180)
    far.respond(inv, 183, SDP_ANSWER)
    ok = far.respond(inv, 200, SDP_ANSWER)
    assert listener.events == [
        ("trying",),
        ("ringing", None),
        ("ringing", SDP_ANSWER),
        ("answered", SDP_ANSWER),
    ]
    assert call.state == "confirmed" and call.remote_sdp == SDP_ANSWER
    ack = far.last("ACK")
    # RFC 3261 13.2.2.4: ACK to the Contact, own branch, the INVITE's CSeq number.
    assert ack.uri == "sip:far@127.0.0.1:5080"
    assert parse_via(ack.headers.get("Via")).branch != parse_via(inv.headers.get("Via")).branch
    assert ack.headers.get("CSeq") == "1 ACK"
    assert parse_name_addr(ack.headers.get("To")).tag == "far"
    ua.sink.response_received(ok, ("127.0.0.1", 5080))  # 2xx retransmission
    assert len(transport.requests("ACK")) == 2
    finish(ua, clock)
    assert listener.events[-1] == ("ended", False, "shutdown")  # far end never answered BYE


@pytest.mark.parametrize("status", [486, 603, 404, 503])
def test_final_error_fails_the_call_and_is_acked_by_the_transaction(status):
    ua, clock, transport, call, listener, far = setup()
    far.respond(far.last("INVITE"), status)
    assert [e[:2] for e in listener.events] == [("failed", status)]
    assert len(transport.requests("ACK")) == 1
    assert call.state == "failed"
    finish(ua, clock)


def test_no_answer_timeout_cancels_and_reports_487():
    ua, clock, transport, call, listener, far = setup()
    inv = far.last("INVITE")
    far.respond(inv, 180)
    clock.advance(30)
    cancel = far.last("CANCEL")
    assert parse_via(cancel.headers.get("Via")).branch == parse_via(inv.headers.get("Via")).branch
    far.respond(cancel, 200)
    far.respond(inv, 487)
    assert listener.events[-1] == ("failed", 487, "no answer")
    finish(ua, clock)


def test_cancel_retransmissions_stop_once_the_invite_is_final():
    ua, clock, transport, call, listener, far = setup()
    inv = far.last("INVITE")
    far.respond(inv, 180)
    call.hangup()
    clock.advance(0.5)  # the CANCEL's 200 was lost: Timer E retransmits it
    assert len(transport.requests("CANCEL")) == 2
    far.respond(inv, 487)
    clock.advance(10)
    assert len(transport.requests("CANCEL")) == 2
    assert listener.events[-1] == ("failed", 487, "cancelled")
    finish(ua, clock)


def test_cancel_waits_for_a_provisional_response():
    ua, clock, transport, call, listener, far = setup()
    inv = far.last("INVITE")
    d = call.hangup()
    assert transport.requests("CANCEL") == []  # RFC 3261 9.1
    far.respond(inv, 180)
    assert len(transport.requests("CANCEL")) == 1
    far.respond(inv, 487)
    assert d.called and listener.events[-1] == ("failed", 487, "cancelled")
    assert call.hangup().called  # idempotent
    finish(ua, clock)


def test_answer_crossing_cancel_is_acked_then_byed():
    ua, clock, transport, call, listener, far = setup()
    inv = far.last("INVITE")
    far.respond(inv, 180)
    call.hangup()
    far.respond(inv, 200, SDP_ANSWER)
    assert len(transport.requests("ACK")) == 1
    assert len(transport.requests("BYE")) == 1
    assert listener.events[-1] == ("failed", 487, "cancelled")
    finish(ua, clock)


def test_proxy_challenge_is_answered_once():
    ua, clock, transport, call, listener, far = setup()
    inv = far.last("INVITE")
    far.respond(inv, 407, headers=[("Proxy-Authenticate", 'Digest realm="trunk", nonce="abc", qop="auth"')])
    inv2 = far.last("INVITE")
    assert inv2 is not inv and inv2.headers.get("CSeq") == "2 INVITE"
    assert inv2.headers.get("From") == inv.headers.get("From")
    auth = _split_params(inv2.headers.get("Proxy-Authorization")[len("Digest ") :])
    assert auth["username"] == "cbuser" and auth["uri"] == inv.uri and auth["nc"] == "00000001"
    far.respond(inv2, 407, headers=[("Proxy-Authenticate", 'Digest realm="trunk", nonce="x"')])
    assert listener.events[-1][:2] == ("failed", 407)
    finish(ua, clock)


def test_challenge_then_answer():
    ua, clock, transport, call, listener, far = setup()
    far.respond(
        far.last("INVITE"),
        401,
        headers=[("WWW-Authenticate", 'Digest realm="t", nonce="n", algorithm=SHA-256')],
    )
    inv2 = far.last("INVITE")
    assert "algorithm=SHA-256" in inv2.headers.get("Authorization")
    far.respond(inv2, 200, SDP_ANSWER)
    assert listener.names() == ["answered"]
    assert far.last("ACK").headers.get("CSeq") == "2 ACK"
    finish(ua, clock)


def test_timer_b_reports_408_and_leaves_nothing_scheduled():
    ua, clock, transport, call, listener, far = setup(no_answer_timeout=60)
    clock.advance(32)
    assert listener.events == [("failed", 408, "Request Timeout")]
    finish(ua, clock)


def test_silent_trunk_past_no_answer_timeout_reports_487_without_cancel():
    ua, clock, transport, call, listener, far = setup(no_answer_timeout=30)
    clock.advance(32)
    # The no-answer timer fired first, but no provisional came, so no CANCEL went out (9.1).
    assert transport.requests("CANCEL") == []
    assert listener.events == [("failed", 487, "no answer")]
    finish(ua, clock)


def test_far_end_bye_ends_the_call():
    ua, clock, transport, call, listener, far = setup()
    answer(far)
    far.request(call, "BYE")
    assert far.responses_to("BYE")[-1].status == 200
    assert listener.events[-1] == ("ended", True, "remote hangup")
    assert call.state == "ended"
    finish(ua, clock)


def test_our_bye_fires_the_deferred_when_answered():
    ua, clock, transport, call, listener, far = setup()
    answer(far)
    d = call.hangup()
    bye = far.last("BYE")
    assert bye.uri == "sip:far@127.0.0.1:5080" and bye.headers.get("CSeq") == "2 BYE"
    assert not d.called
    far.respond(bye, 200)
    assert d.called and listener.events[-1] == ("ended", False, "local hangup")
    finish(ua, clock)


def test_challenged_bye_is_retried_with_credentials():
    ua, clock, transport, call, listener, far = setup()
    answer(far)
    d = call.hangup()
    bye = far.last("BYE")
    far.respond(bye, 407, headers=[("Proxy-Authenticate", 'Digest realm="t", nonce="b", qop="auth"')])
    bye2 = far.last("BYE")
    assert bye2.headers.get("CSeq") == "3 BYE"
    auth = _split_params(bye2.headers.get("Proxy-Authorization")[len("Digest ") :])
    assert auth["uri"] == bye2.uri and auth["nonce"] == "b"
    far.respond(bye2, 200)
    assert d.called and listener.events[-1] == ("ended", False, "local hangup")
    finish(ua, clock)


def test_bye_timeout_still_ends_the_call():
    ua, clock, transport, call, listener, far = setup()
    answer(far)
    d = call.hangup()
    clock.advance(32)
    assert d.called and listener.events[-1] == ("ended", False, "local hangup")
    finish(ua, clock)


def test_reinvite_from_far_end_is_answered_with_a_real_answer_until_acked():
    ua, clock, transport, call, listener, far = setup()
    answer(far)
    new_sdp = SDP_ANSWER.replace(b"6000", b"6002")
    reinv = far.request(call, "INVITE", new_sdp)
    assert listener.events[-1] == ("offer", new_sdp)
    oks = [r for r in far.responses_to("INVITE") if r.status == 200]
    # RFC 3264 8: an answer from our address and port, o= version moved on (it differs
    # from our offer: direction stated), not our first offer sent again
    assert oks and oks[-1].body == (
        b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )
    assert call.local_sdp == oks[-1].body
    clock.advance(0.5)
    clock.advance(1.0)
    assert len([r for r in far.responses_to("INVITE") if r.status == 200]) == 3
    far.request(call, "ACK", cseq=int(reinv.headers.get("CSeq").split()[0]))
    clock.advance(10)
    assert len([r for r in far.responses_to("INVITE") if r.status == 200]) == 3
    assert call.remote_sdp == new_sdp and call.state == "confirmed"
    finish(ua, clock)


def test_reinvite_never_acked_ends_call_with_bye():
    ua, clock, transport, call, listener, far = setup()
    answer(far)
    far.request(call, "INVITE", SDP_ANSWER)
    clock.advance(32)
    assert len(transport.requests("BYE")) == 1
    far.respond(far.last("BYE"), 200)
    assert listener.events[-1] == ("ended", False, "no ACK for 2xx")
    finish(ua, clock)


def test_our_reinvite_update_and_info():
    ua, clock, transport, call, listener, far = setup()
    answer(far)
    new = SDP_OFFER.replace(b"4000", b"4002")
    d = call.reinvite(new)
    rei = far.last("INVITE")
    assert rei.headers.get("CSeq") == "2 INVITE" and rei.body == new
    far.respond(rei, 200, SDP_ANSWER)
    assert d.result == SDP_ANSWER and call.local_sdp == new
    assert far.last("ACK").headers.get("CSeq") == "2 ACK"
    d = call.update(SDP_OFFER)
    far.respond(far.last("UPDATE"), 200, SDP_ANSWER)
    assert d.result == SDP_ANSWER
    d = call.send_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n")
    info = far.last("INFO")
    assert info.headers.get("Content-Type") == "application/dtmf-relay"
    far.respond(info, 415)
    assert isinstance(d.result.value, CallError) and d.result.value.status == 415
    d.addErrback(lambda f: None)
    finish(ua, clock)


def test_info_from_far_end_reaches_the_listener():
    ua, clock, transport, call, listener, far = setup()
    answer(far)
    req = far.request(call, "INFO", headers=[("Content-Type", "application/dtmf-relay")])
    assert req.method == "INFO"
    assert listener.events[-1][0] == "info"
    assert far.responses_to("INFO")[-1].status == 200
    finish(ua, clock)


def test_in_dialog_options_and_out_of_order_cseq():
    ua, clock, transport, call, listener, far = setup()
    answer(far)
    far.request(call, "OPTIONS", cseq=50)
    assert far.responses_to("OPTIONS")[-1].status == 200
    far.request(call, "OPTIONS", cseq=49)
    assert far.responses_to("OPTIONS")[-1].status == 500  # RFC 3261 12.2.2
    finish(ua, clock)


def test_keepalive_481_ends_the_call():
    ua, clock, transport, call, listener, far = setup(keepalive_interval=30)
    answer(far)
    clock.advance(30)
    opt = far.last("OPTIONS")
    far.respond(opt, 200)
    clock.advance(30)
    opt2 = far.last("OPTIONS")
    assert opt2 is not opt
    far.respond(opt2, 481)
    assert listener.events[-1] == ("ended", True, "481 to OPTIONS")
    finish(ua, clock)


def test_keepalive_timeout_ends_the_call_with_bye():
    ua, clock, transport, call, listener, far = setup(keepalive_interval=10)
    answer(far)
    clock.advance(10)
    clock.advance(32)  # OPTIONS Timer F
    assert listener.events[-1] == ("ended", True, "408 to OPTIONS")
    assert len(transport.requests("BYE")) == 1
    finish(ua, clock)


def test_session_timer_we_refresh_at_half_interval():
    ua, clock, transport, call, listener, far = setup(session_expires=1800)
    inv = far.last("INVITE")
    assert inv.headers.get("Session-Expires") == "1800"
    assert "timer" in inv.headers.get("Supported")
    far.respond(inv, 200, SDP_ANSWER, headers=[("Session-Expires", "90;refresher=uac")])
    clock.advance(44.9)
    assert len(transport.requests("INVITE")) == 1
    clock.advance(0.1)
    refresh = far.last("INVITE")
    assert refresh.headers.get("CSeq") == "2 INVITE" and refresh.body == SDP_OFFER
    assert refresh.headers.get("Session-Expires") == "90;refresher=uac"
    far.respond(refresh, 200, SDP_ANSWER, headers=[("Session-Expires", "90;refresher=uac")])
    clock.advance(45)
    assert far.last("INVITE").headers.get("CSeq") == "3 INVITE"
    finish(ua, clock)


def test_session_timer_far_end_refreshes_or_we_bye():
    ua, clock, transport, call, listener, far = setup(session_expires=1800)
    inv = far.last("INVITE")
    far.respond(inv, 200, SDP_ANSWER, headers=[("Session-Expires", "90;refresher=uas")])
    clock.advance(50)
    far.request(call, "UPDATE", headers=[("Session-Expires", "90;refresher=uac"), ("Supported", "timer")])
    upd_ok = far.responses_to("UPDATE")[-1]
    assert upd_ok.status == 200 and upd_ok.headers.get("Session-Expires") == "90;refresher=uac"
    assert upd_ok.headers.get("Require") == "timer"
    clock.advance(59)
    assert transport.requests("BYE") == []
    clock.advance(1)  # 90 - min(32, 30) = 60 s after the refresh
    far.respond(far.last("BYE"), 200)
    assert listener.events[-1] == ("ended", False, "session timer expired")
    finish(ua, clock)


def test_422_retries_with_min_se():
    ua, clock, transport, call, listener, far = setup(session_expires=60)
    far.respond(far.last("INVITE"), 422, headers=[("Min-SE", "120")])
    inv2 = far.last("INVITE")
    assert inv2.headers.get("Session-Expires") == "120"
    far.respond(inv2, 486)
    finish(ua, clock)


@pytest.mark.parametrize("min_se", ["\u00b2", "9" * 5000])
def test_422_with_a_min_se_int_cannot_read_ends_the_call(min_se):
    # Found by fuzzing: str.isdigit() takes "²" and 5000 digits, which int() refuses (ValueError).
    ua, clock, transport, call, listener, far = setup(session_expires=60)
    far.respond(far.last("INVITE"), 422, headers=[("Min-SE", min_se)])
    assert len(transport.requests("INVITE")) == 1  # no retry: the 422 fails the call
    assert listener.events[-1][0] == "failed"
    finish(ua, clock)


def test_stop_cancels_ringing_and_byes_answered_calls():
    clock, transport = Clock(), FakeTransport()
    ua = UserAgent(transport, clock, config())
    far = FarEnd(ua, transport)
    l1, l2 = Listener(), Listener()
    c1 = ua.place_call(
        "1", caller_id="a", display_name=None, sdp_offer=SDP_OFFER, no_answer_timeout=60, listener=l1
    )
    inv1 = far.last("INVITE")
    far.respond(inv1, 200, SDP_ANSWER)
    c2 = ua.place_call(
        "2", caller_id="a", display_name=None, sdp_offer=SDP_OFFER, no_answer_timeout=60, listener=l2
    )
    inv2 = far.last("INVITE")
    far.respond(inv2, 180)
    d = ua.stop()
    far.respond(far.last("BYE"), 200)
    far.respond(inv2, 487)
    assert d.called
    assert l1.events[-1] == ("ended", False, "local hangup")
    assert l2.events[-1] == ("failed", 487, "cancelled")
    assert c1.state == "ended" and c2.state == "failed"
    clock.advance(40)
    assert clock.getDelayedCalls() == []
    with pytest.raises(Exception, match="stopping"):
        ua.place_call(
            "3", caller_id="a", display_name=None, sdp_offer=SDP_OFFER, no_answer_timeout=60, listener=l1
        )


def test_stop_gives_up_after_its_timeout():
    ua, clock, transport, call, listener, far = setup()
    answer(far)
    d = ua.stop()
    clock.advance(5)
    assert d.called and listener.events[-1] == ("ended", False, "shutdown")
    clock.advance(100)
    assert clock.getDelayedCalls() == []


class _Locator:
    """Stands in for cbserver.sip.locate.ServerLocator (same locate(uri) -> targets)."""

    def __init__(self, targets):
        self.targets = targets
        self.asked = []

    def locate(self, uri):
        from cbserver.sip.locate import Target

        self.asked.append(uri)
        return [Target(t, h, p) for t, h, p in self.targets]


def test_failover_to_next_target_after_timer_b():
    clock, transport = Clock(), FakeTransport()
    ua = UserAgent(
        transport,
        clock,
        config(trunk_host="trunk.invalid"),
        locator=_Locator(
            [("TCP", "127.0.0.9", 5060), ("UDP", "127.0.0.1", 5080), ("UDP", "127.0.0.2", 5080)]
        ),
    )
    listener = Listener()
    ua.place_call(
        "1", caller_id="a", display_name=None, sdp_offer=SDP_OFFER, no_answer_timeout=100, listener=listener
    )
    clock.advance(32)
    dests = [d for m, d in transport.sent if m.method == "INVITE"]
    assert ua.locator.asked == ["trunk.invalid:5080"]  # explicit port: no NAPTR/SRV
    assert dests[0] == ("127.0.0.1", 5080) and dests[-1] == ("127.0.0.2", 5080)
    far = FarEnd(ua, transport)
    far.respond(far.last("INVITE"), 200, SDP_ANSWER)
    assert listener.names() == ["answered"]
    finish(ua, clock)


def test_trunk_name_without_locator_fails_503():
    clock, transport = Clock(), FakeTransport()
    ua = UserAgent(transport, clock, config(trunk_host="trunk.invalid"))
    listener = Listener()
    ua.place_call(
        "1", caller_id="a", display_name=None, sdp_offer=SDP_OFFER, no_answer_timeout=10, listener=listener
    )
    assert listener.events == [("failed", 503, "trunk not found")]
    assert transport.sent == []
    finish(ua, clock)


def test_listener_exception_does_not_break_the_call():
    ua, clock, transport, call, listener, far = setup()

    def boom(call, sdp):
        raise RuntimeError("app bug")

    listener.call_answered = boom
    answer(far)
    assert call.state == "confirmed" and len(transport.requests("ACK")) == 1
    finish(ua, clock)
