"""RtpSession on a fake UDP reactor and fake clock: ports, stamping, latching, RTCP."""

import random

from twisted.internet.error import CannotListenError

from cbserver.media import rtcp, rtp
from cbserver.media.ports import PortPool
from cbserver.media.session import RtpSession
from tests.unit.media.fakes import FakeReactor, rtp_sent

SDP_PEER = ("192.0.2.10", 40000)  # documentation address: never contacted, fake reactor only
NAT_PEER = ("198.51.100.7", 61234)


def make(busy=(), seed=1, latch="strict", high=20001):
    """A session whose pool holds one pair (20000/20001) unless ``high`` says more."""
    reactor = FakeReactor(busy)
    reactor.advance(5000.0)
    pool = PortPool(20000, high)
    s = RtpSession(reactor, reactor, pool, "127.0.0.1", call_id="c1", rng=random.Random(seed),
                   latch=latch)
    return reactor, pool, s


def test_open_binds_even_port_and_rtcp_above_and_close_releases():
    reactor, pool, s = make()
    port = s.open()
    assert port == 20000 and set(reactor.ports) == {20000, 20001}
    assert pool.in_use == 1
    s.configure(SDP_PEER, 0, "PCMU", 101)
    s.close()
    assert reactor.ports == {} and pool.in_use == 0
    assert reactor.getDelayedCalls() == []


def test_open_skips_a_pair_the_os_refuses():
    reactor, pool, s = make(busy={20001}, high=20003)
    assert s.open() == 20002
    assert pool.in_use == 1
    s.close()


def test_open_gives_up_when_nothing_binds():
    reactor, pool, s = make(busy=set(range(20000, 20010)), high=20009)
    try:
        s.open()
    except CannotListenError:
        pass
    else:
        raise AssertionError("open() should fail")
    assert pool.in_use == 0


def test_audio_is_stamped_with_ssrc_sequence_timestamp_and_marker_per_talkspurt():
    reactor, pool, s = make()
    s.open()
    s.configure(SDP_PEER, 8, "PCMA")
    s.begin_talkspurt()
    for _ in range(3):
        s.send_audio(b"\xd5" * 160)
        reactor.advance(0.02)
    reactor.advance(1.0)  # one second of silence
    s.begin_talkspurt()
    s.send_audio(b"\xd5" * 160)
    pkts = rtp_sent(reactor.ports[20000])
    assert [p.marker for p in pkts] == [True, False, False, True]
    assert {p.ssrc for p in pkts} == {s.ssrc} and {p.payload_type for p in pkts} == {8}
    seqs = [p.sequence for p in pkts]
    assert [rtp.seq_delta(b, a) for a, b in zip(seqs, seqs[1:], strict=False)] == [1, 1, 1]
    ts = [p.timestamp for p in pkts]
    assert rtp.ts_delta(ts[1], ts[0]) == 160 and rtp.ts_delta(ts[2], ts[1]) == 160
    # RFC 3550 5.1: after silence the timestamp reflects the elapsed 1.06 s
    assert rtp.ts_delta(ts[3], ts[0]) == round(1.06 * 8000)
    assert all(addr == SDP_PEER for _d, addr in reactor.ports[20000].sent)
    s.close()


def test_symmetric_rtp_latches_to_first_valid_source_and_ignores_others():
    # NAT mode (rtp.latch = "nat"): the first source after the answer, from any address.
    reactor, pool, s = make(latch="nat")
    s.open()
    s.configure(SDP_PEER, 0, "PCMU", 101)
    got = []
    s.packet_sink = got.append
    s.datagramReceived(rtp.pack(96, 1, 0, 9, b"x"), ("203.0.113.1", 5))  # PT not negotiated
    assert not s.latched
    s.datagramReceived(rtp.pack(0, 1, 0, 9, b"\xff" * 160), NAT_PEER)
    assert s.latched and s.remote == NAT_PEER and s.remote_rtcp == (NAT_PEER[0], NAT_PEER[1] + 1)
    s.datagramReceived(rtp.pack(0, 2, 160, 9, b"\xff" * 160), ("203.0.113.1", 5))
    s.datagramReceived(b"garbage", NAT_PEER)
    assert [p.sequence for p in got] == [1] and s.packets_dropped == 3
    s.send_audio(b"\xff" * 160)
    assert reactor.ports[20000].sent[-1][1] == NAT_PEER
    s.close()


def test_telephone_events_go_to_the_event_sink():
    reactor, pool, s = make()
    s.open()
    s.configure(SDP_PEER, 0, "PCMU", 101)
    events = []
    s.event_sink = events.append
    s.datagramReceived(rtp.pack(101, 1, 0, 9, b"\x05\x0a\x00\xa0", True), SDP_PEER)
    s.datagramReceived(rtp.pack(0, 2, 0, 9, b"\xff" * 160), SDP_PEER)
    assert [p.payload_type for p in events] == [101]
    s.close()


def test_periodic_receiver_report_and_bye_on_close():
    reactor, pool, s = make()
    s.open()
    s.configure(SDP_PEER, 0, "PCMU")
    for i in range(10):
        s.datagramReceived(rtp.pack(0, 100 + i, i * 160, 77, b"\xff" * 160), SDP_PEER)
        reactor.advance(0.02)
    reactor.advance(8.0)  # past the randomised 2.5-7.5 s interval
    rtcp_port = reactor.ports[20001]
    first = rtcp.parse_compound(rtcp_port.sent[0][0])
    assert rtcp_port.sent[0][1] == (SDP_PEER[0], SDP_PEER[1] + 1)
    assert first.sender_ssrc == s.ssrc and first.blocks[0].ssrc == 77
    assert first.blocks[0].cumulative_lost == 0
    s.close()
    last = rtcp.parse_compound(rtcp_port.sent[-1][0])
    assert last.bye_ssrcs == (s.ssrc,)
    assert reactor.getDelayedCalls() == []


def test_incoming_bye_and_sender_report_are_read():
    reactor, pool, s = make()
    s.open()
    s.configure(SDP_PEER, 0, "PCMU")
    byes = []
    s.on_bye = lambda: byes.append(True)
    for i in range(3):
        s.datagramReceived(rtp.pack(0, i, i * 160, 77, b"\xff" * 160), SDP_PEER)
    s.rtcp_received(rtcp.pack_sr(77, 1_700_000_000.0, 480, 3, 480, []), (SDP_PEER[0], 40001))
    assert s.receiver_stats().lsr != 0
    s.rtcp_received(rtcp.pack_rr(77, []) + rtcp.pack_bye(77), (SDP_PEER[0], 40001))
    assert byes == [True]
    s.close()


def test_forwarded_packets_are_rewritten_into_the_session_stream():
    reactor, pool, s = make()
    s.open()
    s.configure(SDP_PEER, 0, "PCMU", 101)
    s.begin_talkspurt()
    s.send_audio(b"\xff" * 160)  # a prompt frame
    reactor.advance(0.02)
    s.begin_talkspurt()  # relay joins
    for i in range(3):
        s.forward(rtp.RtpPacket(0, 5000 + i, 90000 + 160 * i, 1234, b"\x00" * 160), 0, 160)
        reactor.advance(0.02)
    pkts = rtp_sent(reactor.ports[20000])
    assert {p.ssrc for p in pkts} == {s.ssrc}
    assert [rtp.seq_delta(p.sequence, pkts[0].sequence) for p in pkts] == [0, 1, 2, 3]
    assert [p.marker for p in pkts] == [True, True, False, False]
    assert rtp.ts_delta(pkts[1].timestamp, pkts[0].timestamp) == 160
    assert rtp.ts_delta(pkts[3].timestamp, pkts[1].timestamp) == 320
    s.close()


def test_host_names_and_hold_address_are_not_sent_to_until_latched():
    reactor, pool, s = make(latch="nat")
    s.open()
    for remote in (("media.example.com", 4000), ("0.0.0.0", 4000)):
        s.configure(remote, 0, "PCMU")
        s.send_audio(b"\xff" * 160)
        assert reactor.ports[20000].sent == [] and s.remote is None
    s.datagramReceived(rtp.pack(0, 1, 0, 9, b"\xff" * 160), NAT_PEER)
    s.send_audio(b"\xff" * 160)
    assert reactor.ports[20000].sent[-1][1] == NAT_PEER
    s.close()
