"""One outgoing call through the trunk: the UAC INVITE state machine and its dialog.

States (``Call.state``), each handled by a ``_response_in_<state>`` method:

- ``new``: the trunk is being located (RFC 3263), nothing sent yet;
- ``calling``: INVITE sent, no response (RFC 3261 17.1.1.2 Calling);
- ``proceeding``: a provisional arrived; ringing / early media (RFC 3261 13.2.2.1);
- ``cancelling``: we asked to end it before a final response (RFC 3261 9.1);
- ``confirmed``: answered and ACKed (RFC 3261 13.2.2.4); in-dialog requests both ways;
- ``terminating``: our BYE is on its way (RFC 3261 15.1.1);
- ``ended`` / ``failed``: final; the listener has had its one last event.

In-dialog requests from the far end, session timers (RFC 4028) and the keepalive live in
:mod:`cbserver.sip.call_dialog`, mixed into :class:`Call`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from zope.interface import implementer

from cbserver.logs import Logger
from cbserver.namedtimers import NamedTimersMixin
from cbserver.sip.auth import AuthAttempts, AuthError, pick_challenge
from cbserver.sip.call_dialog import CallError, CallStateError, DialogMixin, is_sdp
from cbserver.sip.dialog import Dialog
from cbserver.sip.interfaces import ICall
from cbserver.sip.message import Headers, Request, Response, new_branch, new_tag, parse_name_addr
from cbserver.sip.transport import TransportError
from cbserver.sip.txn_client import ClientInviteTransaction, IClientTransactionUser, build_cancel

if TYPE_CHECKING:
    from cbserver.sip.ua import ICallListener, UserAgent

__all__ = ["Call", "CallError", "CallStateError"]

log = Logger()


@implementer(IClientTransactionUser, ICall)
class Call(DialogMixin, NamedTimersMixin):
    """An outgoing call; see the module docstring for its states."""

    def __init__(
        self,
        ua: UserAgent,
        number: str,
        *,
        caller_id: str,
        display_name: str | None,
        sdp_offer: bytes,
        extra_headers,
        no_answer_timeout: float,
        listener: ICallListener,
    ) -> None:
        self.ua = ua
        self.clock = ua.clock
        cfg = ua.config
        self.number = number
        self.listener = listener
        self.call_id = ua.new_call_id()
        self.local_tag = new_tag()
        self.local_sdp = sdp_offer
        self.remote_sdp: bytes | None = None
        self.state = "new"
        self.dialog: Dialog | None = None
        self.cseq = 1
        self.extra_headers = list(extra_headers)
        self.no_answer_timeout = no_answer_timeout
        domain = cfg.from_domain
        shown = f'"{_escape(display_name)}" ' if display_name else ""
        self.from_value = f"{shown}<sip:{caller_id}@{domain}>;tag={self.local_tag}"
        self.pai_value = f"{shown}<sip:{caller_id}@{domain}>"
        host = cfg.trunk_host if cfg.trunk_port == 5060 else f"{cfg.trunk_host}:{cfg.trunk_port}"
        self.request_uri = f"sip:{number}@{host}"
        self.to_value = f"<sip:{number}@{host}>"
        self.session_expires = cfg.session_expires
        self._targets: list[tuple[str, int]] = []
        self._target_index = 0
        self._invite: Request | None = None
        self._invite_txn: ClientInviteTransaction | None = None
        self._auth = AuthAttempts()
        self._auth_header: tuple[str, str] | None = None
        self._ack: Request | None = None
        self._cancel_reason = ""
        self._cancel_sent = False
        self._cancel_txn = None
        self._got_provisional = False
        self._tried = False
        self._waiters: list[Deferred] = []
        self._timers: dict[str, IDelayedCall] = {}
        DialogMixin.__init__(self)

    # -- helpers

    @property
    def finished(self) -> bool:
        """True once the listener has had its final event."""
        return self.state in ("ended", "failed")

    def _emit(self, event: str, *args) -> None:
        """Call the listener; a bug there must not break the SIP state machine."""
        try:
            getattr(self.listener, event)(self, *args)
        except Exception:  # listener code is not ours to trust
            log.failure("listener {event} raised call_id={call_id}", event=event, call_id=self.call_id)

    def _waiter(self) -> Deferred:
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d

    def _finish(self, state: str, event: str, *args) -> None:
        """Enter ``ended``/``failed`` once: stop timers, tell the listener, wake waiters."""
        if self.finished:
            return
        self.state = state
        self._cancel_all_timers()
        if self._invite_txn is not None and self._invite_txn.state in ("calling", "proceeding"):
            self._invite_txn.terminate()
        if state == "ended" and self._invite_txn is not None and self._invite_txn.state == "accepted":
            # RFC 6026 7.2 keeps the INVITE in Accepted so 2xx retransmissions get re-ACKed
            # while the dialog lives; a BYE has now completed one way or the other, so the
            # far end has stopped retransmitting. Ending it now frees the call at once
            # instead of 64*T1 later.
            self._invite_txn.terminate()
        if self._cancel_txn is not None and self._cancel_txn.state in ("trying", "proceeding"):
            # RFC 3261 9.1: a CANCEL only acts on a pending INVITE; once the INVITE has its
            # final response there is nothing left for it to do, so stop retransmitting it.
            self._cancel_txn.terminate()
        # The transactions point at this call (their TU); dropping our references back
        # leaves no cycle, so the call is freed by reference counting, not by the GC.
        if self._invite_txn is not None and self._invite_txn.state == "terminated":
            self._invite_txn = None
        if self._cancel_txn is not None and self._cancel_txn.state == "terminated":
            self._cancel_txn = None
        # One line per call (the hot path avoids more): outcome, where it went, why.
        log.info(
            "call {state} call_id={call_id} uri={uri} via={dest} cseq={cseq} detail={detail}",
            state=state,
            call_id=self.call_id,
            uri=self.request_uri,
            dest=self._targets[self._target_index] if self._targets else None,
            cseq=self.cseq,
            detail=args,
        )
        self._emit(event, *args)
        self.ua.forget(self)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def _fail(self, status: int, reason: str) -> None:
        self._finish("failed", "call_failed", status, reason)

    def _end(self, by_remote: bool, reason: str) -> None:
        self._finish("ended", "call_ended", by_remote, reason)

    # -- starting

    def start(self) -> None:
        """Locate the trunk (RFC 3263) and send the INVITE; arm the no-answer timer."""
        self._start_timer("no-answer", self.no_answer_timeout, self._no_answer)
        d = self.ua.trunk_targets()
        d.addCallbacks(self._located, self._locate_failed)
        d.addErrback(lambda f: log.failure("starting call_id={call_id}", f, call_id=self.call_id))

    def _located(self, targets: list[tuple[str, int]]) -> None:
        if self.state != "new":
            return
        if not targets:
            self._fail(503, "trunk has no address")
            return
        self._targets = list(targets)
        self.state = "calling"
        self._send_invite()

    def _locate_failed(self, failure) -> None:
        log.warn(
            "cannot locate trunk call_id={call_id}: {error}",
            call_id=self.call_id,
            error=failure.getErrorMessage(),
        )
        self._fail(503, "trunk not found")

    @property
    def destination(self) -> tuple[str, int]:
        """The trunk target in use (RFC 3263 4.3: the first that answers)."""
        return self._targets[self._target_index]

    def _build_invite(self) -> Request:
        cfg = self.ua.config
        h = Headers()
        h.add("Via", self.ua.via(new_branch()))
        h.add("Max-Forwards", "70")
        h.add("From", self.from_value)
        h.add("To", self.to_value)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} INVITE")
        h.add("Contact", self.ua.contact())
        # RFC 3325 9.1: the identity the trunk is asked to assert (the caller ID / ANI).
        h.add("P-Asserted-Identity", self.pai_value)
        h.add("Allow", self.ua.ALLOW)
        h.add("Supported", "timer")
        if self.session_expires:
            # RFC 4028 7.1: we support timers; the UAS picks the refresher.
            h.add("Session-Expires", str(self.session_expires))
        h.add("User-Agent", cfg.user_agent)
        if self._auth_header is not None:
            h.add(*self._auth_header)
        for name, value in self.extra_headers:
            h.add(name, value)
        h.add("Content-Type", "application/sdp")
        return Request(method="INVITE", uri=self.request_uri, headers=h, body=self.local_sdp)

    def _send_invite(self) -> None:
        self._invite = self._build_invite()
        self._got_provisional = False
        self._invite_txn = self.ua.layer.send_invite(self._invite, self.destination, self)

    def _retry_invite(self) -> None:
        """A new INVITE in the same call: CSeq + 1, fresh branch (RFC 3261 8.1.3.5, 22.2)."""
        self.cseq += 1
        self.state = "calling"
        self._send_invite()

    def _no_answer(self) -> None:
        if self.state in ("new", "calling", "proceeding"):
            log.info("no answer in {t}s call_id={call_id}", t=self.no_answer_timeout, call_id=self.call_id)
            self._cancel("no answer")

    # -- IClientTransactionUser for the INVITE

    def response_received(self, txn, response: Response) -> None:
        """A response to one of our INVITEs (initial or retried)."""
        if txn is not self._invite_txn:
            if 200 <= response.status < 300:
                self.stray_2xx(response)  # a late answer to a superseded INVITE
            return
        if self.state in ("calling", "proceeding", "cancelling"):
            getattr(self, "_response_in_" + self.state)(response)
        elif 200 <= response.status < 300:
            self.stray_2xx(response)

    def transaction_timed_out(self, txn) -> None:
        """Timer B: no response at all (RFC 3261 17.1.1.2); fail over to the next target."""
        if txn is not self._invite_txn or self.finished:
            return
        if self.state == "calling" and self._target_index + 1 < len(self._targets):
            self._target_index += 1  # RFC 3263 4.3: try the next target
            self._retry_invite()
            return
        if self.state == "cancelling":
            self._fail(487, self._cancel_reason)
        else:
            self._fail(408, "Request Timeout")

    def transport_failed(self, txn, error) -> None:
        """RFC 3261 17.1.4: transport failure; fail over or report 503."""
        if txn is not self._invite_txn or self.finished:
            return
        if self.state == "calling" and self._target_index + 1 < len(self._targets):
            self._target_index += 1
            self._retry_invite()
            return
        self._fail(503, f"transport error: {error}")

    # -- states

    def _response_in_calling(self, response: Response) -> None:
        # RFC 3261 13.2.2: the first response moves us to Proceeding or a final state.
        self._response_in_proceeding(response)

    def _response_in_proceeding(self, response: Response) -> None:
        # RFC 3261 13.2.2.1 (1xx), 13.2.2.4 (2xx), 13.2.2.2-3 and 22.2 (3xx-6xx).
        status = response.status
        if status < 200:
            self.state = "proceeding"
            first = not self._got_provisional
            self._got_provisional = True
            if status == 100:
                if first:
                    self._emit("call_trying")
            else:
                self._emit("call_ringing", response.body if is_sdp(response) else None)
        elif status < 300:
            self._answered(response)
        elif status in (401, 407) and self._authenticate(response):
            return
        elif status == 422 and self._raise_session_interval(response):
            return
        else:
            self._fail(status, response.reason_text)

    def _response_in_cancelling(self, response: Response) -> None:
        # RFC 3261 9.1: CANCEL waits for a provisional; the INVITE then ends with 487.
        status = response.status
        if status < 200:
            self._got_provisional = True
            self._send_cancel()
        elif status < 300:
            # The answer crossed our CANCEL: ACK it, then BYE (RFC 3261 15).
            self._confirm_dialog(response)
            self._send_bye_quietly()
            self._fail(487, self._cancel_reason)
        else:
            self._fail(487 if status == 487 else status, self._cancel_reason or response.reason)

    # -- answer

    def _confirm_dialog(self, response: Response) -> None:
        """Create the dialog from a 2xx and ACK it (RFC 3261 12.1.2, 13.2.2.4)."""
        assert self._invite is not None
        self.dialog = Dialog.from_response(self._invite, response)
        self.remote_sdp = response.body if is_sdp(response) else self.remote_sdp
        self._ack = self.dialog.ack_for_2xx(self.cseq, self.ua.via(new_branch()))
        self._send_ack()

    def _send_ack(self) -> None:
        if self._ack is None or self.dialog is None:
            return
        try:
            self.ua.transport.send_request(self._ack, self.ua.destination_for(self.dialog))
        except TransportError as exc:
            log.warn("ACK not sent call_id={call_id}: {error}", call_id=self.call_id, error=exc)

    def _answered(self, response: Response) -> None:
        self._cancel_timer("no-answer")
        self._confirm_dialog(response)
        self.state = "confirmed"
        self.dialog_started(response)
        self._emit("call_answered", self.remote_sdp)

    def stray_2xx(self, response: Response) -> None:
        """A 2xx retransmission or a forked 2xx (RFC 3261 13.2.2.4)."""
        tag = parse_name_addr(response.headers.get("To") or "").tag
        if self.dialog is not None and tag == self.dialog.remote_tag:
            if response.headers.get("CSeq", "").split()[0] == str(self.cseq):
                self._send_ack()  # re-ACK every retransmission of the 2xx
            else:
                self.reack(response)
            return
        # A second dialog from a fork: ACK it and end it at once.
        if self._invite is None:
            return
        other = Dialog.from_response(self._invite, response)
        dest = self.ua.destination_for(other)
        try:
            self.ua.transport.send_request(other.ack_for_2xx(self.cseq, self.ua.via(new_branch())), dest)
            self.ua.transport.send_request(other.new_request("BYE", self.ua.via(new_branch())), dest)
        except TransportError as exc:
            log.warn("fork cleanup failed call_id={call_id}: {error}", call_id=self.call_id, error=exc)

    # -- authentication and 422

    def _authenticate(self, response: Response) -> bool:
        """Answer a 401/407 with credentials and resend (RFC 3261 22.2); False if we can't."""
        proxy = response.status == 407
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        try:
            challenge = pick_challenge(response.headers.get_all(name), proxy=proxy)
        except AuthError as exc:
            log.warn(
                "cannot answer {status} call_id={call_id}: {error}",
                status=response.status,
                call_id=self.call_id,
                error=exc.reason,
            )
            return False
        if not self._auth.should_retry(challenge):
            return False
        self._auth_header = self.ua.digest.authorization(challenge, "INVITE", self.request_uri)
        self._retry_invite()
        return True

    def _raise_session_interval(self, response: Response) -> bool:
        """RFC 4028 6: 422 carries Min-SE; retry once with that interval."""
        min_se = (response.headers.get("Min-SE") or "").split(";")[0].strip()
        if not min_se.isdigit() or int(min_se) <= (self.session_expires or 0) or self._tried:
            return False
        self._tried = True
        self.session_expires = int(min_se)
        self._retry_invite()
        return True

    # -- ending

    def hangup(self) -> Deferred:
        """End the call: CANCEL before a final response, BYE after answer; idempotent.

        The Deferred fires once the call has ended (the listener got its last event).
        """
        if self.finished:
            return succeed(None)
        d = self._waiter()
        if self.state in ("new", "calling", "proceeding"):
            self._cancel("cancelled")
        elif self.state == "confirmed":
            self._bye("local hangup", by_remote=False)
        return d

    def _cancel(self, reason: str) -> None:
        prior = self.state
        self.state = "cancelling"
        self._cancel_reason = reason
        self._cancel_timer("no-answer")
        if prior == "new" or self._invite_txn is None:
            self._fail(487, reason)  # nothing was sent yet
            return
        if self._got_provisional:
            self._send_cancel()
        # RFC 3261 9.1: without a provisional, wait for one (Timer B still runs in Calling).

    def _send_cancel(self) -> None:
        if self._cancel_sent or self._invite is None:
            return
        self._cancel_sent = True
        cancel = build_cancel(self._invite)
        self._cancel_txn = self.ua.layer.send_request(cancel, self.destination, _Ignore(self.call_id))
        # RFC 3261 9.1: if no final response comes within 64*T1, give up on the INVITE.
        self._start_timer("cancel-guard", self.ua.timers.B, lambda: self._fail(487, self._cancel_reason))

    def _send_bye_quietly(self) -> None:
        """BYE without waiting for its outcome (used when the answer crossed a CANCEL)."""
        d = self.request("BYE")
        d.addErrback(lambda f: f.trap(CallError))
        d.addErrback(lambda f: log.failure("BYE call_id={call_id}", f, call_id=self.call_id))

    def _bye(self, reason: str, by_remote: bool) -> None:
        """Send BYE and end the call when it completes, whatever the answer (RFC 3261 15.1.1)."""
        self.state = "terminating"
        self.dialog_stopping()
        d = self.request("BYE")
        d.addBoth(lambda _: self._end(by_remote, reason))
        d.addErrback(lambda f: log.failure("BYE call_id={call_id}", f, call_id=self.call_id))


@implementer(IClientTransactionUser)
class _Ignore:
    """Owner of a CANCEL transaction: its outcome changes nothing (RFC 3261 9.1)."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id

    def response_received(self, txn, response) -> None:
        """Nothing to do: the INVITE's own final response ends the call."""

    def transaction_timed_out(self, txn) -> None:
        """Nothing to do: the cancel guard timer covers a lost CANCEL."""

    def transport_failed(self, txn, error) -> None:
        """Log only."""
        log.warn("CANCEL not sent call_id={call_id}: {error}", call_id=self.call_id, error=error)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
