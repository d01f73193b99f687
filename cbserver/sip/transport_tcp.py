"""SIP over TCP (RFC 3261 18): connections, Content-Length framing, response routing.

One :class:`SipTcpTransport` owns every connection, inbound and outbound, keyed by the
peer's (ip, port). Messages are framed by Content-Length with the message module's
``StreamParser``; a framing error closes the connection, an unparseable but framed request
gets a 400 on it. Requests are sent on an open connection to the destination or on a new
one (messages queue while it connects); a failed connect is reported to the sink's
``destination_failed`` so the transactions waiting on it end (RFC 3261 17.1.4).

Responses go back on the connection the request came in on (RFC 3261 18.2.2): every request
read is remembered by its top Via (branch and sent-by, which its responses copy) against its
connection, a bounded number per connection, forgotten when the connection closes. When that
connection is gone the response goes to ``received`` and the Via port, on a connection to
exactly that address or a new one; never on some other connection that merely shares the
host (two phones behind one NAT, or our own connection to a trunk's port 5060, are not the
connection the request used).
"""

from __future__ import annotations

from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from cbserver.logs import Logger, RateLimitedLog
from cbserver.sip.message import (
    MAX_MESSAGE_SIZE,
    Request,
    Response,
    SipParseError,
    StreamParser,
    make_response,
    parse_via,
)
from cbserver.sip.transport import (
    IMessageSink,
    ISipTransport,
    TransportError,
    response_destination,
    stamp_via,
)

__all__ = ["SipTcpTransport", "SipStreamProtocol"]

log = Logger()
_limited = RateLimitedLog(log, lines=5, interval=60.0)  # errors caused by network input

#: Requests remembered per connection for routing their responses (RFC 3261 18.2.2); a
#: server transaction ends within 64*T1, so only a flood of requests on one connection can
#: push out one still answering, and its response then falls back to received + Via port.
ORIGINS_PER_CONNECTION = 512


def via_key(message: Request | Response) -> tuple[str, str, int | None] | None:
    """(branch, sent-by host, sent-by port) of the top Via: what a response copies of its
    request (RFC 3261 8.2.6.2) and what names its transaction (17.2.3); None without one."""
    top = message.headers.get("Via")
    if top is None:
        return None
    try:
        via = parse_via(top)
    except SipParseError:
        return None
    if not via.branch:
        return None
    return via.branch, via.host.lower(), via.port


class SipStreamProtocol(Protocol):
    """One TCP connection carrying SIP messages."""

    def __init__(self, owner: SipTcpTransport) -> None:
        self.owner = owner
        self.peer: tuple[str, int] | None = None
        self.origins: list = []  # Via keys of requests read here, oldest first
        self.parser = StreamParser(owner.max_size, on_error=self._bad_message)

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        """Register the connection under its peer address and flush queued messages."""
        addr = self.transport.getPeer()
        self.peer = (addr.host, addr.port)
        self.owner.connection_made(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        """Frame messages; nothing raised by the peer's bytes escapes (it closes instead)."""
        try:
            messages = self.parser.feed(data)
        except SipParseError as exc:
            _limited.info("sip-tcp-framing", "closing {peer}: framing error {reason}", peer=self.peer,
                          reason=exc.reason)
            self.transport.loseConnection()
            return
        for message in messages:
            try:
                self.owner.deliver(message, self)
            except Exception:  # a bug behind us must not kill the connection's reader
                _limited.failure("sip-tcp-unexpected", "error handling a message from {peer}",
                                 peer=self.peer)

    def _bad_message(self, exc: SipParseError) -> None:
        """A framed message that does not parse: 400 on this connection when possible."""
        partial = exc.partial
        if partial is None or exc.status is None or partial.method == "ACK":
            return
        if not all(partial.headers.get(n) for n in ("Via", "From", "To", "Call-ID", "CSeq")):
            return
        response = make_response(partial, exc.status, None)
        self.transport.write(response.serialize())

    def connectionLost(self, reason) -> None:  # noqa: N802 - Twisted API
        """Forget the connection."""
        self.owner.connection_lost(self)


@implementer(ISipTransport)
class SipTcpTransport:
    """SIP over TCP for the transaction layer; ``reactor`` provides IReactorTCP."""

    name = "TCP"
    reliable = True

    def __init__(
        self, reactor, sink: IMessageSink | None, host: str, port: int, max_size: int = MAX_MESSAGE_SIZE,
        *, bind_address: str | None = None,
    ) -> None:
        """``bind_address``: the local address our outgoing connections leave from (the
        ``sip.listen`` address), so a trunk that admits calls by source address sees the
        address it was told about; None (or the unspecified address) lets the kernel choose."""
        self.reactor = reactor
        self.bind_address = None if bind_address in (None, "", "0.0.0.0", "::") else bind_address
        self.sink = sink
        self.host = host
        self.port = port
        self.max_size = max_size
        self.connections: dict[tuple[str, int], SipStreamProtocol] = {}
        # top-Via key of a request read -> the connection it came on (RFC 3261 18.2.2)
        self.origins: dict[tuple, SipStreamProtocol] = {}
        self._pending: dict[tuple[str, int], list[bytes]] = {}

    def factory(self) -> Factory:
        """The factory to listen with (``reactor.listenTCP(port, transport.factory())``)."""
        return Factory.forProtocol(lambda: SipStreamProtocol(self))

    # -- connection bookkeeping

    def connection_made(self, proto: SipStreamProtocol) -> None:
        """A connection (either direction) is up: index it and send what waited for it."""
        self.connections[proto.peer] = proto
        for data in self._pending.pop(proto.peer, []):
            proto.transport.write(data)

    def connection_lost(self, proto: SipStreamProtocol) -> None:
        """Drop a closed connection from the index."""
        if self.connections.get(proto.peer) is proto:
            del self.connections[proto.peer]
        for key in proto.origins:
            if self.origins.get(key) is proto:
                del self.origins[key]
        proto.origins = []

    def _remember_origin(self, request: Request, proto: SipStreamProtocol) -> None:
        """Note the connection ``request`` came on, for its responses (RFC 3261 18.2.2).

        The first connection to use a Via key keeps it while it is open: a stranger's
        connection repeating someone else's branch does not capture their responses.
        """
        key = via_key(request)
        if key is None:
            return
        held = self.origins.get(key)
        if held is not None:
            return  # a retransmission (same connection) or someone else's key
        self.origins[key] = proto
        proto.origins.append(key)
        if len(proto.origins) > ORIGINS_PER_CONNECTION:
            old = proto.origins.pop(0)
            if self.origins.get(old) is proto:
                del self.origins[old]

    def deliver(self, message: Request | Response, proto: SipStreamProtocol) -> None:
        """Hand a framed message to the sink, stamping requests' Via (RFC 3261 18.2.1)."""
        if self.sink is None:
            return
        if isinstance(message, Request):
            stamp_via(message, proto.peer)
            self._remember_origin(message, proto)
            self.sink.request_received(message, proto.peer)
        else:
            self.sink.response_received(message, proto.peer)

    # -- outbound

    def send_request(self, request: Request, destination: tuple[str, int]) -> None:
        """Send on an open connection to ``destination``, or connect and queue."""
        self._send(request.serialize(), destination)

    def send_response(self, response: Response) -> None:
        """RFC 3261 18.2.2: the connection the request came on, else received + Via port."""
        key = via_key(response)
        proto = self.origins.get(key) if key is not None else None
        data = response.serialize()
        if proto is not None:
            proto.transport.write(data)
            return
        # That connection has closed (or the request never came over TCP): "open a
        # connection to the IP address in the received parameter, using the port in sent-by".
        self._send(data, response_destination(response))

    def _send(self, data: bytes, destination: tuple[str, int]) -> None:
        if len(data) > self.max_size:
            raise TransportError(f"message of {len(data)} bytes is too large")
        proto = self.connections.get(destination)
        if proto is not None:
            proto.transport.write(data)
            return
        queue = self._pending.setdefault(destination, [])
        queue.append(data)
        if len(queue) == 1:
            self._connect(destination)

    def _connect(self, destination: tuple[str, int]) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, connectProtocol

        host, port = destination
        v6 = ":" in host
        cls = TCP6ClientEndpoint if v6 else TCP4ClientEndpoint
        # Leave from the listen address when it is of the destination's family; port 0: the
        # kernel picks an ephemeral source port (RFC 3261 18.1.1 only names the destination).
        bind = None
        if self.bind_address is not None and (":" in self.bind_address) == v6:
            bind = (self.bind_address, 0)
        endpoint = cls(self.reactor, host, port, timeout=10, bindAddress=bind)
        d = connectProtocol(endpoint, SipStreamProtocol(self))
        d.addErrback(self._connect_failed, destination)
        d.addErrback(lambda f: log.failure("connecting to {dest}", f, dest=destination))

    def _connect_failed(self, failure, destination: tuple[str, int]) -> None:
        dropped = self._pending.pop(destination, [])
        log.warn(
            "cannot connect to {dest}: {error} ({n} messages dropped)",
            dest=destination,
            error=failure.getErrorMessage(),
            n=len(dropped),
        )
        notify = getattr(self.sink, "destination_failed", None)
        if notify is not None:
            notify(destination, TransportError(failure.getErrorMessage()))

    def close(self) -> None:
        """Close every connection."""
        for proto in list(self.connections.values()):
            proto.transport.loseConnection()
        self._pending.clear()
