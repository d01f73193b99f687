"""Player, prompt-and-collect with barge-in, and the relay, on a fake reactor and clock."""

import random

from zope.interface.verify import verifyObject

from cbserver.media import g711, rtp
from cbserver.media.clock import IMediaStream, MediaClock
from cbserver.media.collector import CollectOutcome
from cbserver.media.dtmf import pack_event
from cbserver.media.listen import DtmfInput, prompt_and_collect
from cbserver.media.player import Player, PlayResult
from cbserver.media.ports import PortPool
from cbserver.media.prompts import IPromptLibrary
from cbserver.media.relay import Relay, RelayEnd
from cbserver.media.session import RtpSession
from tests.unit.media.fakes import FakePrompts, FakeReactor, rtp_sent

PEER_A = ("192.0.2.1", 30000)  # documentation addresses, fake reactor only
PEER_B = ("192.0.2.2", 30002)


def setup(n=1):
    reactor = FakeReactor()
    reactor.advance(100.0)
    pool = PortPool(20000, 20099)
    sessions = []
    for i in range(n):
        s = RtpSession(reactor, reactor, pool, rng=random.Random(i))
        s.open()
        sessions.append(s)
    return reactor, MediaClock(reactor), sessions


def test_fake_prompts_implement_the_interface():
    assert verifyObject(IPromptLibrary, FakePrompts({"a": 1}))


def test_player_sends_the_frames_of_every_prompt_in_order_then_fires_done():
    reactor, media, (s,) = setup()
    s.configure(PEER_A, 0, "PCMU")
    lib = FakePrompts({"a": 2, "b": 3})
    player = Player(media, s, lib, ["a", "b"])
    assert verifyObject(IMediaStream, player)
    results = []
    player.play().addCallback(results.append)
    reactor.pump([0.02] * 10)
    assert results == [PlayResult.DONE]
    payloads = [p.payload for p in rtp_sent(reactor.ports[s.local_port])]
    assert payloads == list(lib.frames("a", "PCMU") + lib.frames("b", "PCMU"))
    assert payloads[0] == g711.ulaw_encode(lib.pcm("a")[:320])
    s.close()
    assert reactor.getDelayedCalls() == []


def test_player_stop_and_cancel_interrupt():
    reactor, media, (s,) = setup()
    s.configure(PEER_A, 8, "PCMA")
    lib = FakePrompts({"a": 50})
    p1 = Player(media, s, lib, ["a"])
    r1 = []
    p1.play().addCallback(r1.append)
    reactor.pump([0.02] * 3)
    p1.stop()
    assert r1 == [PlayResult.INTERRUPTED] and p1.frames_sent == 3
    p2 = Player(media, s, lib, ["a"])
    d = p2.play()
    reactor.advance(0.02)
    d.cancel()
    assert d.result == PlayResult.INTERRUPTED
    s.close()
    reactor.advance(0.02)
    assert reactor.getDelayedCalls() == []


def test_player_skips_audio_when_the_clock_falls_far_behind():
    reactor, media, (s,) = setup()
    s.configure(PEER_A, 0, "PCMU")
    player = Player(media, s, FakePrompts({"a": 20}), ["a"])
    player.play()
    reactor.advance(0.02)
    reactor.advance(0.2)  # 10 ticks due at once: 4 run, 6 skipped
    pkts = rtp_sent(reactor.ports[s.local_port])
    assert len(pkts) == 5 and player.frames_sent == 11
    assert rtp.ts_delta(pkts[-1].timestamp, pkts[0].timestamp) == 160 * 10
    player.stop()
    s.close()


def test_prompt_and_collect_barge_in_stops_the_prompt():
    reactor, media, (s,) = setup()
    s.configure(PEER_A, 0, "PCMU", 101)
    inp = DtmfInput()
    inp.attach(s)
    lib = FakePrompts({"enter": 100})
    results = []
    prompt_and_collect(reactor, media, s, lib, inp, ["enter"], max_digits=4).addCallback(
        results.append)
    reactor.pump([0.02] * 5)
    sent_before = len(reactor.ports[s.local_port].sent)
    for i, ev in enumerate([4, 2, 11]):
        s.datagramReceived(
            rtp.pack(101, 10 + i, 800 * i, 55, pack_event(ev, True, 10, 320), True), PEER_A)
        reactor.advance(0.02)
    assert results[0].digits == "42" and results[0].outcome is CollectOutcome.TERMINATOR
    reactor.pump([0.02] * 10)
    assert len(reactor.ports[s.local_port].sent) == sent_before  # prompt stopped at the first digit
    s.close()
    assert reactor.getDelayedCalls() == []


def test_prompt_and_collect_first_digit_timeout_starts_after_the_prompt():
    reactor, media, (s,) = setup()
    s.configure(PEER_A, 0, "PCMU", 101)
    inp = DtmfInput()
    inp.attach(s)
    results = []
    prompt_and_collect(reactor, media, s, FakePrompts({"p": 50}), inp, ["p"], max_digits=4,
                       first_digit_timeout=2.0).addCallback(results.append)
    reactor.pump([0.02] * 51)  # one second of prompt (and float slack)
    assert len(reactor.ports[s.local_port].sent) == 50
    reactor.pump([0.1] * 19)
    assert results == []
    reactor.pump([0.1] * 2)
    assert results[0].outcome is CollectOutcome.FIRST_DIGIT_TIMEOUT
    s.close()
    assert reactor.getDelayedCalls() == []


def joined(codec_a="PCMU", codec_b="PCMU"):
    reactor, media, (a, b) = setup(2)
    a.configure(PEER_A, g711.STATIC_PAYLOAD_TYPES[codec_a], codec_a, 101)
    b.configure(PEER_B, g711.STATIC_PAYLOAD_TYPES[codec_b], codec_b, 96)
    relay = Relay(reactor, a, b, inactivity_timeout=10.0)
    ends = []
    relay.start().addCallback(ends.append)
    return reactor, a, b, relay, ends


def test_relay_forwards_both_ways_with_rewriting_and_event_pass_through():
    reactor, a, b, relay, ends = joined()
    for i in range(3):
        a.datagramReceived(rtp.pack(0, 100 + i, 1000 + 160 * i, 0xA, b"\x01" * 160), PEER_A)
        b.datagramReceived(rtp.pack(0, 7 + i, 50 + 160 * i, 0xB, b"\x02" * 160), PEER_B)
        reactor.advance(0.02)
    a.datagramReceived(rtp.pack(101, 103, 1480, 0xA, pack_event(5, False, 10, 160), True), PEER_A)
    to_b = rtp_sent(reactor.ports[b.local_port])
    to_a = rtp_sent(reactor.ports[a.local_port])
    assert [p.payload for p in to_b[:3]] == [b"\x01" * 160] * 3
    assert [p.payload for p in to_a] == [b"\x02" * 160] * 3
    assert {p.ssrc for p in to_b} == {b.ssrc} and {p.ssrc for p in to_a} == {a.ssrc}
    assert to_b[0].marker and not to_b[1].marker
    assert to_b[3].payload_type == 96 and to_b[3].payload == pack_event(5, False, 10, 160)
    assert [rtp.seq_delta(p.sequence, to_b[0].sequence) for p in to_b] == [0, 1, 2, 3]
    assert relay.forwarded == 7
    relay.stop()
    assert ends == [RelayEnd.STOPPED]
    a.close(), b.close()
    assert reactor.getDelayedCalls() == []


def test_the_relay_fast_path_sends_the_same_bytes_as_the_general_path():
    # Across a sequence-number and a timestamp wrap, with a marker and an SSRC change.
    packets = [((65534 + i) & 0xFFFF, (0xFFFFFF00 + 160 * i) & 0xFFFFFFFF, 0xA, i == 3)
               for i in range(5)]
    packets += [(40 + i, 9000 + 160 * i, 0xD, False) for i in range(4)]
    sent, taken = [], []
    for fast in (True, False):
        reactor, a, b, relay, _ = joined()
        if not fast:
            a.relay_to = None  # every packet through packet_sink, RtpPacket and forward()
        calls = []

        def spy(*args, calls=calls, real=b.relay_audio):
            calls.append(args[1])
            real(*args)

        b.relay_audio = spy
        for seq, ts, ssrc, marker in packets:
            a.datagramReceived(rtp.pack(0, seq, ts, ssrc, bytes([seq & 0xFF]) * 160, marker), PEER_A)
            reactor.advance(0.02)
        sent.append([data for data, _addr in reactor.ports[b.local_port].sent])
        taken.append(calls)
        assert relay.forwarded == len(packets)
        relay.stop()
        a.close(), b.close()
    assert sent[0] == sent[1] and len(sent[0]) == len(packets)
    # The first packet of each source anchors the mapping through the general path.
    assert taken[0] == [p[0] for p in packets if p[0] not in (65534, 40)] and taken[1] == []


def test_relay_transcodes_between_pcmu_and_pcma():
    reactor, a, b, relay, ends = joined("PCMU", "PCMA")
    pcm = (1000).to_bytes(2, "little", signed=True) * 160
    a.datagramReceived(rtp.pack(0, 1, 0, 0xA, g711.ulaw_encode(pcm)), PEER_A)
    (out,) = rtp_sent(reactor.ports[b.local_port])
    assert out.payload_type == 8
    assert out.payload == g711.ulaw_to_alaw(g711.ulaw_encode(pcm))
    relay.stop()
    a.close(), b.close()


def test_source_change_after_prompt_keeps_sequence_continuous():
    reactor, media, (a, b) = setup(2)
    a.configure(PEER_A, 0, "PCMU")
    b.configure(PEER_B, 0, "PCMU")
    Player(media, a, FakePrompts({"wait": 3}), ["wait"]).play()
    reactor.pump([0.02] * 3)
    relay = Relay(reactor, a, b, inactivity_timeout=10.0)
    relay.start()
    reactor.advance(0.5)
    for i in range(2):
        b.datagramReceived(rtp.pack(0, 9000 + i, 777 + 160 * i, 0xB, b"\x02" * 160), PEER_B)
    b.datagramReceived(rtp.pack(0, 1, 5, 0xC, b"\x03" * 160), PEER_B)  # new SSRC at B
    to_a = rtp_sent(reactor.ports[a.local_port])
    assert [rtp.seq_delta(p.sequence, to_a[0].sequence) for p in to_a] == [0, 1, 2, 3, 4, 5]
    assert [p.marker for p in to_a] == [True, False, False, True, False, True]
    ts = [p.timestamp for p in to_a]
    assert rtp.ts_delta(ts[3], ts[2]) >= 160 + 4000  # the half second between prompt and relay
    assert rtp.ts_delta(ts[5], ts[4]) == 160
    relay.stop()
    a.close(), b.close()


def test_inactivity_ends_the_relay_when_a_leg_goes_quiet():
    reactor, a, b, relay, ends = joined()
    # Both legs talk for one second, then A goes quiet while B keeps talking.
    while reactor.seconds() < 120.0 and not ends:
        b.datagramReceived(rtp.pack(0, 1, 0, 0xB, b"\x02" * 160), PEER_B)
        if reactor.seconds() <= 101.0:
            a.datagramReceived(rtp.pack(0, 1, 0, 0xA, b"\x01" * 160), PEER_A)
        reactor.advance(0.1)
    assert ends == [RelayEnd.INACTIVE]
    assert 111.0 <= reactor.seconds() <= 111.2  # A last heard at 101.0, timeout 10 s
    a.close(), b.close()
    assert reactor.getDelayedCalls() == []


def test_rtcp_keeps_a_quiet_leg_alive():
    reactor, a, b, relay, ends = joined()
    from cbserver.media import rtcp
    for _ in range(300):
        a.rtcp_received(rtcp.pack_rr(0xA, []), (PEER_A[0], PEER_A[1] + 1))
        b.rtcp_received(rtcp.pack_rr(0xB, []), (PEER_B[0], PEER_B[1] + 1))
        reactor.advance(0.1)
    assert ends == []
    relay.stop()
    a.close(), b.close()


def test_rtcp_bye_alone_does_not_end_the_relay_before_its_grace():
    # A phone sends RTCP BYE with its SIP BYE, which may arrive later: the SIP dialog decides.
    reactor, a, b, relay, ends = joined()
    from cbserver.media import rtcp
    start = reactor.seconds()
    b.rtcp_received(rtcp.pack_rr(0xB, []) + rtcp.pack_bye(0xB), (PEER_B[0], PEER_B[1] + 1))
    assert ends == [] and relay.lost_leg is None
    while not ends:
        a.datagramReceived(rtp.pack(0, 1, 0, 0xA, b"\x01" * 160), PEER_A)
        reactor.advance(0.1)
    # No SIP BYE (the relay's owner would have stopped it) and no RTP from B: media lost.
    assert ends == [RelayEnd.BYE] and relay.lost_leg == "B"
    assert start + relay.bye_grace <= reactor.seconds() <= start + relay.bye_grace + 0.11
    a.close(), b.close()
    assert reactor.getDelayedCalls() == []


def test_rtp_after_rtcp_bye_keeps_the_relay_up():
    reactor, a, b, relay, ends = joined()
    from cbserver.media import rtcp
    b.rtcp_received(rtcp.pack_rr(0xB, []) + rtcp.pack_bye(0xB), (PEER_B[0], PEER_B[1] + 1))
    for i in range(80):  # 8 s, past the grace: B's new source keeps talking
        a.datagramReceived(rtp.pack(0, 1 + i, 160 * i, 0xA, b"\x01" * 160), PEER_A)
        b.datagramReceived(rtp.pack(0, 1 + i, 160 * i, 0xC, b"\x02" * 160), PEER_B)
        reactor.advance(0.1)
    assert ends == []
    relay.stop()
    assert ends == [RelayEnd.STOPPED]
    a.close(), b.close()
    assert reactor.getDelayedCalls() == []


def test_inactivity_names_the_quiet_leg():
    reactor, a, b, relay, ends = joined()
    while not ends:
        b.datagramReceived(rtp.pack(0, 1, 0, 0xB, b"\x02" * 160), PEER_B)
        reactor.advance(0.5)
    assert ends == [RelayEnd.INACTIVE] and relay.lost_leg == "A"
    a.close(), b.close()


def test_repeating_player_loops_until_stopped():
    reactor, media, (s,) = setup()
    s.configure(PEER_A, 0, "PCMU")
    lib = FakePrompts({"wait": 3})
    player = Player(media, s, lib, ["wait"], repeat=True)
    results = []
    player.play().addCallback(results.append)
    reactor.pump([0.02] * 8)
    assert results == [] and player.frames_sent == 8
    payloads = [p.payload for p in rtp_sent(reactor.ports[s.local_port])]
    frames = lib.frames("wait", "PCMU")
    assert payloads == list(frames * 3)[:8]
    player.stop()
    assert results == [PlayResult.INTERRUPTED]
    s.close()
    reactor.advance(0.02)
    assert reactor.getDelayedCalls() == []


def test_skips_cross_prompt_boundaries_and_whole_loops():
    reactor, media, (s,) = setup()
    s.configure(PEER_A, 0, "PCMU")
    lib = FakePrompts({"a": 2, "b": 3})
    player = Player(media, s, lib, ["a", "b"], repeat=True)
    player.play()
    sent = rtp_sent  # alias for brevity
    player.next_frame()                   # a[0]
    player.frames_skipped(2 + 5 * 2)      # a[1], b[0] and two whole loops
    player.next_frame()                   # b[1]
    pkts = sent(reactor.ports[s.local_port])
    assert [p.payload for p in pkts] == [lib.frames("a", "PCMU")[0], lib.frames("b", "PCMU")[1]]
    assert rtp.ts_delta(pkts[1].timestamp, pkts[0].timestamp) == 160 * 13
    assert player.frames_sent == 14
    player.stop()
    s.close()
