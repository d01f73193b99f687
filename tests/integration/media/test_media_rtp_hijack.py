"""Issue 14, items 1 and 2: a stranger on another address attacks a call's RTP ports.

cbserver's real SIP stack (UDP), real RTP sessions and relay and a real ``CallbackSession``
(``callbackrig``) call a scripted trunk on 127.0.0.1. The trunk lets leg A ring for a while
before answering. An attacker on 127.0.0.2 sprays RTP at the leg's port (learnt from the
INVITE's SDP, as a sniffer or a port scan would) during ringing and after the answer, and
sends RTCP BYE to the port above. Then the real peer floods the leg with malformed RTCP.

Before the fix the leg latched to the attacker during ringing (``rtp latched ... from=None``),
the attacker received the prompt and the other party's audio, its RTCP BYE ended the call, and
every ``80 c9 00 00`` logged a critical traceback.
"""

import itertools

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogPublisher

from cbserver.media import rtcp, rtp
from tests.integration.media.callbackrig import CallbackRig
from tests.integration.media.sipfake import header, parse, respond, sdp, sdp_media

pytestmark = pytest.mark.integration

ATTACKER = "127.0.0.2"
_tags = itertools.count(1)


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


class Sink(DatagramProtocol):
    """A UDP socket that keeps what it receives."""

    def __init__(self):
        self.got: list[tuple[bytes, tuple]] = []

    def datagramReceived(self, data, addr):
        self.got.append((data, addr))


class Leg:
    """One call the trunk was offered: rings until ``answer``; then talks RTP every 20 ms."""

    def __init__(self, trunk, headers, source, offer):
        self.trunk, self.headers, self.source = trunk, headers, source
        self.call_id = header(headers, "Call-ID", "i")
        self.tag = f"hj{next(_tags)}"
        self.remote_media = sdp_media(offer)  # cbserver's RTP (host, port, pt, te)
        self.sink = Sink()
        self.media = reactor.listenUDP(0, self.sink, interface="127.0.0.1")
        self.talking = task.LoopingCall(self._rtp)
        self.seq = 0
        self.payload = bytes([0x11 + len(trunk.legs)]) * 160

    def _rtp(self):
        host, port, pt, _te = self.remote_media
        self.seq += 1
        self.media.write(rtp.pack(pt, self.seq, 160 * self.seq, 0x5EED, self.payload), (host, port))

    def answer(self):
        self.trunk.respond(self.headers, self.source, self, 200,
                           sdp(self.media.getHost().port, pts=(0,)))

    def close(self):
        if self.talking.running:
            self.talking.stop()
        return self.media.stopListening()


class Trunk(DatagramProtocol):
    """Rings every INVITE (180, no SDP); the test answers; talks once ACKed."""

    def __init__(self, answer_b_at_once=True):
        self.legs: list[Leg] = []
        self.offered = [defer.Deferred(), defer.Deferred()]
        self.answer_b_at_once = answer_b_at_once

    def datagramReceived(self, data, addr):
        first, headers, body = parse(data)
        call_id = header(headers, "Call-ID", "i")
        what = first.split(" ", 2)[1] if first.startswith("SIP/2.0") else first.split(" ", 1)[0]
        leg = next((leg for leg in self.legs if leg.call_id == call_id), None)
        if what == "INVITE" and leg is None:
            leg = Leg(self, headers, addr, body)
            self.legs.append(leg)
            self.respond(headers, addr, leg, 180, b"")
            index = len(self.legs) - 1
            if index == 1 and self.answer_b_at_once:
                leg.answer()
            self.offered[index].callback(leg)
        elif what == "ACK" and leg is not None and not leg.talking.running:
            leg.talking.start(0.02)
        elif what in ("BYE", "OPTIONS", "INFO", "CANCEL"):
            if leg is not None and leg.talking.running:
                leg.talking.stop()
            self.respond(headers, addr, leg, 200, b"")

    def respond(self, headers, addr, leg, status, body):
        respond(self.transport, headers, addr, status, body,
                "application/sdp" if body else None,
                tag=leg.tag if leg is not None else None, user="trunk")


class Attacker:
    """A stranger on 127.0.0.2: RTP to a leg's port, RTCP BYE to the port above."""

    def __init__(self):
        self.sink = Sink()
        self.port = reactor.listenUDP(0, self.sink, interface=ATTACKER)
        self.seq = 0

    @defer.inlineCallbacks
    def spray(self, target, packets=25):
        host, port = target
        for _ in range(packets):
            self.seq += 1
            for pt in (0, 8, 101):
                self.port.write(rtp.pack(pt, self.seq, 160 * self.seq, 0xBAD, b"\x99" * 160),
                                (host, port))
            yield sleep(0.01)
        bye = rtcp.pack_rr(0xBAD, []) + rtcp.pack_bye(0xBAD)
        self.port.write(bye, (host, port + 1))
        self.port.write(bye, (host, port))  # RFC 5761 mux on the RTP port too


@pytest_twisted.inlineCallbacks
def test_a_stranger_cannot_latch_a_leg_nor_end_it_with_rtcp_bye():
    trunk = Trunk()
    trunk_port = reactor.listenUDP(0, trunk, interface="127.0.0.1")
    rig = CallbackRig(("127.0.0.1", trunk_port.getHost().port), rtcp_bye_grace=0.3)
    attacker = Attacker()
    session = rig.session
    try:
        done = session.start()
        leg_a = yield trunk.offered[0]
        target = leg_a.remote_media[:2]
        # During ringing: nothing is latched, nobody is sent anything.
        yield attacker.spray(target)
        rtp_a = session.a.media.session
        assert not rtp_a.latched and rtp_a.remote is None
        assert attacker.sink.got == []
        assert rtp_a.packets_received == 0 and rtp_a.strangers_dropped >= 25
        # The real peer answers; the attacker goes on, RTP and RTCP BYE, after the answer.
        leg_a.answer()
        yield trunk.offered[1]
        yield attacker.spray(target, packets=50)
        yield sleep(0.5)  # past the 0.3 s RTCP BYE grace: a believed BYE would end the call
        assert rtp_a.latched and rtp_a.remote == ("127.0.0.1", leg_a.media.getHost().port)
        assert session.state.name == "CONNECTED" and not done.called
        assert attacker.sink.got == []  # no prompt, no relayed audio, no RTCP for the stranger
        leg_b = trunk.legs[1]
        # The real peers hear each other through the relay.
        heard_by_b = [rtp.unpack(d) for d, _ in leg_b.sink.got if not rtp.looks_like_rtcp(d)]
        assert sum(1 for p in heard_by_b if p.payload == leg_a.payload) > 10
        heard_by_a = [rtp.unpack(d) for d, _ in leg_a.sink.got if not rtp.looks_like_rtcp(d)]
        assert sum(1 for p in heard_by_a if p.payload == leg_b.payload) > 10
        assert rtp_a.rtcp_dropped >= 2  # the attacker's BYEs, refused before parsing
    finally:
        yield rig.close()
        for leg in trunk.legs:
            yield leg.close()
        yield attacker.port.stopListening()
        yield trunk_port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_burst_of_malformed_rtcp_logs_a_handful_of_lines_and_no_traceback():
    trunk = Trunk()
    trunk_port = reactor.listenUDP(0, trunk, interface="127.0.0.1")
    rig = CallbackRig(("127.0.0.1", trunk_port.getHost().port), rtcp_bye_grace=0.3)
    session = rig.session
    events = []
    observer = events.append
    try:
        session.start()
        leg_a = yield trunk.offered[0]
        leg_a.answer()
        yield trunk.offered[1]
        yield sleep(0.3)
        rtp_a = session.a.media.session
        assert rtp_a.latched
        host, port = leg_a.remote_media[:2]
        globalLogPublisher.addObserver(observer)
        for i in range(500):
            # From the real peer (its media socket, RFC 5761 style) so the packets reach the
            # parser: to the RTCP port and, muxed, to the RTP port.
            leg_a.media.write(b"\x80\xc9\x00\x00", (host, port + 1 if i % 2 else port))
            if i % 50 == 49:
                yield sleep(0.01)
        yield sleep(0.3)
        globalLogPublisher.removeObserver(observer)
        assert rtp_a.rtcp_dropped >= 450  # every one refused (loopback may drop a few)
        assert session.state.name == "CONNECTED"
        mine = [e for e in events if str(e.get("log_namespace", "")).startswith("cbserver")]
        assert not [e for e in mine if "log_failure" in e]  # no traceback
        assert len([e for e in mine if "rtcp" in str(e.get("log_format", ""))]) <= 5
        assert len(mine) <= 10, [e.get("log_format") for e in mine]
    finally:
        if observer in globalLogPublisher._observers:
            globalLogPublisher.removeObserver(observer)
        yield rig.close()
        for leg in trunk.legs:
            yield leg.close()
        yield trunk_port.stopListening()
