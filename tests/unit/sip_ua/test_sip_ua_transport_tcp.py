"""SIP over TCP: framing, Via stamping, response routing, connecting (RFC 3261 18)."""

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cbserver.sip.message import make_response, parse_message, parse_via
from cbserver.sip.transport import IMessageSink, ISipTransport
from cbserver.sip.transport_tcp import SipTcpTransport
from tests.unit.sip_ua.fakes import request


@implementer(IMessageSink)
class Sink:
    def __init__(self):
        self.requests, self.responses, self.failed = [], [], []

    def request_received(self, request, source):
        self.requests.append((request, source))

    def response_received(self, response, source):
        self.responses.append((response, source))

    def destination_failed(self, destination, error):
        self.failed.append(destination)


def inbound(tcp, port=40000):
    proto = tcp.factory().buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
    wire = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
    proto.makeConnection(wire)
    return proto, wire


def test_tcp_transport_provides_interface():
    tcp = SipTcpTransport(MemoryReactorClock(), Sink(), "127.0.0.1", 5070)
    assert verifyObject(ISipTransport, tcp)
    assert tcp.reliable and tcp.name == "TCP"


def test_messages_split_across_segments_are_framed_and_stamped():
    tcp = SipTcpTransport(MemoryReactorClock(), Sink(), "127.0.0.1", 5070)
    proto, wire = inbound(tcp)
    raw = request("OPTIONS", body=b"hello").serialize() * 2
    raw = raw.replace(b"Via: SIP/2.0/UDP", b"Via: SIP/2.0/TCP")
    for i in range(0, len(raw), 7):
        proto.dataReceived(raw[i : i + 7])
    assert len(tcp.sink.requests) == 2
    req, source = tcp.sink.requests[0]
    assert req.body == b"hello" and source == ("127.0.0.1", 40000)
    assert parse_via(req.headers.get("Via")).port == 5080


def test_response_goes_back_on_the_connection_the_request_used():
    tcp = SipTcpTransport(MemoryReactorClock(), Sink(), "127.0.0.1", 5070)
    proto, wire = inbound(tcp, port=40001)
    proto.dataReceived(request("OPTIONS").serialize())
    req, _ = tcp.sink.requests[0]
    tcp.send_response(make_response(req, 200, None, to_tag="t"))
    assert parse_message(wire.value()).status == 200


def test_framing_error_closes_and_bad_message_gets_400():
    tcp = SipTcpTransport(MemoryReactorClock(), Sink(), "127.0.0.1", 5070)
    proto, wire = inbound(tcp)
    bad = request("OPTIONS").serialize().replace(b"sip:100@127.0.0.1 SIP", b"nonsense SIP")
    proto.dataReceived(bad)
    assert tcp.sink.requests == [] and not wire.disconnecting
    assert parse_message(wire.value()).status == 400
    proto.dataReceived(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP x\r\n\r\n")  # no length
    assert wire.disconnecting


def test_request_connects_queues_and_flushes():
    reactor = MemoryReactorClock()
    tcp = SipTcpTransport(reactor, Sink(), "127.0.0.1", 5070)
    tcp.send_request(request("OPTIONS"), ("127.0.0.1", 5080))
    tcp.send_request(request("OPTIONS", branch="z9hG4bK2"), ("127.0.0.1", 5080))
    assert len(reactor.tcpClients) == 1
    host, port, factory, _, _ = reactor.tcpClients[0]
    assert (host, port) == ("127.0.0.1", 5080)
    proto = factory.buildProtocol(IPv4Address("TCP", host, port))
    wire = StringTransport(peerAddress=IPv4Address("TCP", host, port))
    proto.makeConnection(wire)
    assert wire.value().count(b"OPTIONS sip:") == 2
    tcp.send_request(request("OPTIONS", branch="z9hG4bK3"), ("127.0.0.1", 5080))
    assert wire.value().count(b"OPTIONS sip:") == 3 and len(reactor.tcpClients) == 1
    proto.connectionLost(Failure(ConnectionRefusedError()))
    assert tcp.connections == {}


def test_failed_connect_tells_the_sink():
    reactor = MemoryReactorClock()
    tcp = SipTcpTransport(reactor, Sink(), "127.0.0.1", 5070)
    tcp.send_request(request("OPTIONS"), ("127.0.0.1", 5999))
    _, _, factory, _, _ = reactor.tcpClients[0]
    factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
    assert tcp.sink.failed == [("127.0.0.1", 5999)]
    assert reactor.getDelayedCalls() == [] or all(not c.active() for c in reactor.getDelayedCalls())
