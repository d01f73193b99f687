"""SIP transports: a UDP ``DatagramProtocol`` and the seams the transaction layer uses.

Inbound: every datagram is parsed; a parse error never escapes ``datagramReceived`` (a 400 is
sent when the request can still be routed, otherwise the datagram is dropped and logged);
requests get ``received``/``rport`` on their top Via (RFC 3261 18.2.1, RFC 3581 4).
Outbound: requests go to an address the caller already resolved; responses are routed by
the top Via (RFC 3261 18.2.2, RFC 3581 4) and never by resolving a host name taken from a
message.

No reflection (issue 14, docs/security.md "8. SIP reflection"): a response to a UDP request
goes back to the datagram's source address and port, whatever the Via says. ``stamp_via``
overwrites a ``received`` or ``rport`` the sender wrote itself, and writes ``rport`` with the
source port when it differs from the sent-by port (RFC 3581 semantics for every request);
``maddr`` is ignored for the responses of this UA (it only names a multicast group or a
proxy's choice, RFC 3261 18.2.2, and we neither join groups nor act as a proxy).
Errors caused by network input are logged rate-limited (``cbserver.logs.RateLimitedLog``).
"""

from __future__ import annotations

import ipaddress
import socket
from errno import ECONNREFUSED, EMSGSIZE
from functools import lru_cache

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from zope.interface import Attribute, Interface, implementer

from cbserver.logs import Logger, RateLimitedLog
from cbserver.sip.headers import parse_via_shared
from cbserver.sip.message import (
    MAX_MESSAGE_SIZE,
    Request,
    Response,
    SipParseError,
    make_response,
    parse_message,
    parse_via,
)

__all__ = [
    "TransportError",
    "ISipTransport",
    "IMessageSink",
    "SipUdpProtocol",
    "is_ip_literal",
    "response_destination",
    "stamp_via",
]

log = Logger()
_limited = RateLimitedLog(log, lines=5, interval=60.0)


class TransportError(Exception):
    """A message could not be sent (socket error, unroutable response, oversized)."""


class ISipTransport(Interface):
    """What the transaction layer needs from a transport."""

    name = Attribute("transport token written in Via: 'UDP' or 'TCP'")
    reliable = Attribute("True when the transport retransmits by itself (TCP)")
    host = Attribute("address written in our Via sent-by and Contact")
    port = Attribute("port written in our Via sent-by and Contact")

    def send_request(request, destination):
        """Send ``request`` to ``destination`` (ip, port); raise TransportError on failure."""

    def send_response(response):
        """Send ``response`` where its top Via says (RFC 3261 18.2.2); TransportError on failure."""


class IMessageSink(Interface):
    """Where a transport delivers parsed messages (the transaction layer)."""

    def request_received(request, source):
        """A request arrived from ``source`` (ip, port); its top Via is already stamped."""

    def response_received(response, source):
        """A response arrived from ``source`` (ip, port)."""

    def destination_failed(destination, error):
        """A connection-oriented transport could not reach ``destination`` (RFC 3261 17.1.4)."""


@lru_cache(maxsize=4096)
def is_ip_literal(host: str) -> bool:
    """True for an IPv4 or (bracketed or bare) IPv6 address literal."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@lru_cache(maxsize=4096)
def udp_family(host: str):
    """The address family Twisted's UDP ``Port.write`` would send to ``host`` with, or None
    for anything else it refuses or treats apart (a host name, ``<broadcast>``)."""
    if isIPAddress(host):
        return socket.AF_INET
    if isIPv6Address(host):
        return socket.AF_INET6
    return None


def stamp_via(request: Request, source: tuple[str, int], *, source_port: bool = False) -> None:
    """Write the packet's source into the top Via (RFC 3261 18.2.1, RFC 3581 4).

    ``received`` is always the source address when the Via carries one or sent-by differs
    (a ``received`` the sender wrote is overwritten, never trusted); ``rport`` is filled with
    the source port when asked for, overwritten when the sender gave it a value, and, with
    ``source_port`` (UDP), added when the source port is not the sent-by port, so that the
    response goes back exactly where the request came from.
    """
    vias = request.headers.get_all("Via")
    if not vias:
        raise SipParseError("request without Via")
    top = parse_via(vias[0])
    changed = False
    port_differs = (top.port or 5060) != source[1]
    if "rport" in top.params or (source_port and port_differs):
        # RFC 3581 4: fill rport with the source port, and always add received then.
        if top.params.get("rport") != str(source[1]) or top.params.get("received") != source[0]:
            top.params["rport"] = str(source[1])
            top.params["received"] = source[0]
            changed = True
    elif top.host.strip("[]") != source[0] or "received" in top.params:
        # RFC 3261 18.2.1: received when sent-by differs from the packet's source address;
        # a received the sender put there itself is replaced by the real one.
        if top.params.get("received") != source[0]:
            top.params["received"] = source[0]
            changed = True
    if changed:
        request.headers.remove("Via")
        for value in reversed([str(top), *vias[1:]]):
            request.headers.add("Via", value, first=True)


def response_destination(response: Response, default_port: int = 5060) -> tuple[str, int]:
    """Where an unreliable transport sends a response (RFC 3261 18.2.2, RFC 3581 4).

    Raises :class:`TransportError` when the Via names a host name with no ``received``:
    we never resolve a host name taken from a message.
    """
    top_text = response.headers.get("Via")
    if top_text is None:
        raise TransportError("response without Via")
    try:
        top = parse_via_shared(top_text)
    except SipParseError as exc:
        raise TransportError(f"unroutable Via: {exc.reason}") from exc
    # maddr is ignored (module docstring): received and rport, which the transport wrote from
    # the request's source, say where the request came from.
    host = top.params.get("received") or top.host
    rport = top.params.get("rport")
    port = int(rport) if rport and rport.isdigit() else (top.port or default_port)
    if not is_ip_literal(host):
        raise TransportError(f"will not resolve Via host {host!r} from a message")
    return host.strip("[]"), port


@implementer(ISipTransport)
class SipUdpProtocol(DatagramProtocol):
    """SIP over UDP (RFC 3261 18): parse in, serialise out, route responses by Via."""

    name = "UDP"
    reliable = False

    def __init__(
        self,
        sink: IMessageSink | None,
        host: str,
        port: int,
        max_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        self.sink = sink
        self.host = host
        self.port = port
        self.max_size = max_size
        self.dropped = 0

    # -- inbound

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        """Parse one datagram and hand it to the sink; nothing raises out of here."""
        if not data.strip(b"\r\n\t "):
            return  # RFC 5626 4.4.1: CRLF keep-alive
        try:
            self._receive(data, addr)
        except Exception:  # the server must survive any datagram (issue 5, Robustness)
            self.dropped += 1
            _limited.failure("sip-udp-unexpected", "unexpected error handling a datagram from {addr}",
                             addr=addr)

    def _receive(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > self.max_size:
            self.dropped += 1
            _limited.warn("sip-udp-oversized", "dropped oversized datagram of {size} bytes from {addr}",
                          size=len(data), addr=addr)
            return
        try:
            message = parse_message(data, self.max_size)
        except SipParseError as exc:
            self._reject(exc, addr)
            return
        if self.sink is None:
            return
        if isinstance(message, Request):
            try:
                stamp_via(message, addr, source_port=True)
                for name in ("From", "To", "Call-ID", "CSeq"):
                    if message.headers.get(name) is None:
                        raise SipParseError(f"missing {name}")
            except SipParseError as exc:
                exc.partial = exc.partial or message
                self._reject(exc, addr)
                return
            self.sink.request_received(message, addr)
        else:
            self.sink.response_received(message, addr)

    def _reject(self, exc: SipParseError, addr: tuple[str, int]) -> None:
        """Answer a bad request with 400 (or the implied code) when it can be routed."""
        self.dropped += 1
        partial = exc.partial
        call_id = partial.headers.get("Call-ID") if partial is not None else None
        _limited.info(
            "sip-udp-bad-message",
            "bad message from {addr} call_id={call_id}: {reason}",
            addr=addr,
            call_id=call_id,
            reason=exc.reason,
        )
        if partial is None or exc.status is None or partial.method == "ACK":
            return  # RFC 3261 17.1.1.3: ACK never gets a response
        try:
            parse_via(partial.headers.get("Via") or "")
        except SipParseError:
            return  # RFC 3261 18.2.2: no usable Via, nowhere to answer
        # The response copies whatever of From/To/Call-ID/CSeq the request had
        # (RFC 4475 3.3.1: missing mandatory headers still get their 400).
        response = make_response(partial, exc.status, None)
        response.reason = response.reason or "Bad Request"
        try:
            # Answer to where the bad message came from (RFC 3581 4 behaviour).
            self.transport.write(response.serialize(), addr)
        except OSError as err:
            _limited.warn("sip-udp-bad-message-answer", "could not answer bad message from {addr}: {error}",
                          addr=addr, error=err)

    # -- outbound

    def send_request(self, request: Request, destination: tuple[str, int]) -> None:
        """Send ``request`` to an already resolved (ip, port)."""
        self._write(request.serialize(), destination)

    def send_response(self, response: Response) -> None:
        """Send ``response`` per RFC 3261 18.2.2 / RFC 3581 4."""
        self._write(response.serialize(), response_destination(response))

    def _write(self, data: bytes, destination: tuple[str, int]) -> None:
        if len(data) > self.max_size:
            raise TransportError(f"message of {len(data)} bytes is too large for UDP")
        port = self.transport
        if port is None:
            raise TransportError("transport not listening")
        try:
            sock = getattr(port, "socket", None)
            if sock is not None and udp_family(destination[0]) == port.addressFamily:
                self._sendto(sock, data, destination)
            else:
                port.write(data, destination)  # Twisted checks (and refuses) the address
        except OSError as exc:
            raise TransportError(str(exc)) from exc

    @staticmethod
    def _sendto(sock, data: bytes, destination: tuple[str, int]) -> None:
        """What Twisted's UDP ``Port.write`` does for an address of the socket's family,
        without its per-datagram address checks (done once per address by ``udp_family``):
        a datagram too long raises ``MessageLengthError``, ICMP's port unreachable from an
        earlier datagram is ignored, any other error raises. (EINTR is retried by Python,
        PEP 475.)"""
        try:
            sock.sendto(data, destination)
        except OSError as exc:
            if exc.errno == EMSGSIZE:
                raise MessageLengthError("message too long") from None
            if exc.errno != ECONNREFUSED:
                raise
