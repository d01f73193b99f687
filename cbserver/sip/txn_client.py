"""Client transactions (RFC 3261 17.1): INVITE (Timers A, B, D) and non-INVITE (E, F, K).

Each transaction is one state machine; each state is a method named after the state with the
RFC section beside it. The transaction user (TU) is told about responses, timeouts and
transport errors through :class:`IClientTransactionUser`. The INVITE client transaction uses
the RFC 6026 "Accepted" state so that 2xx retransmissions reach the TU (which re-ACKs them,
RFC 3261 13.2.2.4) instead of being treated as strays.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import Attribute, Interface, implementer

from cbserver.logs import Logger
from cbserver.sip.headers import parse_via_shared
from cbserver.sip.message import Headers, Request, Response
from cbserver.sip.timers import SipTimers
from cbserver.sip.transport import ISipTransport, TransportError
from cbserver.sip.txn_base import TransactionBase

__all__ = [
    "IClientTransactionUser",
    "ClientTransaction",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "build_ack_for_non_2xx",
    "build_cancel",
    "branch_of",
]

log = Logger()


class IClientTransactionUser(Interface):
    """What a client transaction reports to its owner (the TU)."""

    def response_received(txn, response):
        """A response passed up: every 1xx, the first final, and (INVITE) 2xx retransmits."""

    def transaction_timed_out(txn):
        """Timer B or F fired without a final response (RFC 3261 17.1.1.2, 17.1.2.2)."""

    def transport_failed(txn, error):
        """The transport could not send the request (RFC 3261 17.1.4)."""


class ClientTransaction(TransactionBase):
    """State shared by both client transaction kinds: request, destination, timers, TU."""

    state: str = "calling"
    key = Attribute("(branch, method) used to match responses (RFC 3261 17.1.3)")

    def __init__(
        self,
        request: Request,
        destination: tuple[str, int],
        transport: ISipTransport,
        clock: IReactorTime,
        timers: SipTimers,
        user: IClientTransactionUser,
        on_terminated: Callable[[ClientTransaction], None] = lambda txn: None,
    ) -> None:
        self.request = request
        self.destination = destination
        self.transport = transport
        self.clock = clock
        self.timers = timers
        self.user = user
        self._on_terminated = on_terminated
        self.branch = branch_of(request)
        self.key = (self.branch, request.method)
        self.call_id = request.headers.get("Call-ID", "")
        self.last_response: Response | None = None
        self._timers: dict[str, IDelayedCall] = {}
        self._starting = False  # inside start(): the caller does not hold us yet

    # -- helpers

    def _send(self, message: Request) -> bool:
        try:
            self.transport.send_request(message, self.destination)
        except TransportError as exc:
            log.warn(
                "transport error sending {method} call_id={call_id}: {error}",
                method=message.method,
                call_id=self.call_id,
                error=exc,
            )
            # RFC 3261 17.1.1.2 / 17.1.2.2: a transport error terminates the transaction.
            self._terminate()
            self._tell_transport_failed(exc)
            return False
        return True

    def fail_transport(self, error: Exception) -> None:
        """The transport reported, later, that the request could not be delivered (17.1.4)."""
        if self.state in ("calling", "trying", "proceeding"):
            self._terminate()
            self._tell_transport_failed(error)

    def _tell_transport_failed(self, error: Exception) -> None:
        """Report a transport error to the TU, which must already hold this transaction.

        A failure raised while ``start`` sends the first request happens before
        ``send_invite``/``send_request`` has returned the transaction to its user, who would
        not recognise it and drop the event (a BYE's outcome never known, a call stuck): it
        is reported on the next turn of the injected clock instead.
        """
        if self._starting:
            self.clock.callLater(0, self.user.transport_failed, self, error)
        else:
            self.user.transport_failed(self, error)

    def start(self) -> None:
        """Send the request and arm the first timers (the subclass's ``_begin``)."""
        self._starting = True
        try:
            self._begin()
        finally:
            self._starting = False

    def _begin(self) -> None:
        """Enter the first state: send the request, arm its timers."""
        raise NotImplementedError

    def receive_response(self, response: Response) -> None:
        """Feed a response matched to this transaction (RFC 3261 17.1.3)."""
        raise NotImplementedError


class ClientInviteTransaction(ClientTransaction):
    """RFC 3261 17.1.1 client INVITE transaction, with RFC 6026's Accepted state."""

    def _begin(self) -> None:
        """Enter Calling: send the INVITE, start Timers A (UDP only) and B (17.1.1.2)."""
        self.state = "calling"
        self._interval_a = self.timers.A
        if not self._send(self.request):
            return
        if not self.timers.reliable:
            self._start_timer("A", self._interval_a, self._timer_a)
        self._start_timer("B", self.timers.B, self._timer_b)

    def _timer_a(self) -> None:
        # RFC 3261 17.1.1.2: retransmit and double the interval (no T2 cap for INVITE).
        if self.state != "calling":
            return
        if not self._send(self.request):
            return
        self._interval_a *= 2
        self._start_timer("A", self._interval_a, self._timer_a)

    def _timer_b(self) -> None:
        # RFC 3261 17.1.1.2: Timer B only times out the transaction in Calling; once a
        # provisional arrived, ending the call is the TU's business (CANCEL, RFC 3261 9.1).
        if self.state == "calling":
            self._terminate()
            self.user.transaction_timed_out(self)

    def receive_response(self, response: Response) -> None:
        """Dispatch to the current state's handler."""
        getattr(self, "_in_" + self.state)(response)

    def _in_calling(self, response: Response) -> None:
        # RFC 3261 17.1.1.2, Calling: 1xx -> Proceeding, 2xx -> Accepted, 3xx-6xx -> Completed.
        self._cancel_timer("A")
        self._in_proceeding(response)

    def _in_proceeding(self, response: Response) -> None:
        # RFC 3261 17.1.1.2, Proceeding.
        self.last_response = response
        if response.status < 200:
            self.state = "proceeding"
            self._cancel_timer("B")
            self.user.response_received(self, response)
        elif response.status < 300:
            # RFC 6026 7.2: Accepted, Timer M; the TU builds the ACK for 2xx (13.2.2.4).
            self.state = "accepted"
            self._cancel_timer("B")
            self._start_timer("M", self.timers.M, self._accepted_over)
            self.user.response_received(self, response)
        else:
            self.state = "completed"
            self._cancel_timer("B")
            self._ack = build_ack_for_non_2xx(self.request, response)
            self._send(self._ack)
            if self.state == "completed":
                self._start_timer("D", self.timers.D, self._terminate)
                self.user.response_received(self, response)
                # Completed re-sends the ACK by itself (17.1.1.2): the TU (the call, and
                # through it the whole callback) need not stay alive for Timer D.
                if self.state == "completed":
                    self.user = _ABSORBED

    def _accepted_over(self) -> None:
        """Timer M fired: Terminated; no 2xx retransmission is coming for the TU any more."""
        self._terminate()
        self.user = _ABSORBED

    def _in_accepted(self, response: Response) -> None:
        # RFC 6026 7.2: 2xx retransmissions go to the TU; anything else is absorbed.
        if 200 <= response.status < 300:
            self.user.response_received(self, response)

    def _in_completed(self, response: Response) -> None:
        # RFC 3261 17.1.1.2: a retransmitted final response is answered with the same ACK.
        if response.status >= 300:
            self._send(self._ack)

    def _in_terminated(self, response: Response) -> None:
        return None


class ClientNonInviteTransaction(ClientTransaction):
    """RFC 3261 17.1.2 client non-INVITE transaction."""

    state = "trying"

    def _begin(self) -> None:
        """Enter Trying: send, start Timers E (UDP only) and F (17.1.2.2)."""
        self.state = "trying"
        self._interval_e = self.timers.E
        if not self._send(self.request):
            return
        if not self.timers.reliable:
            self._start_timer("E", self._interval_e, self._timer_e)
        self._start_timer("F", self.timers.F, self._timer_f)

    def _timer_e(self) -> None:
        # RFC 3261 17.1.2.2: Trying doubles up to T2; Proceeding retransmits every T2.
        if self.state not in ("trying", "proceeding"):
            return
        if not self._send(self.request):
            return
        if self.state == "trying":
            self._interval_e = min(2 * self._interval_e, self.timers.t2)
        else:
            self._interval_e = self.timers.t2
        self._start_timer("E", self._interval_e, self._timer_e)

    def _timer_f(self) -> None:
        # RFC 3261 17.1.2.2: Timer F in Trying or Proceeding is a timeout.
        if self.state in ("trying", "proceeding"):
            self._terminate()
            self.user.transaction_timed_out(self)

    def receive_response(self, response: Response) -> None:
        """Dispatch to the current state's handler."""
        getattr(self, "_in_" + self.state)(response)

    def _in_trying(self, response: Response) -> None:
        # RFC 3261 17.1.2.2, Trying: 1xx -> Proceeding; final -> Completed (Timer K).
        self._in_proceeding(response)

    def _in_proceeding(self, response: Response) -> None:
        # RFC 3261 17.1.2.2, Proceeding.
        self.last_response = response
        if response.status < 200:
            self.state = "proceeding"
        else:
            self.state = "completed"
            self._cancel_timer("E")
            self._cancel_timer("F")
            self._start_timer("K", self.timers.K, self._terminate)
        self.user.response_received(self, response)
        if self.state == "completed":
            # Completed only absorbs retransmitted responses: neither the request nor the
            # TU is needed any more, and not holding them for T4 keeps the heap small.
            self.request = None
            self.last_response = None
            self.user = _ABSORBED

    def _in_completed(self, response: Response) -> None:
        # RFC 3261 17.1.2.2: retransmitted responses are absorbed in Completed.
        return None

    def _in_terminated(self, response: Response) -> None:
        return None


@implementer(IClientTransactionUser)
class _Absorbed:
    """Stands in for the TU once a non-INVITE transaction has delivered its final response."""

    def response_received(self, txn, response) -> None:
        """Never called: Completed absorbs retransmissions."""

    def transaction_timed_out(self, txn) -> None:
        """Never called: Timer F is cancelled in Completed."""

    def transport_failed(self, txn, error) -> None:
        """Never called: Completed sends nothing."""


_ABSORBED = _Absorbed()


def branch_of(message: Request | Response) -> str:
    """The branch parameter of the top Via (RFC 3261 8.1.1.7), or '' when there is none."""
    top = message.headers.get("Via")
    if top is None:
        return ""
    return parse_via_shared(top).branch or ""


def build_ack_for_non_2xx(invite: Request, response: Response) -> Request:
    """The ACK the INVITE client transaction sends for a 3xx-6xx (RFC 3261 17.1.1.3)."""
    h = Headers()
    # 17.1.1.3: only the top Via of the original request, same branch.
    h.add("Via", invite.headers.get("Via") or "")
    for route in invite.headers.get_all("Route"):
        h.add("Route", route)
    h.add("Max-Forwards", "70")
    h.add("From", invite.headers.get("From") or "")
    # 17.1.1.3: To is the To of the response being acknowledged (it carries the tag).
    h.add("To", response.headers.get("To") or invite.headers.get("To") or "")
    h.add("Call-ID", invite.headers.get("Call-ID") or "")
    number = (invite.headers.get("CSeq") or "0 INVITE").split()[0]
    h.add("CSeq", f"{number} ACK")
    h.add("Content-Length", "0")
    return Request(method="ACK", uri=invite.uri, headers=h, body=b"")


def build_cancel(invite: Request) -> Request:
    """The CANCEL for a pending INVITE (RFC 3261 9.1).

    Same Request-URI, Call-ID, From, To (without a tag the INVITE did not have), CSeq number
    and Route set, and a single Via equal to the INVITE's top Via, so that it matches the
    INVITE's server transaction at the far end.
    """
    h = Headers()
    h.add("Via", invite.headers.get("Via") or "")
    for route in invite.headers.get_all("Route"):
        h.add("Route", route)
    h.add("Max-Forwards", "70")
    h.add("From", invite.headers.get("From") or "")
    h.add("To", invite.headers.get("To") or "")
    h.add("Call-ID", invite.headers.get("Call-ID") or "")
    number = (invite.headers.get("CSeq") or "0 INVITE").split()[0]
    h.add("CSeq", f"{number} CANCEL")
    h.add("Content-Length", "0")
    return Request(method="CANCEL", uri=invite.uri, headers=h, body=b"")
