"""Server transactions (RFC 3261 17.2): INVITE (Timers G, H, I) and non-INVITE (Timer J).

Each state is a method with its RFC section. The TU answers with :meth:`respond`; request
retransmissions are absorbed here (answered with the last response) and never reach the TU.
The INVITE server transaction sends 100 Trying by itself when the TU has not answered within
200 ms (17.2.1) and uses RFC 6026's Accepted state after a 2xx (Timer L).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import Interface

from cbserver.logs import Logger
from cbserver.sip.message import Request, Response, make_response
from cbserver.sip.timers import TRYING_DELAY, SipTimers
from cbserver.sip.transport import ISipTransport, TransportError
from cbserver.sip.txn_base import TransactionBase

__all__ = [
    "IServerTransactionUser",
    "ServerTransaction",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
]

log = Logger()


class IServerTransactionUser(Interface):
    """What a server transaction reports to its TU beyond the first request."""

    def ack_timed_out(txn):
        """Timer H fired: the ACK for our 3xx-6xx never came (RFC 3261 17.2.1)."""

    def transport_failed(txn, error):
        """A response could not be sent (RFC 3261 17.2.4)."""


class ServerTransaction(TransactionBase):
    """State shared by both server transaction kinds."""

    state: str = "trying"

    def __init__(
        self,
        request: Request,
        transport: ISipTransport,
        clock: IReactorTime,
        timers: SipTimers,
        key: tuple,
        on_terminated: Callable[[ServerTransaction], None] = lambda txn: None,
    ) -> None:
        self.request = request
        self.transport = transport
        self.clock = clock
        self.timers = timers
        self.key = key
        self.user: IServerTransactionUser | None = None
        self._on_terminated = on_terminated
        self.call_id = request.headers.get("Call-ID", "")
        self.last_response: Response | None = None
        self._timers: dict[str, IDelayedCall] = {}

    def _send(self, response: Response) -> bool:
        try:
            self.transport.send_response(response)
        except TransportError as exc:
            log.warn(
                "transport error sending {status} call_id={call_id}: {error}",
                status=response.status,
                call_id=self.call_id,
                error=exc,
            )
            # RFC 3261 17.2.4: tell the TU; the transaction ends.
            self._terminate()
            if self.user is not None:
                self.user.transport_failed(self, exc)
            return False
        return True

    def start(self) -> None:
        """Arm the timers that run from the moment the request arrives."""

    def respond(self, response: Response) -> None:
        """Send a response from the TU through the state machine."""
        raise NotImplementedError

    def receive_request(self, request: Request) -> None:
        """Feed a request matched to this transaction (retransmission or ACK)."""
        raise NotImplementedError


class ServerInviteTransaction(ServerTransaction):
    """RFC 3261 17.2.1 server INVITE transaction, with RFC 6026's Accepted state."""

    state = "proceeding"

    def start(self) -> None:
        """Enter Proceeding; send 100 Trying if the TU stays silent for 200 ms (17.2.1)."""
        self.state = "proceeding"
        self._start_timer("trying", TRYING_DELAY, self._send_trying)

    def _send_trying(self) -> None:
        if self.state == "proceeding" and self.last_response is None:
            self.last_response = make_response(self.request, 100, "Trying")
            self._send(self.last_response)

    def respond(self, response: Response) -> None:
        """Dispatch the TU's response to the current state."""
        getattr(self, "_respond_" + self.state)(response)

    def _respond_proceeding(self, response: Response) -> None:
        # RFC 3261 17.2.1, Proceeding: 1xx stays, 2xx -> Accepted (RFC 6026 8.5),
        # 3xx-6xx -> Completed with Timers G (UDP only) and H.
        self._cancel_timer("trying")
        self.last_response = response
        if not self._send(response):
            return
        if response.status < 200:
            return
        if response.status < 300:
            self.state = "accepted"
            self._start_timer("L", self.timers.L, self._terminate)
            return
        self.state = "completed"
        self._interval_g = self.timers.G
        if not self.timers.reliable:
            self._start_timer("G", self._interval_g, self._timer_g)
        self._start_timer("H", self.timers.H, self._timer_h)

    def _respond_accepted(self, response: Response) -> None:
        # RFC 6026 8.6: the TU's 2xx retransmissions pass through in Accepted.
        if 200 <= response.status < 300:
            self._send(response)

    def _respond_completed(self, response: Response) -> None:
        return None

    _respond_confirmed = _respond_completed
    _respond_terminated = _respond_completed

    def _timer_g(self) -> None:
        # RFC 3261 17.2.1: retransmit the final response, interval doubling up to T2.
        if self.state != "completed" or self.last_response is None:
            return
        if not self._send(self.last_response):
            return
        self._interval_g = min(2 * self._interval_g, self.timers.t2)
        self._start_timer("G", self._interval_g, self._timer_g)

    def _timer_h(self) -> None:
        # RFC 3261 17.2.1: no ACK within 64*T1: terminate and tell the TU.
        if self.state == "completed":
            self._terminate()
            if self.user is not None:
                self.user.ack_timed_out(self)

    def receive_request(self, request: Request) -> None:
        """Dispatch a retransmitted INVITE or an ACK to the current state."""
        getattr(self, "_request_" + self.state)(request)

    def _request_proceeding(self, request: Request) -> None:
        # RFC 3261 17.2.1: a retransmitted INVITE gets the last provisional again.
        if request.method == "INVITE" and self.last_response is not None:
            self._send(self.last_response)

    def _request_accepted(self, request: Request) -> None:
        # RFC 6026 8.7: INVITE retransmissions are absorbed; ACKs for 2xx go to the TU,
        # which the transaction layer does because it never routes ACKs here after 2xx.
        return None

    def _request_completed(self, request: Request) -> None:
        # RFC 3261 17.2.1, Completed: INVITE -> resend final; ACK -> Confirmed, Timer I.
        if request.method == "INVITE" and self.last_response is not None:
            self._send(self.last_response)
        elif request.method == "ACK":
            self.state = "confirmed"
            self._cancel_timer("G")
            self._cancel_timer("H")
            self._start_timer("I", self.timers.I, self._terminate)

    def _request_confirmed(self, request: Request) -> None:
        # RFC 3261 17.2.1, Confirmed: absorb ACK retransmissions until Timer I.
        return None

    def _request_terminated(self, request: Request) -> None:
        return None


class ServerNonInviteTransaction(ServerTransaction):
    """RFC 3261 17.2.2 server non-INVITE transaction."""

    state = "trying"

    def respond(self, response: Response) -> None:
        """Dispatch the TU's response to the current state."""
        getattr(self, "_respond_" + self.state)(response)

    def _respond_trying(self, response: Response) -> None:
        # RFC 3261 17.2.2, Trying: 1xx -> Proceeding; final -> Completed with Timer J.
        self._respond_proceeding(response)

    def _respond_proceeding(self, response: Response) -> None:
        # RFC 3261 17.2.2, Proceeding.
        self.last_response = response
        if not self._send(response):
            return
        if response.status < 200:
            self.state = "proceeding"
            return
        self.state = "completed"
        self._start_timer("J", self.timers.J, self._terminate)

    def _respond_completed(self, response: Response) -> None:
        # RFC 3261 17.2.2: further TU responses after the final are discarded.
        return None

    _respond_terminated = _respond_completed

    def receive_request(self, request: Request) -> None:
        """Dispatch a retransmitted request to the current state."""
        getattr(self, "_request_" + self.state)(request)

    def _request_trying(self, request: Request) -> None:
        # RFC 3261 17.2.2, Trying: retransmissions are discarded.
        return None

    def _request_proceeding(self, request: Request) -> None:
        # RFC 3261 17.2.2, Proceeding / Completed: resend the last response.
        if self.last_response is not None:
            self._send(self.last_response)

    _request_completed = _request_proceeding

    def _request_terminated(self, request: Request) -> None:
        return None
