"""One outgoing call through the trunk: the UAC INVITE state machine, owning its dialog.

The states and the one transition table are in :mod:`cbserver.sip.call_states`: every event
(a response, a timer, the application's hangup, something the far end did in the dialog) goes
through :meth:`Call._on`, which looks up ``(state, event)`` and runs the method named there.
The confirmed dialog's behaviour (in-dialog requests both ways, session timers, keepalive) is a
:class:`~cbserver.sip.call_dialog.DialogUsage` the call owns once a 2xx creates the dialog.

A call sees only its :class:`~cbserver.sip.context.CallContext`, never the user agent.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import LogLevel
from zope.interface import implementer

from cbserver.logs import Logger
from cbserver.namedtimers import NamedTimersMixin
from cbserver.sip.auth import AuthAttempts, AuthError, pick_challenge
from cbserver.sip.call_dialog import DialogUsage, IDialogOwner, dialog_destination, is_sdp
from cbserver.sip.call_states import FINAL_STATES, TRANSITIONS, UNHANDLED, CallEvent, CallState
from cbserver.sip.context import CallContext, CallError, CallStateError, ICallListener
from cbserver.sip.dialog import Dialog
from cbserver.sip.interfaces import ICall
from cbserver.sip.message import (
    Headers,
    Request,
    Response,
    make_response,
    new_branch,
    new_tag,
    parse_name_addr,
)
from cbserver.sip.sdp import answer_reoffer
from cbserver.sip.transport import TransportError
from cbserver.sip.txn_client import ClientInviteTransaction, IClientTransactionUser, build_cancel
from cbserver.sip.uri import is_digits

__all__ = ["Call", "CallError", "CallStateError"]

log = Logger()

S, E = CallState, CallEvent


@implementer(IClientTransactionUser, IDialogOwner, ICall)
class Call(NamedTimersMixin):
    """An outgoing call; its states are :class:`~cbserver.sip.call_states.CallState`."""

    def __init__(
        self,
        ctx: CallContext,
        number: str,
        *,
        call_id: str,
        caller_id: str,
        display_name: str | None,
        sdp_offer: bytes,
        extra_headers,
        no_answer_timeout: float,
        listener: ICallListener,
        log_context: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.clock = ctx.clock
        self.number = number
        self.listener = listener
        self.call_id = call_id
        self.callback_id = log_context  # the caller's correlation id, on every log line
        self.local_tag = new_tag()
        self.local_sdp = sdp_offer  # the last SDP we sent (RFC 3264 8 versions it)
        self.capabilities = sdp_offer  # what we offered: address, port, codecs we accept
        self.remote_sdp: bytes | None = None
        self.state = S.NEW
        self.dialog: Dialog | None = None
        self._usage: DialogUsage | None = None
        self.cseq = 1
        self.extra_headers = list(extra_headers)
        self.no_answer_timeout = no_answer_timeout
        domain = ctx.from_domain
        shown = f'"{_escape(display_name)}" ' if display_name else ""
        self.from_value = f"{shown}<sip:{caller_id}@{domain}>;tag={self.local_tag}"
        self.pai_value = f"{shown}<sip:{caller_id}@{domain}>"
        self.request_uri = f"sip:{number}@{ctx.trunk.hostport}"
        self.to_value = f"<{self.request_uri}>"
        self.session_expires = ctx.session_expires
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

    # -- the state table

    def _on(self, event: CallEvent, *args):
        """Run what ``TRANSITIONS[(state, event)]`` names; see :mod:`cbserver.sip.call_states`."""
        action = TRANSITIONS.get((self.state, event))
        if action is not None:
            return getattr(self, action)(*args)
        refusal = UNHANDLED.get(event)
        if refusal is not None:
            return getattr(self, refusal)(event, *args)
        return None  # a timer or a late message this state has outgrown

    def _enter(self, state: CallState) -> None:
        """Change state; leaving ``confirmed`` stops the dialog usage (its timers)."""
        if self.state is S.CONFIRMED and state is not S.CONFIRMED and self._usage is not None:
            self._usage.stop()
        self.state = state

    def dialog_event(self, event: CallEvent, *args):
        """IDialogOwner: the dialog usage reports something the table decides on."""
        return self._on(event, *args)

    # -- helpers

    @property
    def finished(self) -> bool:
        """True once the listener has had its final event."""
        return self.state in FINAL_STATES

    @property
    def destination(self) -> tuple[str, int]:
        """The trunk target in use (RFC 3263 4.3: the first that answers)."""
        return self._targets[self._target_index]

    def dialog_state(self) -> dict | None:
        """What another process needs to end this call's dialog with a BYE (crash recovery):
        the dialog (RFC 3261 12), the trunk target it was reached through and the transport;
        None before the call is answered."""
        if self.dialog is None:
            return None
        return {"dialog": self.dialog.to_dict(), "destination": list(self.destination),
                "transport": self.ctx.transport.name}

    def _emit(self, event: str, *args) -> None:
        """Call the listener; a bug there must not break the SIP state machine."""
        try:
            getattr(self.listener, event)(self, *args)
        except Exception:  # listener code is not ours to trust
            log.failure("listener {event} raised call_id={call_id} callback_id={callback_id}",
                        event=event, call_id=self.call_id, callback_id=self.callback_id)  # fmt: skip

    def _log_failure(self, what: str):
        """An errback that logs an unexpected failure of ``what`` against this call."""
        return lambda f: log.failure(what + " call_id={call_id} callback_id={callback_id}", f,
                                     call_id=self.call_id, callback_id=self.callback_id)  # fmt: skip

    def _finish(self, state: CallState, event: str, *args) -> None:
        """Enter ``ended``/``failed`` once: stop timers, tell the listener, wake waiters."""
        if self.finished:
            return
        self._enter(state)
        self._cancel_all_timers()
        if self._usage is not None:
            self._usage.stop()
        if self._invite_txn is not None and self._invite_txn.state in ("calling", "proceeding"):
            self._invite_txn.terminate()
        if state is S.ENDED and self._invite_txn is not None and self._invite_txn.state == "accepted":
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
        # One line per call (the hot path avoids more): outcome, where it went, why. A call
        # that failed (busy, no answer, no route...) says so at info; one that was answered
        # and then hung up is the success path, said at debug: its callback's "callback
        # ended" line gives the cause, and "call placed" joins its Call-ID to the callback.
        log.emit(
            LogLevel.info if state is not S.ENDED else LogLevel.debug,
            "call {state} call_id={call_id} callback_id={callback_id} uri={uri} via={dest} "
            "cseq={cseq} detail={detail}",
            state=str(state),
            call_id=self.call_id,
            callback_id=self.callback_id,
            uri=self.request_uri,
            dest=self._targets[self._target_index] if self._targets else None,
            cseq=self.cseq,
            detail=args,
        )
        self._emit(event, *args)
        # The listener has had its last event. Forgetting it, and letting the dialog usage
        # forget us, leaves no cycle (leg -> call -> listener -> leg, call <-> usage) behind:
        # reference counting frees the whole callback now, not a full collection much later.
        self.listener = _ENDED
        if self._usage is not None:
            self._usage.release()
        self.ctx.forget(self)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def _fail(self, status: int, reason: str) -> None:
        self._finish(S.FAILED, "call_failed", status, reason)

    def _end(self, by_remote: bool, reason: str) -> None:
        self._finish(S.ENDED, "call_ended", by_remote, reason)

    # -- starting (state new)

    def start(self) -> None:
        """Locate the trunk (RFC 3263) and send the INVITE; arm the no-answer timer."""
        if self.callback_id is not None:
            # The one line joining this call to the callback that placed it.
            log.info("call placed call_id={call_id} callback_id={callback_id} uri={uri}",
                     call_id=self.call_id, callback_id=self.callback_id, uri=self.request_uri)  # fmt: skip
        self._start_timer("no-answer", self.no_answer_timeout, self._on, E.NO_ANSWER)
        d = self.ctx.trunk.targets()
        d.addCallbacks(lambda targets: self._on(E.LOCATED, targets), self._locate_failed)
        d.addErrback(self._log_failure("starting"))

    def _locate_failed(self, failure) -> None:
        log.warn(
            "cannot locate trunk call_id={call_id} callback_id={callback_id}: {error}",
            call_id=self.call_id,
            callback_id=self.callback_id,
            error=failure.getErrorMessage(),
        )
        self._on(E.LOCATE_FAILED)

    def _send_first_invite(self, targets: list[tuple[str, int]]) -> None:
        if not targets:
            self._fail(503, "trunk has no address")
            return
        self._targets = list(targets)
        self._enter(S.CALLING)
        self._send_invite()

    def _trunk_not_found(self) -> None:
        self._fail(503, "trunk not found")

    def _build_invite(self) -> Request:
        ctx = self.ctx
        h = Headers()
        h.add("Via", ctx.local.via(new_branch()))
        h.add("Max-Forwards", "70")
        h.add("From", self.from_value)
        h.add("To", self.to_value)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{self.cseq} INVITE")
        h.add("Contact", ctx.local.contact())
        # RFC 3325 9.1: the identity the trunk is asked to assert (the caller ID / ANI).
        h.add("P-Asserted-Identity", self.pai_value)
        h.add("Allow", ctx.allow)
        h.add("Supported", "timer")
        if self.session_expires:
            # RFC 4028 7.1: we support timers; the UAS picks the refresher.
            h.add("Session-Expires", str(self.session_expires))
        h.add("User-Agent", ctx.user_agent)
        if self._auth_header is not None:
            h.add(*self._auth_header)
        for name, value in self.extra_headers:
            h.add(name, value)
        h.add("Content-Type", "application/sdp")
        return Request(method="INVITE", uri=self.request_uri, headers=h, body=self.local_sdp)

    def _send_invite(self) -> None:
        self._invite = self._build_invite()
        self._got_provisional = False
        self._invite_txn = self.ctx.layer.send_invite(self._invite, self.destination, self)

    def _retry_invite(self) -> None:
        """A new INVITE in the same call: CSeq + 1, fresh branch (RFC 3261 8.1.3.5, 22.2)."""
        self.cseq += 1
        self._enter(S.CALLING)
        self._send_invite()

    # -- IClientTransactionUser for the INVITE

    def response_received(self, txn, response: Response) -> None:
        """A response to one of our INVITEs (initial or retried)."""
        if txn is not self._invite_txn:
            if 200 <= response.status < 300:
                self._stray_2xx(response)  # a late answer to a superseded INVITE
            return
        status = response.status
        event = E.PROVISIONAL if status < 200 else E.ANSWERED if status < 300 else E.REJECTED
        self._on(event, response)

    def transaction_timed_out(self, txn) -> None:
        """Timer B: no response at all (RFC 3261 17.1.1.2)."""
        if txn is self._invite_txn:
            self._on(E.TIMED_OUT)

    def transport_failed(self, txn, error) -> None:
        """RFC 3261 17.1.4: the INVITE could not be delivered."""
        if txn is self._invite_txn:
            self._on(E.TRANSPORT_ERROR, error)

    # -- calling / proceeding (RFC 3261 13.2.2)

    def _provisional(self, response: Response) -> None:
        # RFC 3261 13.2.2.1: ringing, perhaps with early media.
        self._enter(S.PROCEEDING)
        first = not self._got_provisional
        self._got_provisional = True
        if response.status == 100:
            if first:
                self._emit("call_trying")
        else:
            self._emit("call_ringing", response.body if is_sdp(response) else None)

    def _rejected(self, response: Response) -> None:
        # RFC 3261 13.2.2.2-3; 22.2 digest and RFC 4028 6 (422) get one retry each.
        status = response.status
        if status in (401, 407) and self._authenticate(response):
            return
        if status == 422 and self._raise_session_interval(response):
            return
        self._fail(status, response.reason_text)

    def _has_next_target(self) -> bool:
        return self._target_index + 1 < len(self._targets)

    def _failover_or_time_out(self) -> None:
        if self._has_next_target():
            self._target_index += 1  # RFC 3263 4.3: try the next target
            self._retry_invite()
        else:
            self._fail_timed_out()

    def _failover_or_fail_transport(self, error) -> None:
        if self._has_next_target():
            self._target_index += 1
            self._retry_invite()
        else:
            self._fail_transport(error)

    def _fail_timed_out(self) -> None:
        self._fail(408, "Request Timeout")

    def _fail_transport(self, error) -> None:
        self._fail(503, f"transport error: {error}")

    def _authenticate(self, response: Response) -> bool:
        """Answer a 401/407 with credentials and resend (RFC 3261 22.2); False if we can't."""
        proxy = response.status == 407
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        try:
            challenge = pick_challenge(response.headers.get_all(name), proxy=proxy)
        except AuthError as exc:
            log.warn(
                "cannot answer {status} call_id={call_id} callback_id={callback_id}: {error}",
                status=response.status,
                call_id=self.call_id,
                callback_id=self.callback_id,
                error=exc.reason,
            )
            return False
        if not self._auth.should_retry(challenge):
            return False
        self._auth_header = self.ctx.digest.authorization(challenge, "INVITE", self.request_uri)
        self._retry_invite()
        return True

    def _raise_session_interval(self, response: Response) -> bool:
        """RFC 4028 6: 422 carries Min-SE; retry once with that interval."""
        min_se = (response.headers.get("Min-SE") or "").split(";")[0].strip()
        if (not is_digits(min_se) or len(min_se.lstrip("0")) > 10  # int("²") raises; so do 4301 digits
                or int(min_se) <= (self.session_expires or 0) or self._tried):
            return False
        self._tried = True
        self.session_expires = int(min_se)
        self._retry_invite()
        return True

    # -- answer (RFC 3261 13.2.2.4)

    def _confirm_dialog(self, response: Response) -> None:
        """Create the dialog from a 2xx and ACK it (RFC 3261 12.1.2, 13.2.2.4)."""
        assert self._invite is not None
        self.dialog = Dialog.from_response(self._invite, response)
        self._usage = DialogUsage(self.ctx, self.dialog, self, self.destination, self.callback_id)
        self.remote_sdp = response.body if is_sdp(response) else self.remote_sdp
        self._ack = self.dialog.ack_for_2xx(self.cseq, self.ctx.local.via(new_branch()))
        self._send_ack()

    def _send_ack(self) -> None:
        if self._ack is not None and self._usage is not None:
            self._usage.send_quietly(self._ack)

    def _answered(self, response: Response) -> None:
        self._cancel_timer("no-answer")
        self._confirm_dialog(response)
        self._enter(S.CONFIRMED)
        self._usage.start(response)
        self._emit("call_answered", self.remote_sdp)

    def stray_2xx(self, response: Response) -> None:
        """A 2xx that matches no transaction of ours (RFC 3261 13.2.2.4, RFC 6026)."""
        self._stray_2xx(response)

    def _stray_2xx(self, response: Response) -> None:
        """A 2xx retransmission or a forked 2xx (RFC 3261 13.2.2.4)."""
        tag = parse_name_addr(response.headers.get("To") or "").tag
        if self.dialog is not None and tag == self.dialog.remote_tag:
            if response.headers.get("CSeq", "").split()[0] == str(self.cseq):
                self._send_ack()  # re-ACK every retransmission of the 2xx
            elif self._usage is not None:
                self._usage.reack(response)
            return
        # A second dialog from a fork: ACK it and end it at once.
        if self._invite is None:
            return
        other = Dialog.from_response(self._invite, response)
        dest = dialog_destination(other, self.destination)
        local, transport = self.ctx.local, self.ctx.transport
        try:
            transport.send_request(other.ack_for_2xx(self.cseq, local.via(new_branch())), dest)
            transport.send_request(other.new_request("BYE", local.via(new_branch())), dest)
        except TransportError as exc:
            log.warn("fork cleanup failed call_id={call_id} callback_id={callback_id}: {error}",
                     call_id=self.call_id, callback_id=self.callback_id, error=exc)  # fmt: skip

    # -- cancelling (RFC 3261 9.1)

    def _no_answer(self) -> None:
        log.info("no answer in {t}s call_id={call_id} callback_id={callback_id}",
                 t=self.no_answer_timeout, call_id=self.call_id, callback_id=self.callback_id)  # fmt: skip
        self._cancel("no answer")

    def _cancel_on_hangup(self) -> None:
        self._cancel("cancelled")

    def _cancel(self, reason: str) -> None:
        prior = self.state
        self._enter(S.CANCELLING)
        self._cancel_reason = reason
        self._cancel_timer("no-answer")
        if prior is S.NEW or self._invite_txn is None:
            self._fail(487, reason)  # nothing was sent yet
            return
        if self._got_provisional:
            self._send_cancel()
        # RFC 3261 9.1: without a provisional, wait for one (Timer B still runs in Calling).

    def _provisional_while_cancelling(self, response: Response) -> None:
        self._got_provisional = True
        self._send_cancel()  # RFC 3261 9.1: now the CANCEL may go

    def _send_cancel(self) -> None:
        if self._cancel_sent or self._invite is None:
            return
        self._cancel_sent = True
        cancel = build_cancel(self._invite)
        self._cancel_txn = self.ctx.layer.send_request(cancel, self.destination, _Ignore(self))
        # RFC 3261 9.1: if no final response comes within 64*T1, give up on the INVITE.
        self._start_timer("cancel-guard", self.ctx.timers.B, self._on, E.CANCEL_GUARD)

    def _answer_crossed_cancel(self, response: Response) -> None:
        # The answer crossed our CANCEL: ACK it, then BYE (RFC 3261 15).
        self._confirm_dialog(response)
        self._send_bye_quietly()
        self._fail(487, self._cancel_reason)

    def _cancelled(self, response: Response) -> None:
        status = response.status
        self._fail(487 if status == 487 else status, self._cancel_reason or response.reason)

    def _fail_cancelled(self) -> None:
        self._fail(487, self._cancel_reason)

    # -- confirmed: the application's requests (RFC 3261 14.1, RFC 3311, RFC 6086)

    def reinvite(self, sdp: bytes) -> Deferred:
        """Send a re-INVITE with ``sdp`` (RFC 3261 14.1); fires with the remote SDP."""
        return self._on(E.REINVITE, sdp)

    def update(self, sdp: bytes) -> Deferred:
        """Send an UPDATE with ``sdp`` (RFC 3311); fires with the remote SDP."""
        return self._on(E.UPDATE, sdp)

    def send_info(self, content_type: str, body: bytes) -> Deferred:
        """Send INFO (RFC 6086), e.g. DTMF relay; fires with the 2xx."""
        return self._on(E.SEND_INFO, content_type, body)

    def _send_reinvite(self, sdp: bytes) -> Deferred:
        return self._usage.reinvite(sdp).addCallback(self._offer_accepted, sdp)

    def _send_update(self, sdp: bytes) -> Deferred:
        return self._usage.update(sdp).addCallback(self._offer_accepted, sdp)

    def _send_info(self, content_type: str, body: bytes) -> Deferred:
        return self._usage.info(content_type, body)

    def _offer_accepted(self, response: Response, sdp: bytes) -> bytes | None:
        if sdp != self.local_sdp:
            # A new offer of the application's (not a session refresh repeating our current
            # SDP, RFC 4028 10): it is now what we accept in answers to the far end's offers.
            self.capabilities = sdp
        self.local_sdp = sdp
        if response.body:
            self.remote_sdp = response.body
        return self.remote_sdp

    def _wrong_state(self, event: CallEvent, *args) -> Deferred:
        return fail(CallStateError(f"{event} in state {self.state}"))

    # -- confirmed: what the far end does (RFC 3261 12.2.2, 15.1.2; RFC 4028)

    def request_received(self, request: Request, txn) -> None:
        """A request in our dialog from the far end (RFC 3261 12.2.2)."""
        if request.method == "ACK":
            self.ack_received(request)
            return
        self._on(E.REQUEST, request, txn)

    def ack_received(self, request: Request) -> None:
        """ACK for our 2xx to a re-INVITE: stop retransmitting (RFC 3261 13.3.1.4)."""
        if self._usage is not None:
            self._usage.ack_received(request)

    def _in_dialog_request(self, request: Request, txn) -> None:
        self._usage.request_received(request, txn)

    def _no_such_dialog(self, event: CallEvent, request: Request, txn) -> None:
        txn.respond(make_response(request, 481, "Call/Transaction Does Not Exist"))

    def answer_offer(self, offer: bytes) -> bytes:
        """IDialogOwner: our answer to the far end's offer (RFC 3264 6.1, 8), a pure SDP
        computation from what we offered; it becomes our current SDP. SdpError if none."""
        answer = answer_reoffer(offer, self.capabilities, self.local_sdp)
        self.local_sdp = answer
        return answer

    def _offer_received(self, sdp: bytes) -> None:
        self.remote_sdp = sdp
        self._emit("call_offer", sdp)

    def _info_received(self, content_type: str, body: bytes) -> None:
        self._emit("call_info", content_type, body)

    def _end_by_remote_bye(self) -> None:
        self._end(True, "remote hangup")

    def _remote_gone(self, reason: str) -> None:
        log.info("dialog gone ({reason}) call_id={call_id} callback_id={callback_id}",
                 reason=reason, call_id=self.call_id, callback_id=self.callback_id)  # fmt: skip
        self._usage.stop()
        if reason.startswith("408"):
            self._send_bye_quietly()
        self._end(True, reason)

    def _refresh_session(self) -> None:
        d = self.reinvite(self.local_sdp)
        d.addErrback(self._usage.refresh_failed)
        d.addErrback(self._log_failure("refresh"))

    def _bye_session_expired(self) -> None:
        log.info("session timer expired call_id={call_id} callback_id={callback_id}",
                 call_id=self.call_id, callback_id=self.callback_id)  # fmt: skip
        self._bye("session timer expired", by_remote=False)

    def _bye_not_acked(self) -> None:
        self._bye("no ACK for 2xx", by_remote=False)

    # -- ending (RFC 3261 15)

    def hangup(self) -> Deferred:
        """End the call: CANCEL before a final response, BYE after answer; idempotent.

        The Deferred fires once the call has ended (the listener got its last event).
        """
        if self.finished:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiters.append(d)
        self._on(E.HANGUP)
        return d

    def shutdown(self) -> None:
        """The UA is stopping and will not wait any longer: end or fail the call now."""
        self._on(E.SHUTDOWN)

    def _shutdown_answered(self) -> None:
        self._end(False, "shutdown")

    def _shutdown_unanswered(self) -> None:
        self._fail(503, "shutdown")

    def _bye_on_hangup(self) -> None:
        self._bye("local hangup", by_remote=False)

    def _send_bye_quietly(self) -> None:
        """BYE without waiting for its outcome (an answer crossed our CANCEL, a 408 in dialog)."""
        d = self._usage.request("BYE")
        d.addErrback(lambda f: f.trap(CallError))
        d.addErrback(self._log_failure("BYE"))

    def _bye(self, reason: str, by_remote: bool) -> None:
        """Send BYE and end the call when it completes, whatever the answer (RFC 3261 15.1.1)."""
        self._enter(S.TERMINATING)
        d = self._usage.request("BYE")
        d.addBoth(lambda _: self._on(E.BYE_DONE, by_remote, reason))
        d.addErrback(self._log_failure("BYE"))

    def _end_after_bye(self, by_remote: bool, reason: str) -> None:
        self._end(by_remote, reason)


@implementer(IClientTransactionUser)
class _Ignore:
    """Owner of a CANCEL transaction: its outcome changes nothing (RFC 3261 9.1)."""

    def __init__(self, call: Call) -> None:
        self.call_id = call.call_id
        self.callback_id = call.callback_id

    def response_received(self, txn, response) -> None:
        """Nothing to do: the INVITE's own final response ends the call."""

    def transaction_timed_out(self, txn) -> None:
        """Nothing to do: the cancel guard timer covers a lost CANCEL."""

    def transport_failed(self, txn, error) -> None:
        """Log only."""
        log.warn("CANCEL not sent call_id={call_id} callback_id={callback_id}: {error}",
                 call_id=self.call_id, callback_id=self.callback_id, error=error)  # fmt: skip


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


@implementer(ICallListener)
class _Ended:
    """The listener of a finished call: it has had its final event and hears nothing more."""

    def call_trying(self, call):
        """Not after the end."""

    def call_ringing(self, call, early_sdp):
        """Not after the end."""

    def call_answered(self, call, remote_sdp):
        """Not after the end."""

    def call_failed(self, call, status, reason):
        """Not after the end."""

    def call_ended(self, call, by_remote, reason):
        """Not after the end."""

    def call_info(self, call, content_type, body):
        """Not after the end."""

    def call_offer(self, call, remote_sdp):
        """Not after the end."""


_ENDED = _Ended()
