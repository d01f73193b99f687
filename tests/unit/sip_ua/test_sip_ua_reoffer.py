"""Offers inside an established call get real RFC 3264 answers (hold, resume, refresh, 488).

Pure SDP properties over every direction pair, then the call on a task.Clock answering the
far end's re-INVITEs and UPDATEs.
"""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from cbserver.sip.sdp import (
    DIRECTIONS,
    SdpError,
    answer_direction,
    answer_reoffer,
    make_offer,
    parse_sdp,
    peer_receives,
)
from cbserver.sip.ua import UserAgent
from tests.unit.sip_ua.fakes import FakeTransport
from tests.unit.sip_ua.uafakes import SDP_ANSWER, FarEnd, Listener, config

OURS = make_offer("198.51.100.7", 30000, session_id=77, version=5)
FAR = make_offer("203.0.113.9", 6000, codecs=("PCMA", "PCMU"), session_id=9, version=1)


def offer(direction: str, base: bytes = FAR) -> bytes:
    return base.replace(b"a=sendrecv", b"a=" + direction.encode())


def sends(d: str) -> bool:
    return d in ("sendrecv", "sendonly")


def receives(d: str) -> bool:
    return d in ("sendrecv", "recvonly")


# -- the direction mapping (RFC 3264 6.1), every offered direction against every local one


@pytest.mark.parametrize("offered,local", list(itertools.product(DIRECTIONS, repeat=2)))
def test_answer_direction_never_sends_or_receives_more_than_both_sides_allow(offered, local):
    answered = answer_direction(offered, local)
    # we send only what they will receive and we are willing to send; and the other way round
    assert sends(answered) == (receives(offered) and sends(local))
    assert receives(answered) == (sends(offered) and receives(local))


@pytest.mark.parametrize(
    "offered,answered",
    [("sendonly", "recvonly"), ("recvonly", "sendonly"), ("inactive", "inactive"), ("sendrecv", "sendrecv")],
)
def test_answer_direction_is_rfc3264_table_when_we_are_willing(offered, answered):
    assert answer_direction(offered) == answered


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_peer_receives_only_when_it_said_sendrecv_or_recvonly(direction):
    # RFC 3264 5.1, from the far end's point of view: sendonly and inactive say "send me nothing"
    assert peer_receives(direction) == (direction in ("sendrecv", "recvonly"))


@given(st.lists(st.sampled_from(DIRECTIONS), min_size=1, max_size=8))
def test_answers_to_a_run_of_offers_keep_origin_and_version_only_moves_on_change(directions):
    previous = OURS
    version = 5
    for d in directions:
        answer = answer_reoffer(offer(d), OURS, previous)
        sd = parse_sdp(answer)
        user, sid, ver = sd.origin.split()[:3]
        assert (user, sid) == ("cbserver", "77")  # RFC 3264 8: same origin, same session
        changed = [ln for ln in answer.split(b"\r\n") if not ln.startswith(b"o=")] != [
            ln for ln in previous.split(b"\r\n") if not ln.startswith(b"o=")
        ]
        version += 1 if changed else 0
        assert int(ver) == version
        (m,) = sd.media
        assert m.port == 30000 and str(sd.connection) == "IN IP4 198.51.100.7"
        assert m.direction() == answer_direction(d)
        assert m.formats == ["8", "101"]  # the offer's first codec that we offered
        previous = answer


def test_the_same_offer_twice_gets_the_same_answer_with_the_same_version():
    first = answer_reoffer(offer("sendonly"), OURS, OURS)
    assert answer_reoffer(offer("sendonly"), OURS, first) == first


def test_an_offer_without_our_codecs_raises():
    g729 = FAR.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 18")
    with pytest.raises(SdpError):
        answer_reoffer(g729, OURS, OURS)


def test_a_codec_we_did_not_offer_is_not_answered():
    pcmu_only = make_offer("198.51.100.7", 30000, codecs=("PCMU",), session_id=77, version=5)
    answer = parse_sdp(answer_reoffer(offer("sendonly"), pcmu_only, pcmu_only))
    assert answer.media[0].formats == ["0", "101"]


# -- the call answers the far end's offers


def answered_call():
    clock, transport = Clock(), FakeTransport()
    ua = UserAgent(transport, clock, config())
    listener = Listener()
    call = ua.place_call("15551234", caller_id="cb1818", display_name=None, sdp_offer=OURS,
                         no_answer_timeout=30, listener=listener)  # fmt: skip
    far = FarEnd(ua, transport)
    far.respond(far.last("INVITE"), 200, SDP_ANSWER)
    return ua, clock, call, listener, far


def finish(ua, clock):
    d = ua.stop()
    for _ in range(200):
        if not clock.getDelayedCalls():
            break
        clock.advance(1)
    assert d.called and clock.getDelayedCalls() == []


def last_ok(far, method):
    return [r for r in far.responses_to(method) if r.status == 200][-1]


def reinvite(far, call, body):
    req = far.request(call, "INVITE", body)
    ok = last_ok(far, "INVITE")
    far.request(call, "ACK", cseq=int(req.headers.get("CSeq").split()[0]))
    return parse_sdp(ok.body)


def test_hold_reinvite_is_answered_recvonly_and_resume_sendrecv_with_versions():
    ua, clock, call, listener, far = answered_call()
    held = reinvite(far, call, offer("sendonly"))
    assert held.media[0].direction() == "recvonly"
    assert held.media[0].port == 30000 and held.origin.split()[1:3] == ["77", "6"]
    assert listener.events[-1] == ("offer", offer("sendonly"))
    # a session refresh with the same offer: same answer, same version (RFC 3264 8)
    again = reinvite(far, call, offer("sendonly"))
    assert again.serialize() == held.serialize()
    resumed = reinvite(far, call, offer("sendrecv"))
    assert resumed.media[0].direction() == "sendrecv" and resumed.origin.split()[2] == "7"
    assert call.local_sdp == resumed.serialize() and call.state == "confirmed"
    finish(ua, clock)


@pytest.mark.parametrize("offered", DIRECTIONS)
def test_update_offer_gets_the_mapped_direction(offered):
    ua, clock, call, listener, far = answered_call()
    far.request(call, "UPDATE", offer(offered))
    assert parse_sdp(last_ok(far, "UPDATE").body).media[0].direction() == answer_direction(offered)
    finish(ua, clock)


def test_unacceptable_reoffer_gets_488_and_changes_nothing():
    ua, clock, call, listener, far = answered_call()
    before = call.local_sdp
    events = list(listener.events)
    far.request(call, "INVITE", FAR.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 18"))
    (resp,) = far.responses_to("INVITE")
    assert resp.status == 488
    assert call.local_sdp == before and listener.events == events and call.state == "confirmed"
    clock.advance(40)  # the transaction may repeat its 488; no 2xx, no BYE for a missing ACK
    assert {r.status for r in far.responses_to("INVITE")} == {488}
    assert far.transport.requests("BYE") == []
    finish(ua, clock)


def test_a_stream_offered_at_port_0_is_answered_at_port_0_not_488():
    """RFC 3264 8.2: the far end removes the audio stream (port 0); the answer rejects it
    (port 0, same m= line) and the call goes on; a later offer brings the stream back."""
    ua, clock, call, listener, far = answered_call()
    removed = FAR.replace(b"m=audio 6000 ", b"m=audio 0 ") + b"m=video 0 RTP/AVP 31\r\n"
    answer = reinvite(far, call, removed)
    assert [(m.media, m.port) for m in answer.media] == [("audio", 0), ("video", 0)]
    assert call.state == "confirmed" and call.local_sdp == answer.serialize()
    back = reinvite(far, call, offer("sendrecv"))
    assert back.media[0].port == 30000 and back.media[0].direction() == "sendrecv"
    assert int(back.origin.split()[2]) == int(answer.origin.split()[2]) + 1  # RFC 3264 8
    finish(ua, clock)


def test_an_offer_with_no_stream_at_all_is_answered_with_none():
    answer = parse_sdp(answer_reoffer(b"v=0\r\no=x 1 1 IN IP4 203.0.113.9\r\ns=-\r\nt=0 0\r\n", OURS, OURS))
    assert answer.media == []


def test_offerless_reinvite_gets_our_current_sdp_unchanged():
    ua, clock, call, listener, far = answered_call()
    held = reinvite(far, call, offer("sendonly"))
    far.request(call, "INVITE")
    assert last_ok(far, "INVITE").body == held.serialize()
    finish(ua, clock)


def test_a_session_refresh_does_not_narrow_the_codecs_we_accept():
    clock, transport = Clock(), FakeTransport()
    ua = UserAgent(transport, clock, config(session_expires=90))
    listener = Listener()
    call = ua.place_call("15551234", caller_id="cb1818", display_name=None, sdp_offer=OURS,
                         no_answer_timeout=30, listener=listener)  # fmt: skip
    far = FarEnd(ua, transport)
    far.respond(far.last("INVITE"), 200, SDP_ANSWER, headers=[("Session-Expires", "90;refresher=uac")])
    pcmu = FAR.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 0 101")
    reinvite(far, call, offer("sendonly", pcmu))  # our answer: PCMU only
    clock.advance(45)  # we refresh with our current SDP (RFC 4028 10)
    refresh = far.last("INVITE")
    assert refresh.body == call.local_sdp
    far.respond(refresh, 200, SDP_ANSWER)
    pcma = reinvite(far, call, offer("sendrecv"))  # PCMA first: we offered it at the start
    assert pcma.media[0].formats == ["8", "101"]
    finish(ua, clock)
