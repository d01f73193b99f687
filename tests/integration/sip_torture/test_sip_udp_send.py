"""The SIP UDP transport's own ``sendto``: what Twisted's ``Port.write`` did, datagram for datagram.

``SipUdpProtocol._write`` sends on the listening socket itself when the destination is an
address literal of the socket's family (checked once per address), skipping the address
checks Twisted's UDP ``Port.write`` repeats for every datagram (issue 17 item 2,
docs/bench-callbacks.md "Session 10"). Real sockets on loopback: the bytes that arrive, where
they come from, and every refusal (host name, wrong family, ``<broadcast>``, forged
addresses, a datagram too long for UDP) must be what ``Port.write`` gives; the error mapping
for errors loopback cannot produce is checked on a socket stand-in.
"""

import errno
import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import InvalidAddressError, MessageLengthError

from cbserver.sip.message import Request
from cbserver.sip.transport import SipUdpProtocol, TransportError, udp_family

pytestmark = pytest.mark.integration


def invite(size: int = 0) -> Request:
    """A request with a body of ``size`` bytes."""
    req = Request("INVITE", "sip:bob@127.0.0.1")
    for name, value in (("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1"),
                        ("From", "<sip:a@127.0.0.1>;tag=1"), ("To", "<sip:bob@127.0.0.1>"),
                        ("Call-ID", "c1@127.0.0.1"), ("CSeq", "1 INVITE")):
        req.headers.add(name, value)
    req.body = b"x" * size
    return req


class CountingPort:
    """Wraps a Twisted UDP port and counts the datagrams given to its ``write``."""

    def __init__(self, port):
        self.port, self.socket, self.addressFamily = port, port.socket, port.addressFamily
        self.writes = 0

    def write(self, data, addr):
        self.writes += 1
        return self.port.write(data, addr)


@pytest.fixture
def receiver():
    """A plain UDP socket on 127.0.0.1 that the transport sends to."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)
    yield sock
    sock.close()


def listening(max_size=65535):
    """A SipUdpProtocol listening on 127.0.0.1, its transport a counting wrapper."""
    proto = SipUdpProtocol(None, "127.0.0.1", 0, max_size=max_size)
    port = reactor.listenUDP(0, proto, interface="127.0.0.1")
    proto.transport = CountingPort(port)
    return proto, port


def outcome(call):
    """``("ok", None)`` or the exception's type and text."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
        return type(exc), str(exc)
    return "ok", None


@pytest_twisted.inlineCallbacks
def test_a_literal_address_gets_the_same_datagram_from_the_listening_port(receiver):
    proto, port = listening()
    try:
        target = receiver.getsockname()
        req = invite(200)
        for _ in range(3):
            proto.send_request(req, target)
        for _ in range(3):
            data, source = receiver.recvfrom(70000)
            assert data == req.serialize()
            assert source == ("127.0.0.1", port.getHost().port)
        assert proto.transport.writes == 0  # sent by the transport itself
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_refusals_are_twisteds_own(receiver):
    proto, port = listening(max_size=70000)
    try:
        rport = receiver.getsockname()[1]
        for host in ("localhost", "example.com", "::1", "[::1]", "<broadcast>", "127.0.0.1 ",
                     "127.1", "1.2.3.4.5", "", "127.0.0.1\x00", "\u0661.\u0662.\u0663.\u0664",
                     "::ffff:127.0.0.1"):
            ours = outcome(lambda host=host: proto.send_request(invite(), (host, rport)))
            twisteds = outcome(lambda host=host: port.write(invite().serialize(), (host, rport)))
            if twisteds[0] is not InvalidAddressError and twisteds[0] != "ok":
                twisteds = (TransportError, twisteds[1])  # an OSError, wrapped as before
            assert ours == twisteds, host
        # Over UDP's own limit (65,507 bytes on IPv4) but under max_size: Twisted's error.
        big = invite(65600)
        assert outcome(lambda: proto.send_request(big, receiver.getsockname()))[0] \
            is MessageLengthError
        assert outcome(lambda: port.write(big.serialize(), receiver.getsockname()))[0] \
            is MessageLengthError
        # Over max_size: refused before any socket is asked.
        small = SipUdpProtocol(None, "127.0.0.1", 0, max_size=100)
        small.transport = proto.transport
        with pytest.raises(TransportError, match="too large"):
            small.send_request(invite(200), receiver.getsockname())
        receiver.settimeout(0.2)
        with pytest.raises(TimeoutError):
            receiver.recvfrom(70000)  # nothing of the above was sent
    finally:
        yield port.stopListening()


def test_the_family_check_is_twisteds():
    assert udp_family("127.0.0.1") == socket.AF_INET
    assert udp_family("::1") == socket.AF_INET6
    assert udp_family("fe80::1%lo") == socket.AF_INET6
    for host in ("localhost", "[::1]", "<broadcast>", "127.1", "", "300.1.1.1"):
        assert udp_family(host) is None, host


class FailingSocket:
    """A socket stand-in whose ``sendto`` fails with ``errno`` (loopback cannot)."""

    def __init__(self, code):
        self.code = code

    def sendto(self, data, addr):
        raise OSError(self.code, errno.errorcode.get(self.code, "?"))


class StandInPort:
    """A port whose socket is a stand-in; ``write`` must not be reached."""

    addressFamily = socket.AF_INET

    def __init__(self, code):
        self.socket = FailingSocket(code)

    def write(self, data, addr):
        raise AssertionError("Port.write used for a literal address")


def test_send_errors_map_as_twisted_maps_them():
    proto = SipUdpProtocol(None, "127.0.0.1", 0)
    dest = ("127.0.0.1", 5060)
    proto.transport = StandInPort(errno.ECONNREFUSED)  # an earlier ICMP error: ignored
    proto.send_request(invite(), dest)
    proto.transport = StandInPort(errno.EMSGSIZE)
    with pytest.raises(MessageLengthError):
        proto.send_request(invite(), dest)
    for code in (errno.EPERM, errno.ENOBUFS, errno.ENETUNREACH, errno.EAGAIN):
        proto.transport = StandInPort(code)
        with pytest.raises(TransportError):
            proto.send_request(invite(), dest)
