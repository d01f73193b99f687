"""The transaction layer (RFC 3261 17): owns every transaction and matches messages to them.

It sits between the transport (as its :class:`IMessageSink`) and the transaction user (the
UA). Responses are matched to client transactions by branch and CSeq method (17.1.3); requests
to server transactions by branch, sent-by and method, with ACK matching its INVITE (17.2.3),
or by the RFC 2543 fallback when the branch lacks the magic cookie. Retransmissions are
absorbed by the matched transaction and never reach the UA.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from cbserver.logs import Logger, RateLimitedLog
from cbserver.sip.headers import parse_via_shared
from cbserver.sip.message import (
    BRANCH_COOKIE,
    Request,
    Response,
    SipParseError,
    make_response,
    parse_cseq,
    parse_name_addr,
)
from cbserver.sip.timers import SipTimers
from cbserver.sip.transport import IMessageSink, ISipTransport, TransportError
from cbserver.sip.txn_client import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    IClientTransactionUser,
)
from cbserver.sip.txn_server import (
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
)

__all__ = ["ITransactionUser", "TransactionLayer", "server_key", "client_key"]

log = Logger()
_limited = RateLimitedLog(log, lines=5, interval=60.0)  # errors caused by network input


class ITransactionUser(Interface):
    """The UA side of the transaction layer."""

    def request_received(request, txn, source):
        """A new request. ``txn`` is its server transaction, or None for an ACK to a 2xx."""

    def stray_response(response, source):
        """A response that matched no client transaction (RFC 3261 17.1.3; e.g. a late 2xx)."""


def client_key(message: Request | Response) -> tuple[str, str]:
    """RFC 3261 17.1.3: the top Via branch and the CSeq method."""
    via = parse_via_shared(message.headers.get("Via") or "")
    _, method = parse_cseq(message.headers.get("CSeq") or "")
    return via.branch or "", method


def server_key(request: Request, method: str | None = None) -> tuple:
    """RFC 3261 17.2.3: how a request is matched to a server transaction.

    ``method`` overrides the request's method (used to find the INVITE a CANCEL or ACK
    refers to). ACK is folded into INVITE.
    """
    method = method or request.method
    if method == "ACK":
        method = "INVITE"
    via = parse_via_shared(request.headers.get("Via") or "")
    branch = via.branch or ""
    if branch.startswith(BRANCH_COOKIE):
        # RFC 3261 17.2.3 matches on branch, sent-by and method. Call-ID and CSeq number are
        # added because they never differ within one transaction (retransmissions, the ACK
        # for a non-2xx and a CANCEL all repeat them), and they keep a client that reuses a
        # branch value for a new request (RFC 4475's messages do) from being taken for a
        # retransmission.
        number, _ = parse_cseq(request.headers.get("CSeq") or "")
        return (branch, via.host.lower(), via.port or 5060, method,
                request.headers.get("Call-ID"), number)  # fmt: skip
    # RFC 3261 17.2.3 fallback for RFC 2543 peers: Request-URI, From tag, Call-ID, CSeq
    # number and top Via identify the transaction.
    number, _ = parse_cseq(request.headers.get("CSeq") or "")
    from_tag = parse_name_addr(request.headers.get("From") or "").tag
    return ("2543", request.uri, from_tag, request.headers.get("Call-ID"), number, str(via), method)


@implementer(IMessageSink)
class TransactionLayer:
    """Creates, matches and forgets transactions for one transport."""

    def __init__(
        self,
        transport: ISipTransport,
        clock: IReactorTime,
        timers: SipTimers,
        user: ITransactionUser | None = None,
    ) -> None:
        self.transport = transport
        self.clock = clock
        self.timers = timers.for_transport(transport.reliable)
        self.user = user
        self.clients: dict[tuple, ClientTransaction] = {}
        self.servers: dict[tuple, ServerTransaction] = {}

    # -- client side

    def send_invite(
        self, request: Request, destination: tuple[str, int], owner: IClientTransactionUser
    ) -> ClientInviteTransaction:
        """Start an INVITE client transaction (RFC 3261 17.1.1)."""
        return self._start_client(ClientInviteTransaction, request, destination, owner)

    def send_request(
        self, request: Request, destination: tuple[str, int], owner: IClientTransactionUser
    ) -> ClientNonInviteTransaction:
        """Start a non-INVITE client transaction (RFC 3261 17.1.2)."""
        return self._start_client(ClientNonInviteTransaction, request, destination, owner)

    def _start_client(self, kind, request: Request, destination: tuple[str, int],
                      owner: IClientTransactionUser):
        """Create, register and start a client transaction of class ``kind``."""
        txn = kind(request, destination, self.transport, self.clock, self.timers, owner,
                   self._forget_client)
        self.clients[txn.key] = txn
        txn.start()
        return txn

    def _forget_client(self, txn: ClientTransaction) -> None:
        if self.clients.get(txn.key) is txn:
            del self.clients[txn.key]

    # -- server side

    def find_server(self, request: Request, method: str) -> ServerTransaction | None:
        """The server transaction ``request`` would match if it had ``method`` (RFC 3261 9.2)."""
        try:
            return self.servers.get(server_key(request, method))
        except SipParseError:
            return None

    def _forget_server(self, txn: ServerTransaction) -> None:
        if self.servers.get(txn.key) is txn:
            del self.servers[txn.key]

    # -- IMessageSink

    def request_received(self, request: Request, source: tuple[str, int]) -> None:
        """Match a request to a server transaction or create one (RFC 3261 17.2.3)."""
        try:
            key = server_key(request)
        except SipParseError as exc:
            # A CSeq or Via we cannot read: no transaction can hold it, so answer 400
            # statelessly (RFC 3261 8.2: malformed request), never an ACK (17.1.1.3).
            _limited.info(
                "sip-unmatchable-request",
                "unmatchable request call_id={call_id}: {reason}",
                call_id=request.headers.get("Call-ID"),
                reason=exc.reason,
            )
            if request.method != "ACK":
                try:
                    self.transport.send_response(make_response(request, 400, exc.reason))
                except TransportError as err:
                    _limited.info("sip-400-not-sent", "400 not sent: {error}", error=err)
            return
        txn = self.servers.get(key)
        if request.method == "ACK":
            # An ACK for a 3xx-6xx belongs to the INVITE transaction (17.2.1); an ACK for a
            # 2xx (Accepted state, RFC 6026 8.7) goes to the TU.
            if txn is not None and txn.state in ("completed", "confirmed"):
                txn.receive_request(request)
            elif self.user is not None:
                self.user.request_received(request, None, source)
            return
        if txn is not None:
            txn.receive_request(request)  # a retransmission: absorbed
            return
        cls = ServerInviteTransaction if request.method == "INVITE" else ServerNonInviteTransaction
        txn = cls(request, self.transport, self.clock, self.timers, key, self._forget_server)
        self.servers[key] = txn
        txn.start()
        if self.user is not None:
            self.user.request_received(request, txn, source)

    def response_received(self, response: Response, source: tuple[str, int]) -> None:
        """Match a response to its client transaction (RFC 3261 17.1.3)."""
        try:
            key = client_key(response)
        except SipParseError as exc:
            _limited.info("sip-unmatchable-response", "unmatchable response dropped: {reason}",
                          reason=exc.reason)
            return
        txn = self.clients.get(key)
        if txn is not None:
            txn.receive_response(response)
        elif self.user is not None:
            self.user.stray_response(response, source)

    def destination_failed(self, destination: tuple[str, int], error: Exception) -> None:
        """End the client transactions waiting on an unreachable destination (17.1.4)."""
        for txn in list(self.clients.values()):
            if txn.destination == destination:
                txn.fail_transport(error)

    def stop(self) -> None:
        """Terminate every transaction, cancelling all their timers."""
        for txn in list(self.clients.values()) + list(self.servers.values()):
            txn.terminate()
