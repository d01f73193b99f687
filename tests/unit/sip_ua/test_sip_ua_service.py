"""SipService wiring on a memory reactor: no I/O before start, port bound, calls ended on stop."""

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock

from cbserver.sip.service import SipService
from cbserver.sip.transport import SipUdpProtocol
from cbserver.sip.transport_tcp import SipTcpTransport
from tests.unit.sip_ua.uafakes import SDP_OFFER, Listener, config


class FakeUDPPort:
    def __init__(self, port, protocol, interface):
        self.port, self.protocol, self.interface = port or 40000, protocol, interface
        self.written, self.listening = [], True
        protocol.makeConnection(self)

    def write(self, data, addr):
        self.written.append((data, addr))

    def getHost(self):  # noqa: N802
        return IPv4Address("UDP", self.interface, self.port)

    def stopListening(self):  # noqa: N802
        self.listening = False
        return succeed(None)


class UDPMemoryReactor(MemoryReactorClock):
    """MemoryReactorClock has no listenUDP; this one records the ports it 'binds'."""

    def __init__(self):
        super().__init__()
        self.udpPorts = {}

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):  # noqa: N802
        p = FakeUDPPort(port, protocol, interface)
        self.udpPorts[port] = p
        return p


def test_constructor_does_no_io_and_start_binds_udp():
    reactor = UDPMemoryReactor()
    service = SipService(config(public_port=5070), reactor, listen_address="127.0.0.1")
    assert reactor.udpPorts == {} and service.ua is None
    service.startService()
    assert list(reactor.udpPorts) == [5070]
    assert isinstance(service.protocol, SipUdpProtocol)
    assert service.protocol.sink is service.ua.sink
    d = service.stopService()
    assert d.called and not reactor.udpPorts[5070].listening


def test_port_zero_advertises_the_bound_port():
    reactor = UDPMemoryReactor()
    service = SipService(config(public_port=0), reactor)
    service.startService()
    assert service.ua.config.public_port == 40000
    assert service.ua.contact() == "<sip:cbuser@127.0.0.1:40000>"
    assert service.stopService().called


def test_tcp_service_listens_with_tcp():
    reactor = MemoryReactorClock()
    service = SipService(config(public_port=5071), reactor, transport="tcp")
    service.startService()
    assert [p[0] for p in reactor.tcpServers] == [5071]
    assert isinstance(service.protocol, SipTcpTransport)
    assert service.ua.contact().endswith(";transport=tcp>")
    assert service.stopService().called


def test_stop_ends_calls_before_closing():
    reactor = UDPMemoryReactor()
    service = SipService(config(public_port=5072), reactor)
    service.startService()
    sent = [d for d, _ in reactor.udpPorts[5072].written]
    listener = Listener()
    service.ua.place_call(
        "1", caller_id="a", display_name=None, sdp_offer=SDP_OFFER, no_answer_timeout=30, listener=listener
    )
    sent = [d for d, _ in reactor.udpPorts[5072].written]
    assert sent and sent[0].startswith(b"INVITE ")
    d = service.stopService()
    assert not d.called  # waits for the call (no provisional yet: no CANCEL may go out)
    reactor.advance(5)  # the UA's stop_timeout
    assert d.called
    assert listener.events == [("failed", 503, "shutdown")]
    assert not reactor.udpPorts[5072].listening
    assert [c for c in reactor.getDelayedCalls() if c.active()] == []
