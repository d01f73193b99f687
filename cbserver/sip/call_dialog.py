"""The confirmed-dialog half of a call: in-dialog requests both ways, session timers, keepalive.

Mixed into :class:`cbserver.sip.call.Call`. Outgoing: re-INVITE, UPDATE, INFO, OPTIONS and
BYE, with digest retry and RFC 3261 12.2.1.2's rule that a 481 or 408 ends the dialog.
Incoming: BYE, re-INVITE (2xx retransmitted until ACK, RFC 3261 13.3.1.4), UPDATE (RFC 3311),
INFO (RFC 6086), OPTIONS. Session timers follow RFC 4028 when the far end asks for them; a
periodic in-dialog OPTIONS ends a dialog whose far end vanished.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail
from zope.interface import implementer

from cbserver.logs import Logger
from cbserver.sip.auth import AuthAttempts, AuthError, pick_challenge
from cbserver.sip.dialog import DialogError
from cbserver.sip.message import Request, Response, make_response, new_branch
from cbserver.sip.transport import TransportError
from cbserver.sip.txn_client import IClientTransactionUser

__all__ = ["DialogMixin", "CallError", "CallStateError", "is_sdp"]

log = Logger()


class CallError(Exception):
    """An operation on a call failed; ``status`` is the SIP status that said so."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class CallStateError(Exception):
    """The call is not in a state where the operation makes sense."""


def is_sdp(message: Request | Response) -> bool:
    """True when the message carries a body of type application/sdp."""
    ctype = (message.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return bool(message.body) and ctype == "application/sdp"


def _parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
    """``delta[;refresher=uac|uas]`` (RFC 4028 4) -> (delta, refresher) or None."""
    if not value:
        return None
    parts = [p.strip() for p in value.split(";")]
    if not parts[0].isdigit() or int(parts[0]) <= 0:
        return None
    refresher = None
    for p in parts[1:]:
        name, _, v = p.partition("=")
        if name.strip().lower() == "refresher" and v.strip().lower() in ("uac", "uas"):
            refresher = v.strip().lower()
    return int(parts[0]), refresher


class DialogMixin:
    """In-dialog behaviour of a :class:`~cbserver.sip.call.Call` (see the module docstring)."""

    def __init__(self) -> None:
        self._reinvite_pending = False
        self._reinvite_acks: dict[int, Request] = {}
        self._ok_to_ack: Response | None = None

    # -- lifecycle hooks called by Call

    def dialog_started(self, response: Response) -> None:
        """The INVITE was answered: start the session timer and the keepalive."""
        self._apply_session_timer(response.headers.get("Session-Expires"), we_sent=True)
        self._schedule_keepalive()

    def dialog_stopping(self) -> None:
        """Stop every dialog timer (keepalive, session timer, 2xx retransmission)."""
        for name in ("keepalive", "refresh", "expire", "ok-retx", "ok-giveup"):
            self._cancel_timer(name)

    # -- outgoing in-dialog requests

    def request(self, method: str, body: bytes = b"", content_type: str | None = None, extra=()) -> Deferred:
        """Send an in-dialog request; the Deferred fires with its final Response.

        A timeout is reported as a 408 and a transport error as a 503 (RFC 3261 8.1.3.1).
        A 401/407 is answered once per realm (RFC 3261 22.2).
        """
        if self.dialog is None:
            return fail(CallStateError(f"{method} needs an established dialog"))
        pending = _Pending(self, method, body, content_type, list(extra))
        pending.send()
        return pending.deferred

    def _build(self, method, body, content_type, extra) -> Request:
        req = self.dialog.new_request(
            method, self.ua.via(new_branch()), contact=self.ua.contact(), body=body,
            content_type=content_type,
        )  # fmt: skip
        req.headers.add("User-Agent", self.ua.config.user_agent)
        for name, value in extra:
            req.headers.add(name, value)
        return req

    def _checked(self, method: str, response: Response):
        """Turn a final response into a result or a CallError (12.2.1.2: 481/408 end it)."""
        if 200 <= response.status < 300:
            return response
        if response.status in (481, 408) and self.state == "confirmed":
            self._remote_gone(f"{response.status} to {method}")
        raise CallError(response.status, response.reason)

    def _remote_gone(self, reason: str) -> None:
        log.info("dialog gone ({reason}) call_id={call_id}", reason=reason, call_id=self.call_id)
        self.dialog_stopping()
        if reason.startswith("408"):
            self._send_bye_quietly()
        self._end(True, reason)

    def reinvite(self, sdp: bytes) -> Deferred:
        """Send a re-INVITE with ``sdp`` (RFC 3261 14.1); fires with the remote SDP."""
        if self.state != "confirmed":
            return fail(CallStateError(f"re-INVITE in state {self.state}"))
        if self._reinvite_pending:
            return fail(CallError(491, "Request Pending"))  # RFC 3261 14.1: one at a time
        self._reinvite_pending = True
        extra = self._session_refresh_headers()
        d = self.request("INVITE", sdp, "application/sdp", extra)

        def done(response):
            self._reinvite_pending = False
            return response

        d.addBoth(done)
        d.addCallback(lambda r: self._checked("INVITE", r))
        d.addCallback(self._offer_accepted, sdp)
        return d

    def update(self, sdp: bytes) -> Deferred:
        """Send an UPDATE with ``sdp`` (RFC 3311); fires with the remote SDP."""
        if self.state != "confirmed":
            return fail(CallStateError(f"UPDATE in state {self.state}"))
        d = self.request("UPDATE", sdp, "application/sdp", self._session_refresh_headers())
        d.addCallback(lambda r: self._checked("UPDATE", r))
        d.addCallback(self._offer_accepted, sdp)
        return d

    def _offer_accepted(self, response: Response, sdp: bytes) -> bytes | None:
        self.local_sdp = sdp
        if response.body:
            self.remote_sdp = response.body
        self._apply_session_timer(response.headers.get("Session-Expires"), we_sent=True)
        return self.remote_sdp

    def send_info(self, content_type: str, body: bytes) -> Deferred:
        """Send INFO (RFC 6086), e.g. DTMF relay; fires with the 2xx."""
        if self.state != "confirmed":
            return fail(CallStateError(f"INFO in state {self.state}"))
        d = self.request("INFO", body, content_type)
        d.addCallback(lambda r: self._checked("INFO", r))
        return d

    def reack(self, response: Response) -> None:
        """Re-send the ACK for a retransmitted 2xx to one of our re-INVITEs (13.2.2.4)."""
        number = int((response.headers.get("CSeq") or "0").split()[0])
        ack = self._reinvite_acks.get(number)
        if ack is not None:
            self._send_request_quietly(ack)

    def _ack_reinvite(self, request: Request, response: Response) -> None:
        number = int((request.headers.get("CSeq") or "0").split()[0])
        if number not in self._reinvite_acks:
            self.dialog.refresh_target(response)  # RFC 3261 12.2.1.2 target refresh
            self._reinvite_acks = {number: self.dialog.ack_for_2xx(number, self.ua.via(new_branch()))}
        self._send_request_quietly(self._reinvite_acks[number])

    def _send_request_quietly(self, request: Request) -> None:
        try:
            self.ua.transport.send_request(request, self.ua.destination_for(self.dialog))
        except TransportError as exc:
            log.warn(
                "{method} not sent call_id={call_id}: {error}",
                method=request.method,
                call_id=self.call_id,
                error=exc,
            )

    # -- keepalive

    def _schedule_keepalive(self) -> None:
        interval = self.ua.config.keepalive_interval
        if interval and self.state == "confirmed":
            self._start_timer("keepalive", interval, self._keepalive)

    def _keepalive(self) -> None:
        """In-dialog OPTIONS: a 481 or 408 means the far end forgot the call (12.2.1.2)."""
        if self.state != "confirmed":
            return
        d = self.request("OPTIONS")
        d.addCallback(lambda r: self._checked("OPTIONS", r))
        d.addCallbacks(lambda _: self._schedule_keepalive(), self._keepalive_failed)
        d.addErrback(lambda f: log.failure("keepalive call_id={call_id}", f, call_id=self.call_id))

    def _keepalive_failed(self, failure) -> None:
        failure.trap(CallError)
        self._schedule_keepalive()  # other errors (405, 501...) still prove it is alive

    # -- session timers (RFC 4028)

    def _session_refresh_headers(self) -> list[tuple[str, str]]:
        if self._session is None:
            return []
        delta, _ = self._session
        return [("Supported", "timer"), ("Session-Expires", f"{delta};refresher=uac")]

    _session: tuple[int, bool] | None = None  # (interval, we refresh)

    def _apply_session_timer(self, value: str | None, we_sent: bool) -> None:
        """Arm the refresh or expiry timer from a Session-Expires (RFC 4028 7.2, 9, 10).

        ``we_sent`` is True when the header came in a response to our request (so ``uac``
        means us) and False when it came in the far end's request (``uac`` means them).
        """
        parsed = _parse_session_expires(value)
        if parsed is None:
            return
        delta, refresher = parsed
        if refresher is None:
            refresher = "uac"  # RFC 4028 9: the UAS says; absent, the request's sender refreshes
        we_refresh = (refresher == "uac") == we_sent
        self._session = (delta, we_refresh)
        self._cancel_timer("refresh")
        self._cancel_timer("expire")
        if we_refresh:
            # RFC 4028 10: refresh at half the interval.
            self._start_timer("refresh", delta / 2, self._refresh_session)
        else:
            # RFC 4028 10: BYE at expiry minus min(32, delta/3) without a refresh.
            self._start_timer("expire", delta - min(32, delta / 3), self._session_expired)

    def _refresh_session(self) -> None:
        if self.state != "confirmed":
            return
        d = self.reinvite(self.local_sdp)
        d.addErrback(self._refresh_failed)
        d.addErrback(lambda f: log.failure("refresh call_id={call_id}", f, call_id=self.call_id))

    def _refresh_failed(self, failure) -> None:
        failure.trap(CallError, CallStateError)
        if self.state == "confirmed" and self._session is not None:
            delta, _ = self._session
            self._start_timer("expire", delta / 2 - min(32, delta / 3), self._session_expired)

    def _session_expired(self) -> None:
        if self.state == "confirmed":
            log.info("session timer expired call_id={call_id}", call_id=self.call_id)
            self._bye("session timer expired", by_remote=False)

    # -- incoming in-dialog requests

    def request_received(self, request: Request, txn) -> None:
        """A request in our dialog from the far end (RFC 3261 12.2.2)."""
        if request.method == "ACK":
            self.ack_received(request)
            return
        if self.state not in ("confirmed", "terminating") or self.dialog is None:
            txn.respond(make_response(request, 481, "Call/Transaction Does Not Exist"))
            return
        try:
            self.dialog.check_request(request)
        except DialogError as exc:
            txn.respond(make_response(request, exc.status, exc.reason))
            return
        handler = getattr(self, "_incoming_" + request.method.lower(), None)
        if handler is None:
            resp = make_response(request, 405, None)
            resp.headers.add("Allow", self.ua.ALLOW)
            txn.respond(resp)
            return
        handler(request, txn)

    def _ok(self, request: Request, body: bytes = b"") -> Response:
        resp = make_response(request, 200, "OK")
        resp.headers.add("Contact", self.ua.contact())
        resp.headers.add("Allow", self.ua.ALLOW)
        if body:
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = body
        return resp

    def _incoming_bye(self, request: Request, txn) -> None:
        # RFC 3261 15.1.2: answer 200 and end the session.
        txn.respond(make_response(request, 200, "OK"))
        if self.state == "confirmed":
            self.dialog_stopping()
            self._end(True, "remote hangup")

    def _incoming_options(self, request: Request, txn) -> None:
        txn.respond(self._ok(request))

    def _incoming_cancel(self, request: Request, txn) -> None:
        # RFC 3261 9.2: our re-INVITE answers are immediate, so the CANCEL has no effect.
        txn.respond(make_response(request, 200, "OK"))

    def _incoming_info(self, request: Request, txn) -> None:
        # RFC 6086 4.2: INFO in the dialog; the body goes to the application.
        self._emit("call_info", request.headers.get("Content-Type") or "", request.body)
        txn.respond(make_response(request, 200, "OK"))

    def _incoming_offer(self, request: Request) -> Response:
        """Common part of re-INVITE and UPDATE: new SDP, target refresh, session timer."""
        self.dialog.refresh_target(request)
        if is_sdp(request):
            self.remote_sdp = request.body
            self._emit("call_offer", request.body)
        resp = self._ok(request, self.local_sdp if (is_sdp(request) or request.method == "INVITE") else b"")
        parsed = _parse_session_expires(request.headers.get("Session-Expires"))
        if parsed is not None:
            delta, refresher = parsed
            refresher = refresher or "uac"
            # RFC 4028 9: echo the interval and name the refresher in the 2xx.
            resp.headers.add("Session-Expires", f"{delta};refresher={refresher}")
            if "timer" in request.headers.get_all("Supported"):
                resp.headers.add("Require", "timer")
            self._apply_session_timer(f"{delta};refresher={refresher}", we_sent=False)
        return resp

    def _incoming_invite(self, request: Request, txn) -> None:
        # RFC 3261 14.2: a re-INVITE while ours is pending gets 491.
        if self._reinvite_pending or self.state != "confirmed":
            txn.respond(make_response(request, 491, "Request Pending"))
            return
        resp = self._incoming_offer(request)
        txn.respond(resp)
        self._ok_to_ack = resp
        self._ok_interval = self.ua.timers.t1
        # RFC 3261 13.3.1.4: the UAS core retransmits the 2xx until the ACK arrives.
        self._start_timer("ok-retx", self._ok_interval, self._retransmit_ok)
        self._start_timer("ok-giveup", self.ua.timers.H, self._ok_not_acked)

    def _incoming_update(self, request: Request, txn) -> None:
        # RFC 3311 5.2: UPDATE carries an offer (or just refreshes the session timer).
        txn.respond(self._incoming_offer(request))

    def _retransmit_ok(self) -> None:
        if self._ok_to_ack is None:
            return
        try:
            self.ua.transport.send_response(self._ok_to_ack)
        except TransportError as exc:
            log.warn("2xx retransmit failed call_id={call_id}: {error}", call_id=self.call_id, error=exc)
        self._ok_interval = min(2 * self._ok_interval, self.ua.timers.t2)
        self._start_timer("ok-retx", self._ok_interval, self._retransmit_ok)

    def _ok_not_acked(self) -> None:
        # RFC 3261 13.3.1.4: no ACK within 64*T1: end the session with BYE.
        self._ok_to_ack = None
        self._cancel_timer("ok-retx")
        if self.state == "confirmed":
            self._bye("no ACK for 2xx", by_remote=False)

    def ack_received(self, request: Request) -> None:
        """ACK for our 2xx to a re-INVITE: stop retransmitting (RFC 3261 13.3.1.4)."""
        if self._ok_to_ack is None:
            return
        self._ok_to_ack = None
        self._cancel_timer("ok-retx")
        self._cancel_timer("ok-giveup")
        if is_sdp(request):
            # An offer-less re-INVITE: the ACK carries the far end's answer (RFC 3264 5).
            self.remote_sdp = request.body
            self._emit("call_offer", request.body)


@implementer(IClientTransactionUser)
class _Pending:
    """One outgoing in-dialog request, with its digest retry (RFC 3261 22.2)."""

    def __init__(self, call, method, body, content_type, extra) -> None:
        self.call = call
        self.method = method
        self.body = body
        self.content_type = content_type
        self.extra = extra
        self.auth = AuthAttempts()
        self.deferred: Deferred = Deferred()
        self.request: Request | None = None
        self.txn = None

    def send(self) -> None:
        """Build and send (again) through a new client transaction."""
        call = self.call
        self.request = call._build(self.method, self.body, self.content_type, self.extra)
        dest = call.ua.destination_for(call.dialog)
        layer = call.ua.layer
        send = layer.send_invite if self.method == "INVITE" else layer.send_request
        self.txn = send(self.request, dest, self)

    def _done(self, response: Response) -> None:
        if not self.deferred.called:
            self.deferred.callback(response)

    def response_received(self, txn, response: Response) -> None:
        """Finals end it (after a digest retry if challenged); 2xx to INVITE are ACKed."""
        if response.status < 200:
            return
        if self.method == "INVITE" and response.status < 300:
            self.call._ack_reinvite(txn.request, response)
        if txn is not self.txn:
            return
        if response.status in (401, 407) and self._authenticate(response):
            return
        self._done(response)

    def _authenticate(self, response: Response) -> bool:
        proxy = response.status == 407
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        try:
            challenge = pick_challenge(response.headers.get_all(name), proxy=proxy)
        except AuthError:
            return False
        if not self.auth.should_retry(challenge):
            return False
        # RFC 7616 3.4: the digest-uri is the Request-URI of the request being answered.
        header = self.call.ua.digest.authorization(challenge, self.method, self.request.uri, self.body)
        self.extra = [(n, v) for n, v in self.extra if n not in ("Authorization", "Proxy-Authorization")]
        self.extra.append(header)
        self.send()
        return True

    def transaction_timed_out(self, txn) -> None:
        """Timer B/F: reported as 408 (RFC 3261 8.1.3.1)."""
        if txn is self.txn:
            self._done(Response(408, "Request Timeout"))

    def transport_failed(self, txn, error) -> None:
        """Reported as 503 (RFC 3261 8.1.3.1)."""
        if txn is self.txn:
            self._done(Response(503, "Service Unavailable"))
