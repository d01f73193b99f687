"""SIP over TCP on real loopback sockets: where our connections leave from, where responses go.

The whole of 127.0.0.0/8 is loopback on Linux, so a trunk on 127.0.0.2 and a UA listening on
127.0.0.3 are two hosts as far as addresses go.
"""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol

from cbserver.sip.message import StreamParser, make_response
from cbserver.sip.service import SipService
from cbserver.sip.ua import UAConfig
from tests.integration.sip_sipp.sipp_harness import OFFER, RecordingListener, with_timeout

pytestmark = pytest.mark.integration


class Collect(Protocol):
    """A TCP peer that frames SIP messages and keeps them; ``answer`` replies to requests."""

    def __init__(self, answer=None):
        self.parser = StreamParser()
        self.messages = []
        self.answer = answer
        self.got = Deferred()
        self.peer = None

    def connectionMade(self):  # noqa: N802 - Twisted API
        self.peer = self.transport.getPeer()

    def dataReceived(self, data):  # noqa: N802 - Twisted API
        for message in self.parser.feed(data):
            self.messages.append(message)
            if self.answer is not None and hasattr(message, "method") and message.method != "ACK":
                self.transport.write(self.answer(message).serialize())
            if not self.got.called:
                self.got.callback(message)


def tcp_config(trunk_host, trunk_port):
    return UAConfig(
        public_address="127.0.0.3", public_port=0, trunk_host=trunk_host, trunk_port=trunk_port,
        from_domain="cb.test", username="u", password="p", t1=0.2, t2=2.0, t4=2.0,
        session_expires=0, keepalive_interval=0,
    )  # fmt: skip


@pytest_twisted.ensureDeferred
async def test_connection_to_the_trunk_leaves_from_the_listen_address():
    peers = []

    def busy(request):
        return make_response(request, 486, "Busy Here", to_tag="b")

    def build():
        proto = Collect(busy)
        peers.append(proto)
        return proto

    trunk = reactor.listenTCP(0, Factory.forProtocol(build), interface="127.0.0.2")
    service = SipService(tcp_config("127.0.0.2", trunk.getHost().port), reactor,
                         listen_address="127.0.0.3", listen_port=0, transport="tcp")  # fmt: skip
    service.startService()
    try:
        listener = RecordingListener()
        service.ua.place_call("15550001", caller_id="cb1", display_name=None, sdp_offer=OFFER,
                              no_answer_timeout=10, listener=listener)  # fmt: skip
        events = await with_timeout(listener.done, 10)
    finally:
        await service.stopService()
        await trunk.stopListening()
    assert events[-1][:2] == ("failed", 486), events
    assert peers and peers[0].peer.host == "127.0.0.3"  # the trunk admits us by this address


def options(branch: str) -> bytes:
    # No rport in the Via, a sent-by port nobody listens on: only the connection itself can
    # carry the response (RFC 3261 18.2.2).
    return (
        f"OPTIONS sip:cbserver@127.0.0.3 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:9;branch={branch}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={branch}\r\n"
        f"To: <sip:cbserver@127.0.0.3>\r\nCall-ID: {branch}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


@pytest_twisted.ensureDeferred
async def test_response_goes_back_on_the_connection_the_request_came_on():
    service = SipService(tcp_config("127.0.0.2", 9), reactor, listen_address="127.0.0.3",
                         listen_port=0, transport="tcp")  # fmt: skip
    service.startService()
    port = service.port.getHost().port
    first, second = Collect(), Collect()
    try:
        for proto in (first, second):  # two sockets from 127.0.0.1, two source ports
            endpoint = TCP4ClientEndpoint(reactor, "127.0.0.3", port, bindAddress=("127.0.0.1", 0))
            await connectProtocol(endpoint, proto)
        assert first.peer.port == second.peer.port == port
        second.transport.write(options("z9hG4bKsecond"))
        response = await with_timeout(second.got, 5)
        first.transport.write(options("z9hG4bKfirst"))
        response_first = await with_timeout(first.got, 5)
    finally:
        for proto in (first, second):
            if proto.transport is not None:
                proto.transport.loseConnection()
        await service.stopService()
    assert response.status == 200 and "z9hG4bKsecond" in response.headers.get("Via")
    assert [m.headers.get("Via") for m in second.messages] == [response.headers.get("Via")]
    assert response_first.status == 200 and len(first.messages) == 1
