"""Issue 14, item 8: a forged Via cannot turn cbserver into a reflector or an amplifier.

The real SIP stack (UDP transport, transaction layer, UserAgent) listens on 127.0.0.1 with a
trunk at 127.0.0.1. A stranger on 127.0.0.3 sends requests whose top Via names a victim on
127.0.0.5 (``maddr``, a forged ``received``/``rport``, or just the victim's sent-by), where a
socket listens. Each request must get exactly one response, at its real source, and the victim
must receive nothing, over more than a Timer G cycle (T1 = 50 ms here, so the 403 to an
INVITE would have been retransmitted at 50, 100, 200, 400, 800 ms... before the fix).
Then a burst of 500 unparseable datagrams gives a handful of log lines, no traceback.
"""

import itertools

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogPublisher

from cbserver.sip.message import parse_message
from cbserver.sip.transport import SipUdpProtocol
from cbserver.sip.ua import UAConfig, UserAgent

pytestmark = pytest.mark.integration

STRANGER, VICTIM = "127.0.0.3", "127.0.0.5"
_n = itertools.count(1)


class Sink(DatagramProtocol):
    """A UDP socket keeping the SIP messages it receives."""

    def __init__(self):
        self.got = []

    def datagramReceived(self, data, addr):
        self.got.append((parse_message(data), addr))


def request(method, via, server_port):
    n = next(_n)
    lines = [
        f"{method} sip:cbserver@127.0.0.1:{server_port} SIP/2.0",
        f"Via: SIP/2.0/UDP {via};branch=z9hG4bKrefl{n}",
        "Max-Forwards: 70",
        f"From: <sip:mallory@{STRANGER}>;tag=m{n}",
        f"To: <sip:cbserver@127.0.0.1:{server_port}>",
        f"Call-ID: refl{n}@{STRANGER}",
        f"CSeq: 1 {method}",
        f"Contact: <sip:mallory@{VICTIM}>",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), f"refl{n}@{STRANGER}"


@pytest_twisted.inlineCallbacks
def test_forged_via_gets_one_response_at_the_real_source_and_nothing_at_the_victim():
    transport = SipUdpProtocol(None, "127.0.0.1", 0)
    server = reactor.listenUDP(0, transport, interface="127.0.0.1")
    transport.port = server_port = server.getHost().port
    ua = UserAgent(transport, reactor, UAConfig(
        public_address="127.0.0.1", public_port=server_port, trunk_host="127.0.0.1",
        trunk_port=5060, from_domain="127.0.0.1", username="cbserver", password="unused",
        t1=0.05, t2=0.4, keepalive_interval=0, session_expires=0))
    transport.sink = ua.sink
    stranger, victim = Sink(), Sink()
    s_port = reactor.listenUDP(0, stranger, interface=STRANGER)
    v_port = reactor.listenUDP(0, victim, interface=VICTIM)
    v = v_port.getHost().port
    vias = [
        f"{VICTIM}:{v};maddr={VICTIM}",
        f"{VICTIM}:{v};maddr={VICTIM};rport",
        f"{VICTIM}:{v};received={VICTIM};rport={v}",
        f"{STRANGER}:{s_port.getHost().port};received={VICTIM}",
        f"{VICTIM}:{v}",
    ]
    sent = []
    try:
        for via in vias:
            for method in ("INVITE", "OPTIONS", "BYE"):
                data, call_id = request(method, via, server_port)
                s_port.write(data, ("127.0.0.1", server_port))
                sent.append(call_id)
        yield task.deferLater(reactor, 2.0, lambda: None)  # 64*T1 = 3.2 s; G fires 6 times
        assert victim.got == []
        by_call = {}
        for message, addr in stranger.got:
            by_call.setdefault(message.headers.get("Call-ID"), []).append(message.status)
            assert addr == ("127.0.0.1", server_port)
        assert {c: len(s) for c, s in by_call.items()} == {c: 1 for c in sent}
        assert sorted({s[0] for s in by_call.values()}) == [200, 403, 481]
        assert ua.layer.servers == {}  # no transaction left retransmitting
    finally:
        yield ua.stop()
        ua.stop_listening()
        for p in (server, s_port, v_port):
            yield p.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_burst_of_bad_sip_datagrams_logs_a_handful_of_lines():
    transport = SipUdpProtocol(None, "127.0.0.1", 0)
    server = reactor.listenUDP(0, transport, interface="127.0.0.1")
    transport.port = server_port = server.getHost().port
    ua = UserAgent(transport, reactor, UAConfig(
        public_address="127.0.0.1", public_port=server_port, trunk_host="127.0.0.1",
        trunk_port=5060, from_domain="127.0.0.1", username="cbserver", password="unused",
        t1=0.05, t2=0.4, keepalive_interval=0, session_expires=0))
    transport.sink = ua.sink
    stranger = Sink()
    s_port = reactor.listenUDP(0, stranger, interface=STRANGER)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        for i in range(500):
            s_port.write(b"INVITE sip:x SIP/2.0\r\nVia: garbage\r\n\x00\r\n\r\n" if i % 2 else
                         b"\x80\xc9\x00\x00 not sip at all", ("127.0.0.1", server_port))
            if i % 50 == 49:
                yield task.deferLater(reactor, 0.01, lambda: None)
        yield task.deferLater(reactor, 0.3, lambda: None)
    finally:
        globalLogPublisher.removeObserver(events.append)
        yield ua.stop()
        ua.stop_listening()
        for p in (server, s_port):
            yield p.stopListening()
    mine = [e for e in events if str(e.get("log_namespace", "")).startswith("cbserver")]
    assert transport.dropped >= 450
    assert not [e for e in mine if "log_failure" in e]
    assert len(mine) <= 10, [e.get("log_format") for e in mine]
