"""Hold and resume (RFC 3264 5.1, 6.1): no RTP to a peer that will not receive, whoever sends.

On a fake UDP reactor and a task.Clock: the session itself, the player, the relay's general
and fast paths, and the leg media reading the direction from the far end's SDP.
"""

import random

import pytest

from cbserver.callback.legmedia import LegMedia, MediaEnvironment
from cbserver.media import rtp
from cbserver.media.clock import MediaClock
from cbserver.media.player import Player
from cbserver.media.ports import PortPool
from cbserver.media.relay import Relay
from cbserver.media.session import RtpSession
from cbserver.sip.sdp import DIRECTIONS, make_offer, peer_receives
from tests.unit.media.fakes import FakePrompts, FakeReactor, rtp_sent

PEER_A = ("192.0.2.1", 30000)  # documentation addresses, fake reactor only
PEER_B = ("192.0.2.2", 30002)


def sessions(n=2):
    reactor = FakeReactor()
    reactor.advance(100.0)
    pool = PortPool(20000, 20099)
    out = []
    for i, peer in enumerate((PEER_A, PEER_B)[:n]):
        s = RtpSession(reactor, reactor, pool, rng=random.Random(i))
        s.open()
        s.configure(peer, 0, "PCMU", 101)
        out.append(s)
    return reactor, out


def sent(reactor, s):
    return rtp_sent(reactor.ports[s.local_port])


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_session_sends_only_while_the_peer_receives(direction):
    reactor, (s,) = sessions(1)
    s.set_remote_direction(direction)
    s.send_audio(b"\x01" * 160)
    assert len(sent(reactor, s)) == (1 if peer_receives(direction) else 0)
    s.close()


def test_resume_opens_a_talkspurt_with_the_hold_time_in_the_timestamp():
    reactor, (s,) = sessions(1)
    s.begin_talkspurt()
    s.send_audio(b"\x01" * 160)
    s.set_remote_direction("sendonly")
    for _ in range(50):  # one second of frames while on hold
        reactor.advance(0.02)
        s.send_audio(b"\x01" * 160)
    s.set_remote_direction("sendrecv")
    s.send_audio(b"\x01" * 160)
    first, after = sent(reactor, s)
    assert after.marker and rtp.seq_delta(after.sequence, first.sequence) == 1
    assert rtp.ts_delta(after.timestamp, first.timestamp) == 8000  # RFC 3550 5.1: real time
    s.close()
    assert reactor.getDelayedCalls() == []


def test_player_on_hold_sends_nothing_and_resumes():
    reactor, (s,) = sessions(1)
    media = MediaClock(reactor)
    player = Player(media, s, FakePrompts({"p": 50}), ["p"])
    player.play()
    reactor.advance(0.2)
    before = len(sent(reactor, s))
    s.set_remote_direction("inactive")
    reactor.advance(0.4)
    assert len(sent(reactor, s)) == before
    s.set_remote_direction("recvonly")  # it receives only: we send again
    reactor.advance(0.2)
    assert len(sent(reactor, s)) > before
    player.stop()
    s.close()


@pytest.mark.parametrize("fast", [True, False])
def test_relay_stops_forwarding_to_a_held_leg_but_not_from_it(fast):
    reactor, (a, b) = sessions(2)
    relay = Relay(reactor, a, b, inactivity_timeout=10.0)
    relay.start()
    if not fast:
        a.relay_to = b.relay_to = None
    seq = iter(range(100, 200))

    def from_a():
        n = next(seq)
        a.datagramReceived(rtp.pack(0, n, 160 * n, 0xA, b"\x01" * 160), PEER_A)

    def from_b():
        n = next(seq)
        b.datagramReceived(rtp.pack(0, n, 160 * n, 0xB, b"\x02" * 160), PEER_B)

    for _ in range(3):
        from_a(), from_b()
        reactor.advance(0.02)
    assert (len(sent(reactor, b)), len(sent(reactor, a))) == (3, 3)
    b.set_remote_direction("sendonly")  # B put us on hold: it sends (music), will not receive
    for _ in range(5):
        from_a(), from_b()
        reactor.advance(0.02)
    assert len(sent(reactor, b)) == 3 and len(sent(reactor, a)) == 8
    b.set_remote_direction("sendrecv")
    from_a()
    to_b = sent(reactor, b)
    assert len(to_b) == 4 and to_b[-1].marker
    relay.stop()
    a.close(), b.close()


def environment():
    reactor = FakeReactor()
    reactor.advance(100.0)
    return MediaEnvironment(clock=reactor, reactor=reactor, pool=PortPool(20000, 20099),
                            media_clock=MediaClock(reactor), bind_address="127.0.0.1",
                            public_address="127.0.0.1", libraries={"app": FakePrompts({"p": 5})})  # fmt: skip


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_leg_media_takes_the_direction_from_the_far_ends_sdp(direction):
    leg = LegMedia(environment(), "app", "c1")
    leg.open()
    leg.answer(make_offer("192.0.2.9", 40000, direction=direction))
    assert leg.session.sending == peer_receives(direction)
    leg.answer(make_offer("192.0.2.9", 40000))  # a later offer restores sendrecv
    assert leg.session.sending
    leg.close()


def test_leg_media_reads_old_style_hold_address_as_do_not_send():
    leg = LegMedia(environment(), "app", "c1")
    leg.open()
    leg.answer(make_offer("192.0.2.9", 40000))
    leg.answer(make_offer("0.0.0.0", 40000))  # RFC 3264 8.4 (RFC 2543 hold)
    assert not leg.session.sending
    leg.close()


def test_a_leg_on_hold_that_sends_nothing_is_not_timed_out_and_resume_restarts_the_clock():
    reactor, (a, b) = sessions(2)
    relay = Relay(reactor, a, b, inactivity_timeout=10.0)
    ends = []
    relay.start().addCallback(ends.append)
    b.set_remote_direction("inactive")  # B holds: neither side sends RTP, B no RTCP either
    for _ in range(30):
        a.datagramReceived(rtp.pack(0, 1, 160, 0xA, b"\x01" * 160), PEER_A)  # A still talks
        reactor.advance(1.0)
    assert ends == []
    b.set_remote_direction("sendrecv")  # resumed: B has 10 s from now to be heard
    for _ in range(9):
        a.datagramReceived(rtp.pack(0, 1, 160, 0xA, b"\x01" * 160), PEER_A)
        reactor.advance(1.0)
    assert ends == []
    reactor.advance(2.0)
    assert [e.value for e in ends] == ["inactive"]
    a.close(), b.close()
    assert reactor.getDelayedCalls() == []
