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


def tcp_request(branch, via_port=5080):
    raw = request("OPTIONS", branch=branch, via_port=via_port).serialize()
    return raw.replace(b"Via: SIP/2.0/UDP", b"Via: SIP/2.0/TCP")


def test_response_goes_on_the_connection_of_its_request_among_several_from_one_host():
    # RFC 3261 18.2.2; two connections from 127.0.0.1, neither Via asks for rport
    reactor = MemoryReactorClock()
    tcp = SipTcpTransport(reactor, Sink(), "127.0.0.1", 5070)
    proto1, wire1 = inbound(tcp, port=40001)
    proto2, wire2 = inbound(tcp, port=40002)
    proto1.dataReceived(tcp_request("z9hG4bKone"))
    proto2.dataReceived(tcp_request("z9hG4bKtwo"))
    (req1, _), (req2, _) = tcp.sink.requests
    tcp.send_response(make_response(req2, 200, None, to_tag="t"))
    assert parse_via(parse_message(wire2.value()).headers.get("Via")).branch == "z9hG4bKtwo"
    assert wire1.value() == b"" and reactor.tcpClients == []
    tcp.send_response(make_response(req1, 486, None, to_tag="t"))
    assert parse_message(wire1.value()).status == 486 and wire2.value().count(b"SIP/2.0 ") == 1


def test_response_does_not_take_our_own_connection_to_the_senders_port():
    reactor = MemoryReactorClock()
    tcp = SipTcpTransport(reactor, Sink(), "127.0.0.1", 5070)
    tcp.send_request(request("OPTIONS"), ("127.0.0.1", 5080))  # ours, to the trunk's 5080
    _, _, factory, _, _ = reactor.tcpClients[0]
    ours = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5080))
    our_wire = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5080))
    ours.makeConnection(our_wire)
    sent_before = our_wire.value()
    proto, wire = inbound(tcp, port=40003)  # the trunk's own connection to us
    proto.dataReceived(tcp_request("z9hG4bKin", via_port=5080))
    req, _ = tcp.sink.requests[0]
    tcp.send_response(make_response(req, 200, None, to_tag="t"))
    assert parse_message(wire.value()).status == 200 and our_wire.value() == sent_before


def test_response_after_its_connection_closed_goes_to_received_and_via_port():
    reactor = MemoryReactorClock()
    tcp = SipTcpTransport(reactor, Sink(), "127.0.0.1", 5070)
    proto1, wire1 = inbound(tcp, port=40001)
    inbound(tcp, port=40002)
    proto1.dataReceived(tcp_request("z9hG4bKgone"))
    req, _ = tcp.sink.requests[0]
    proto1.connectionLost(Failure(ConnectionRefusedError()))
    assert tcp.origins == {}
    tcp.send_response(make_response(req, 200, None, to_tag="t"))
    (host, port, _, _, _), = reactor.tcpClients
    assert (host, port) == ("127.0.0.1", 5080) and wire1.value() == b""


def test_a_stranger_repeating_a_branch_does_not_capture_the_response():
    tcp = SipTcpTransport(MemoryReactorClock(), Sink(), "127.0.0.1", 5070)
    proto1, wire1 = inbound(tcp, port=40001)
    proto2, wire2 = inbound(tcp, port=40002)
    proto1.dataReceived(tcp_request("z9hG4bKsame"))
    proto2.dataReceived(tcp_request("z9hG4bKsame"))
    req, _ = tcp.sink.requests[0]
    tcp.send_response(make_response(req, 200, None, to_tag="t"))
    assert parse_message(wire1.value()).status == 200 and wire2.value() == b""


def test_remembered_requests_per_connection_are_bounded():
    from cbserver.sip.transport_tcp import ORIGINS_PER_CONNECTION

    tcp = SipTcpTransport(MemoryReactorClock(), Sink(), "127.0.0.1", 5070)
    proto, _ = inbound(tcp)
    for i in range(ORIGINS_PER_CONNECTION + 10):
        proto.dataReceived(tcp_request(f"z9hG4bK{i}"))
    assert len(tcp.origins) == len(proto.origins) == ORIGINS_PER_CONNECTION


def test_outgoing_connections_leave_from_the_listen_address():
    reactor = MemoryReactorClock()
    tcp = SipTcpTransport(reactor, Sink(), "198.51.100.7", 5070, bind_address="127.0.0.3")
    tcp.send_request(request("OPTIONS"), ("127.0.0.1", 5080))
    tcp.send_request(request("OPTIONS"), ("::1", 5080))  # another family: the kernel chooses
    (_, _, _, _, bind4), (_, _, _, _, bind6) = reactor.tcpClients
    assert bind4 == ("127.0.0.3", 0) and bind6 is None


def test_listening_on_any_address_binds_nothing():
    reactor = MemoryReactorClock()
    tcp = SipTcpTransport(reactor, Sink(), "198.51.100.7", 5070, bind_address="0.0.0.0")
    tcp.send_request(request("OPTIONS"), ("127.0.0.1", 5080))
    assert reactor.tcpClients[0][4] is None
