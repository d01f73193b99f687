"""Hold and resume against sipp as the trunk: the answers on the wire and the RTP we send.

sipp answers our INVITE with its media on a UDP socket this test owns, then re-INVITEs with
``a=sendonly`` (hold) and later ``a=sendrecv`` (resume). The scenario fails unless our 200s say
``a=recvonly`` then ``a=sendrecv`` (RFC 3264 6.1); the test counts the RTP packets our leg
media (a real LegMedia playing a prompt on the real reactor) sends to that socket: some before
the hold, none while held, some again after the resume.
"""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from zope.interface import implementer

from cbserver.callback.legmedia import LegMedia, MediaEnvironment
from cbserver.media.clock import MediaClock
from cbserver.media.ports import PortPool
from cbserver.sip.sdp import negotiate, streams_removed
from cbserver.sip.ua import ICallListener
from tests.integration.sip_sipp.sipp_harness import SIPP, SippTrunk, make_service, with_timeout
from tests.unit.media.fakes import FakePrompts

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp (Debian package sip-tester) is not on PATH"),
]

SLACK = 0.1  # seconds for packets already in flight when the hold is applied


class RtpCounter(DatagramProtocol):
    """The far end's media socket: the arrival time of every datagram."""

    def __init__(self):
        self.arrivals = []

    def datagramReceived(self, data, addr):  # noqa: N802 - Twisted API
        self.arrivals.append(reactor.seconds())


@implementer(ICallListener)
class MediaListener:
    """What the callback's LegListener does with a leg's SDP: answer, play, follow offers."""

    def __init__(self, media: LegMedia):
        self.media = media
        self.events = []
        self.done = Deferred()

    def call_trying(self, call):
        pass

    def call_ringing(self, call, early_sdp):
        pass

    def call_answered(self, call, remote_sdp):
        self.events.append(("answered", reactor.seconds(), negotiate(remote_sdp).direction))
        self.media.answer(remote_sdp)
        self.media.play(["p"]).addErrback(lambda f: None)

    def call_offer(self, call, remote_sdp):
        self.events.append(("offer", reactor.seconds(), negotiate(remote_sdp).direction))
        self.media.answer(remote_sdp)

    def call_info(self, call, content_type, body):
        pass

    def call_failed(self, call, status, reason):
        self.events.append(("failed", reactor.seconds(), status))
        self.done.callback(self.events)

    def call_ended(self, call, by_remote, reason):
        self.events.append(("ended", reactor.seconds(), reason))
        self.done.callback(self.events)


@pytest_twisted.ensureDeferred
async def test_hold_reinvite_gets_recvonly_and_no_rtp_until_resumed(tmp_path):
    counter = RtpCounter()
    rtp_socket = reactor.listenUDP(0, counter, interface="127.0.0.1")
    env = MediaEnvironment(clock=reactor, reactor=reactor, pool=PortPool(42000, 42999),
                           media_clock=MediaClock(reactor), bind_address="127.0.0.1",
                           public_address="127.0.0.1",
                           libraries={"app": FakePrompts({"p": 500})})  # 10 s of audio; fmt: skip
    media = LegMedia(env, "app", "hold-test")
    offer = media.open()
    trunk = SippTrunk("hold", tmp_path, keys={"rtp_port": rtp_socket.getHost().port})
    trunk.start()
    await trunk.ready()
    service = make_service(trunk.port)
    service.startService()
    listener = MediaListener(media)
    try:
        service.ua.place_call("15550001", caller_id="cb1818", display_name=None, sdp_offer=offer,
                              no_answer_timeout=10, listener=listener)  # fmt: skip
        events = await with_timeout(listener.done, 30)
        rc = await trunk.wait()
    finally:
        trunk.kill()
        await service.stopService()
        await media.close()
        await rtp_socket.stopListening()
    assert [(e[0], e[2]) for e in events] == [
        ("answered", "sendrecv"), ("offer", "sendonly"), ("offer", "sendrecv"), ("ended", "remote hangup"),
    ], events
    assert rc == 0, f"sipp exit {rc}: {trunk.errors()}"
    logged = trunk.logged()
    assert "hold answered a=recvonly" in logged and "resume answered a=sendrecv" in logged, logged
    # RFC 3264 8: one origin for the session, its version one more at each changed answer
    origins = [line.split("o=", 1)[1].split()[:3] for line in logged.splitlines() if "answered" in line]
    (_, sid0, v0) = offer.split(b"o=", 1)[1].split(b"\r\n", 1)[0].decode().split()[:3]
    assert [o[1] for o in origins] == [sid0, sid0]
    assert [int(o[2]) for o in origins] == [int(v0) + 1, int(v0) + 2]
    answered, held, resumed, ended = (e[1] for e in events)
    arrivals = counter.arrivals
    before = [t for t in arrivals if answered <= t < held]
    during = [t for t in arrivals if held + SLACK <= t < resumed]
    after = [t for t in arrivals if resumed <= t < ended]
    assert len(before) > 20, (len(before), held - answered)
    assert during == [], f"{len(during)} RTP packets sent while on hold"
    assert len(after) > 20, (len(after), ended - resumed)


class StreamListener(MediaListener):
    """MediaListener that records a removed stream (every port 0) as "removed"."""

    def call_offer(self, call, remote_sdp):
        removed = streams_removed(remote_sdp)
        self.events.append(("offer", reactor.seconds(),
                            "removed" if removed else negotiate(remote_sdp).direction))
        self.media.answer(remote_sdp)


@pytest_twisted.ensureDeferred
async def test_a_stream_removed_with_port_0_is_answered_port_0_and_gets_no_rtp(tmp_path):
    """RFC 3264 8.2 on a real socket: sipp re-INVITEs with ``m=audio 0``; our 200 answers the
    stream with port 0 (not a 488) and our RTP stops; a later offer with a port brings it back."""
    counter = RtpCounter()
    rtp_socket = reactor.listenUDP(0, counter, interface="127.0.0.1")
    env = MediaEnvironment(clock=reactor, reactor=reactor, pool=PortPool(43000, 43999),
                           media_clock=MediaClock(reactor), bind_address="127.0.0.1",
                           public_address="127.0.0.1",
                           libraries={"app": FakePrompts({"p": 500})})  # 10 s of audio; fmt: skip
    media = LegMedia(env, "app", "remove-test")
    offer = media.open()
    trunk = SippTrunk("remove_stream", tmp_path, keys={"rtp_port": rtp_socket.getHost().port})
    trunk.start()
    await trunk.ready()
    service = make_service(trunk.port)
    service.startService()
    listener = StreamListener(media)
    try:
        service.ua.place_call("15550001", caller_id="cb1818", display_name=None, sdp_offer=offer,
                              no_answer_timeout=10, listener=listener)  # fmt: skip
        events = await with_timeout(listener.done, 30)
        rc = await trunk.wait()
    finally:
        trunk.kill()
        await service.stopService()
        await media.close()
        await rtp_socket.stopListening()
    assert [(e[0], e[2]) for e in events] == [
        ("answered", "sendrecv"), ("offer", "removed"), ("offer", "sendrecv"), ("ended", "remote hangup"),
    ], events
    assert rc == 0, f"sipp exit {rc}: {trunk.errors()}"
    logged = trunk.logged()
    assert "removal answered m=audio 0 RTP/AVP" in logged and "resume answered m=audio " in logged, logged
    answered, removed, resumed, ended = (e[1] for e in events)
    arrivals = counter.arrivals
    assert len([t for t in arrivals if answered <= t < removed]) > 20
    assert [t for t in arrivals if removed + SLACK <= t < resumed] == [], "RTP sent to a removed stream"
    assert len([t for t in arrivals if resumed <= t < ended]) > 20
