"""A phone hangs up the way real phones do: RTCP BYE first, its SIP BYE 30 ms later.

cbserver's real SIP stack (UDP), real RTP sessions and relay, and a real ``CallbackSession``
(``callbackrig``) call a scripted trunk on loopback sockets. The
trunk answers both legs, sends RTP on both, then hangs legA (or legB) up: RTCP BYE from the
leg's media socket, and 30 ms later the SIP BYE (what a proxy delaying in-dialog BYEs does).
The callback must end with the hang-up cause of that party, and cbserver must send no BYE on
that leg (only on the other one).
"""

import itertools
import re

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.protocol import DatagramProtocol

from cbserver.media import rtcp, rtp
from tests.integration.media.callbackrig import CallbackRig
from tests.integration.media.sipfake import header, parse, respond, sdp, sdp_media

pytestmark = pytest.mark.integration

BYE_DELAY = 0.030  # the proxy's delay of in-dialog BYEs
_tags = itertools.count(1)


class Leg:
    """One call the trunk answered: its dialog and its media."""

    def __init__(self, trunk, invite_headers, source, offer):
        self.trunk = trunk
        self.headers = invite_headers
        self.source = source  # where cbserver's SIP is
        self.call_id = header(invite_headers, "Call-ID", "i")
        self.tag = f"tr{next(_tags)}"
        self.remote_media = sdp_media(offer)  # cbserver's RTP (host, port, pt, te)
        self.media = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.talking = task.LoopingCall(self._rtp)
        self.seq = 0

    def _rtp(self):
        host, port, pt, _te = self.remote_media
        self.seq += 1
        self.media.write(rtp.pack(pt, self.seq, 160 * self.seq, 0x5EED, b"\xff" * 160), (host, port))

    def hang_up(self):
        """RTCP BYE now, the SIP BYE ``BYE_DELAY`` later."""
        self.talking.stop()
        host, port, _pt, _te = self.remote_media
        self.media.write(rtcp.pack_rr(0x5EED, []) + rtcp.pack_bye(0x5EED), (host, port + 1))
        return task.deferLater(reactor, BYE_DELAY, self._sip_bye)

    def _sip_bye(self):
        contact = re.search(r"<([^>]+)>", header(self.headers, "Contact", "m")).group(1)
        ours = self.trunk.transport.getHost().port
        lines = [
            f"BYE {contact} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{ours};branch=z9hG4bKbye{self.tag}",
            "Max-Forwards: 70",
            f"From: {header(self.headers, 'To', 't')};tag={self.tag}",
            f"To: {header(self.headers, 'From', 'f')}",
            f"Call-ID: {self.call_id}", "CSeq: 1 BYE", "Content-Length: 0",
        ]
        self.trunk.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode(), self.source)

    def close(self):
        if self.talking.running:
            self.talking.stop()
        return self.media.stopListening()


class Trunk(DatagramProtocol):
    """Answers every INVITE at once, talks on each answered leg, logs what it receives."""

    def __init__(self):
        self.legs: list[Leg] = []
        self.received: list[tuple[str, str]] = []  # (method or status, Call-ID)
        self.answered = [defer.Deferred(), defer.Deferred()]

    def datagramReceived(self, data, addr):
        first, headers, body = parse(data)
        call_id = header(headers, "Call-ID", "i")
        what = first.split(" ", 2)[1] if first.startswith("SIP/2.0") else first.split(" ", 1)[0]
        self.received.append((what, call_id))
        if what == "INVITE" and not any(leg.call_id == call_id for leg in self.legs):
            leg = Leg(self, headers, addr, body)
            self.legs.append(leg)
            self._respond(headers, addr, leg, sdp(leg.media.getHost().port, pts=(0,)))
        elif what == "INVITE":
            leg = next(leg for leg in self.legs if leg.call_id == call_id)
            self._respond(headers, addr, leg, sdp(leg.media.getHost().port, pts=(0,)))
        elif what == "ACK":
            leg = next(leg for leg in self.legs if leg.call_id == call_id)
            if not leg.talking.running:
                leg.talking.start(0.02)
                index = self.legs.index(leg)
                if not self.answered[index].called:
                    self.answered[index].callback(leg)
        elif what in ("BYE", "OPTIONS", "INFO"):
            leg = next((leg for leg in self.legs if leg.call_id == call_id), None)
            if leg is not None and leg.talking.running:
                leg.talking.stop()
            self._respond(headers, addr, leg, b"")

    def _respond(self, headers, addr, leg, body):
        respond(self.transport, headers, addr, 200, body,
                "application/sdp" if body else None,
                tag=leg.tag if leg is not None else None, user="trunk")

    def sent_to(self, leg: Leg, method: str) -> int:
        """How many ``method`` requests cbserver sent on ``leg``'s dialog."""
        return sum(1 for what, cid in self.received if what == method and cid == leg.call_id)


@pytest.mark.parametrize("who, cause", [("A", "lega_hung_up"), ("B", "legb_hung_up")])
@pytest_twisted.inlineCallbacks
def test_a_phone_hanging_up_with_rtcp_bye_first_is_a_hang_up(who, cause):
    trunk = Trunk()
    trunk_port = reactor.listenUDP(0, trunk, interface="127.0.0.1")
    rig = CallbackRig(("127.0.0.1", trunk_port.getHost().port))
    session = rig.session
    try:
        done = session.start()
        yield trunk.answered[1]  # both legs answered: the relay joins them
        yield task.deferLater(reactor, 1.0, lambda: None)
        assert session.state.name == "CONNECTED"
        assert session._relay.forwarded > 20  # RTP flows through the relay both ways
        leg = trunk.legs["AB".index(who)]
        other = trunk.legs[1 - "AB".index(who)]
        yield leg.hang_up()
        final = (yield defer.gatherResults([done]).addTimeout(10, reactor))[0]
        assert final["status"] == "ended"
        assert final["cause"]["code"] == cause, final["cause"]
        assert trunk.sent_to(leg, "BYE") == 0  # cbserver did not BYE the leg that hung up
        assert rig.byes_on(getattr(session, who.lower())) == 0  # nor tried to
        assert trunk.sent_to(other, "BYE") >= 1
        assert [r.leg for r in rig.recorder.records] == ["A", "B"]
    finally:
        yield rig.close()
        for leg in trunk.legs:
            yield leg.close()
        yield trunk_port.stopListening()
