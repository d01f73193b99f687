"""Issue 14 items 1 and 2 underneath the attack tests: who may latch a leg, whose RTCP is
read, and malformed RTCP as the parser's own error (fake reactor, fake clock)."""

import random

import pytest

from cbserver.media import rtcp, rtp
from cbserver.media.ports import PortPool
from cbserver.media.session import RtpSession
from tests.unit.media.fakes import FakeReactor

SDP_PEER = ("192.0.2.10", 40000)  # documentation addresses: fake reactor only
SAME_HOST_OTHER_PORT = ("192.0.2.10", 51000)
STRANGER = ("203.0.113.66", 40000)


def make(latch="strict"):
    reactor = FakeReactor(())
    reactor.advance(5000.0)
    s = RtpSession(reactor, reactor, PortPool(20000, 20001), "127.0.0.1", call_id="h",
                   rng=random.Random(3), latch=latch)
    s.open()
    return reactor, s


def audio(seq, ssrc=9):
    return rtp.pack(0, seq, 160 * seq, ssrc, b"\xff" * 160)


@pytest.mark.parametrize("latch", ["strict", "nat"])
def test_nothing_latches_before_the_answer(latch):
    reactor, s = make(latch)
    got = []
    s.packet_sink = got.append
    for seq in range(5):
        s.datagramReceived(audio(seq), STRANGER)
        s.datagramReceived(audio(seq), SDP_PEER)
    assert not s.latched and s.remote is None and got == [] and s.strangers_dropped == 10
    s.send_audio(b"\xff" * 160)  # a prompt before the answer goes nowhere
    assert reactor.ports[20000].sent == []
    s.close()


def test_strict_mode_latches_only_to_the_answered_address():
    reactor, s = make("strict")
    s.configure(SDP_PEER, 0, "PCMU", 101)
    s.datagramReceived(audio(1), STRANGER)
    assert not s.latched and s.remote == SDP_PEER
    s.datagramReceived(audio(2), SAME_HOST_OTHER_PORT)  # symmetric RTP from another port
    assert s.latched and s.remote == SAME_HOST_OTHER_PORT
    s.datagramReceived(audio(3), STRANGER)
    s.datagramReceived(audio(4), SDP_PEER)  # once latched, only that source
    assert s.packets_received == 1 and s.remote == SAME_HOST_OTHER_PORT
    s.close()


def test_nat_mode_latches_the_first_source_after_the_answer_then_only_it():
    reactor, s = make("nat")
    s.datagramReceived(audio(1), STRANGER)  # before the answer: ignored even in NAT mode
    s.configure(SDP_PEER, 0, "PCMU", 101)
    s.datagramReceived(audio(2), STRANGER)
    assert s.latched and s.remote == STRANGER
    s.datagramReceived(audio(3), SDP_PEER)
    assert s.packets_received == 1 and s.remote == STRANGER
    s.close()


def test_unknown_latch_mode_is_refused():
    reactor = FakeReactor(())
    with pytest.raises(ValueError):
        RtpSession(reactor, reactor, PortPool(20000, 20001), latch="anyone")


def test_rtcp_bye_is_read_only_from_the_media_peer():
    reactor, s = make("strict")
    byes = []
    s.on_bye = lambda: byes.append(True)
    bye = rtcp.pack_rr(77, []) + rtcp.pack_bye(77)
    s.rtcp_received(bye, (SDP_PEER[0], SDP_PEER[1] + 1))  # before the answer: nobody
    s.configure(SDP_PEER, 0, "PCMU", 101)
    s.rtcp_received(bye, (STRANGER[0], STRANGER[1] + 1))
    s.rtcp_received(bye, (SDP_PEER[0], 6000))  # the peer's host, a port that is not its RTCP
    assert byes == [] and s.rtcp_dropped == 3
    s.datagramReceived(audio(1, ssrc=77), SAME_HOST_OTHER_PORT)
    s.rtcp_received(bye, (STRANGER[0], SAME_HOST_OTHER_PORT[1] + 1))
    assert byes == []
    s.rtcp_received(bye, (SAME_HOST_OTHER_PORT[0], SAME_HOST_OTHER_PORT[1] + 1))  # RFC 3550 11
    s.rtcp_received(bye, SAME_HOST_OTHER_PORT)  # RFC 5761 rtcp-mux
    s.rtcp_received(bye, (SDP_PEER[0], SDP_PEER[1] + 1))  # the port SDP gave for RTCP
    assert byes == [True, True, True]
    s.close()


def test_rtcp_before_latching_comes_from_the_sdp_rtcp_or_rtp_address():
    reactor, s = make("strict")
    s.configure(SDP_PEER, 0, "PCMU", 101, remote_rtcp=(SDP_PEER[0], 45000))  # RFC 3605 a=rtcp
    byes = []
    s.on_bye = lambda: byes.append(True)
    bye = rtcp.pack_rr(77, []) + rtcp.pack_bye(77)
    s.rtcp_received(bye, (SDP_PEER[0], SDP_PEER[1] + 1))  # not what SDP said
    s.rtcp_received(bye, (SDP_PEER[0], 45000))
    s.rtcp_received(bye, SDP_PEER)
    assert byes == [True, True]
    s.close()


@pytest.mark.parametrize("data", [
    b"\x80\xc9\x00\x00",  # RR, length 0: no room for the sender SSRC
    b"\x80\xc8\x00\x01\x00\x00\x00\x01",  # SR with an SSRC and no sender info
    b"\x81\xc9\x00\x01\x00\x00\x00\x01",  # RR claiming one block, none there
    b"\x81\xcb\x00\x00",  # BYE claiming one source, none there
    b"\x80\xc9\x00\x05",  # length past the datagram
    b"\x40\xc9\x00\x00",  # version 1
    b"\x80",
])
def test_malformed_rtcp_raises_the_parsers_own_error(data):
    with pytest.raises(rtcp.RtcpError):
        rtcp.parse_compound(data)


def test_malformed_rtcp_at_a_session_is_counted_not_raised():
    reactor, s = make("strict")
    s.configure(SDP_PEER, 0, "PCMU", 101)
    for _ in range(100):
        s.rtcp_received(b"\x80\xc9\x00\x00", (SDP_PEER[0], SDP_PEER[1] + 1))
        s.datagramReceived(b"\x80\xc9\x00\x00", SDP_PEER)  # RFC 5761 mux path
    assert s.rtcp_dropped == 200 and s.last_rtcp is None
    s.close()


@pytest.mark.parametrize("data", [b"", b"\x80" * 11, b"\x90" + b"\x00" * 11, b"\xa0" + b"\x00" * 11,
                                  b"\x8f" + b"\x00" * 11, b"\x40" + b"\x00" * 11])
def test_malformed_rtp_raises_the_parsers_own_error(data):
    with pytest.raises(rtp.RtpError):
        rtp.unpack(data)
