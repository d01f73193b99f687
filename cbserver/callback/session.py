"""One callback: the legA -> (IVR) -> legB -> joined -> ended state machine.

A ``CallbackSession`` is created once the request was authorized. It places legA through the
UA, plays "please wait" (Simple/Extended) or runs the hosted IVR once legA answers,
re-authorizes and places legB, joins the legs' media, enforces the maximum duration (with a
warning one minute before), and on every path ends both dialogs and writes both legs' xDRs
with the cause. Every timer runs on the injected clock. Status changes are reported to
``on_change`` (the service persists them for the page).

Everything that happens to a session is an ``Event``, dispatched through the state table of
``cbserver.callback.states``: the table names, for each (state, event), the ``_on_*`` method
below that decides what happens. Handlers set the next state before acting, because acting
(hanging a leg up, stopping a prompt) may report the next event synchronously.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal

from twisted.internet import defer

from cbserver import priority
from cbserver.billing.authorize import AuthorizationError, AuthRequest
from cbserver.billing.rating import connected_seconds, paid_seconds
from cbserver.billing.xdr import XdrRejected, leg_pricer
from cbserver.callback.causes import classify_failure
from cbserver.callback.ivr import IvrFailed
from cbserver.callback.legs import Leg, LegListener
from cbserver.callback.records import store_xdrs
from cbserver.callback.states import IGNORE, IMPOSSIBLE, TABLE, Event, State
from cbserver.callback.view import SessionView
from cbserver.errors import DatabaseUnavailable
from cbserver.logs import Logger, describe_failure
from cbserver.namedtimers import NamedTimersMixin
from cbserver.sip.ua import CallStateError

log = Logger()

WARNING_BEFORE_END = 60  # seconds: "one minute left"
MAX_DURATION_CUT = 7 * 86400  # seconds: no call is longer (rating.MAX_DURATION)
WAIT_PROMPT_PAUSE = 2.0  # seconds of silence between "please wait" repetitions
EXPLAIN_TIMEOUT = 15  # seconds the explanation of an early end may take
#: Seconds the maximum-duration cut comes before the end of the last paid second: the
#: timer's own lateness and the time a leg takes to end once cut must fit in it. The default
#: of the ``[billing] cut_margin`` setting (``SessionContext.cut_margin``).
CUT_MARGIN = 2.0

_UP = ("calling", "ringing", "answered")  # leg states with a call still to end


@dataclass
class SessionContext:
    """What a session needs from the service: collaborators and the instance's settings."""

    ua: object  # IUserAgent
    media: object  # IMediaFactory
    authorizer: object  # IAuthorizer
    recorder: object  # ICallRecorder
    clock: object
    node: str
    no_answer_timeout: float
    ivr_factory: object = None  # (session) -> object with run() -> Deferred, cancel()
    on_change: object = None  # (session) -> None
    metrics: object = None
    extra: dict = field(default_factory=dict)
    instance_id: str | None = None  # this process's server_nodes.instance_id, for the xDRs
    cut_margin: float = CUT_MARGIN  # seconds (see CUT_MARGIN)
    keeper: object = None  # RecoveryKeeper: the crash-recovery row, on answer and on end
    # (seconds) -> None: how long legB's re-authorization took (the node's admission gate
    # watches it: legA waits that long in silence before legB is even dialled).
    on_legb_delay: object = None


class CallbackSession(SessionView, NamedTimersMixin):
    """The state machine of one callback; see the module docstring."""

    def __init__(self, session_id: str, request, app, auth, ctx: SessionContext,
                 created_at: float | None = None):
        self.id = session_id
        self.request = request
        self.app = app
        self.auth = auth  # the authorization that legA's xDR uses until legB is re-authorized
        self.ctx = ctx
        self.clock = ctx.clock
        self.state = State.NEW
        self.status = "calling_you"  # what the page shows (api.STATUSES)
        self.cause: dict | None = None
        self.charges: dict | None = None
        self.created_at = created_at if created_at is not None else self.clock.seconds()
        self.updated_at = self.created_at
        self.a = Leg("A", request.phone)
        # Hosted: legB's number is unknown until the caller keys it in the IVR.
        legb = "" if request.mode == "hosted" else (request.destination or app.second_number or "")
        self.b = Leg("B", legb)
        self.account_id = request.account
        self._relay = None
        self._timers: dict[str, object] = {}
        self._ivr = None
        self._pending_cause = None  # decided before an explanation is played
        self._late_reservation = False  # legB's re-authorization answered while writing
        self.observe = None  # (state, event) -> None: a test's view of the transitions
        self.done = defer.Deferred()

    # -- the one way in ----------------------------------------------------------------------

    def dispatch(self, event: Event, *args) -> None:
        """Let the state table decide what ``event`` does in the current state."""
        state = self.state
        if self.observe is not None:
            self.observe(state, event)
        action = TABLE[(state, event)]
        if action == IGNORE:
            return
        if action == IMPOSSIBLE:
            log.error("impossible event {event} in state {state} callback_id={callback_id}",
                      event=event.name, state=state.name, callback_id=self.id)
            return
        getattr(self, f"_on_{action}")(*args)

    def _enter(self, state: State) -> None:
        log.debug("callback {old} -> {new} callback_id={callback_id}", old=self.state.name,
                  new=state.name, callback_id=self.id)
        self.state = state

    def start(self) -> defer.Deferred:
        """Place legA; the returned Deferred fires with the final status dict."""
        self.dispatch(Event.START)
        return self.done

    def shutdown(self, cause: str = "shutdown", reason: str = "server shutting down") -> defer.Deferred:
        """The server is stopping (or a drain's deadline passed: ``cause`` says which): end
        this callback now; it is billed up to now like any call the server ends."""
        self.dispatch(Event.SHUTDOWN, cause, reason)
        return self.done

    def hang_up(self, code: str, reason: str) -> defer.Deferred:
        """End this callback now from our side, with cause ``code`` (an operator's hang-up).

        The same event as a shutdown (both legs CANCELled or BYEd, both xDRs written), with
        another cause; a callback already ending keeps the cause it has.
        """
        self.dispatch(Event.SHUTDOWN, code, reason)
        return self.done

    # ICallListener's events, through LegListener, as events of this leg.
    def leg_ringing(self, leg: Leg, early_sdp) -> None:
        """180/183."""
        self.dispatch(Event.A_RINGING if leg is self.a else Event.B_RINGING, leg, early_sdp)

    def leg_answered(self, leg: Leg, remote_sdp) -> None:
        """2xx."""
        self.dispatch(Event.A_ANSWERED if leg is self.a else Event.B_ANSWERED, leg, remote_sdp)

    def leg_failed(self, leg: Leg, status: int, reason: str) -> None:
        """A final non-2xx: the leg was never answered."""
        self.dispatch(Event.A_FAILED if leg is self.a else Event.B_FAILED, leg, status, reason)

    def leg_ended(self, leg: Leg, by_remote: bool, reason: str) -> None:
        """An answered leg ended (BYE either way)."""
        if leg is self.a:
            event = Event.A_BYE if by_remote else Event.A_ENDED_LOCAL
        else:
            event = Event.B_BYE if by_remote else Event.B_ENDED_LOCAL
        self.dispatch(event, leg, reason)

    def caller_identified(self, auth) -> None:
        """Hosted: the IVR identified the caller; legA is theirs from now on.

        The internal account pays only for a call in which nobody was identified (manual,
        "Create an internal account": it charges the "partially made" calls where no valid
        account ID was given). Once the caller is known, legA is charged to their account
        even if they hang up, or fail, before a legB is placed.
        """
        self.auth = auth
        self.account_id = auth.account.id
        self._arm_cut()  # the caller's own money pays for legA from now on
        if self.ctx.keeper is not None:
            self.ctx.keeper.answered(self)  # legA's crash-recovery xDR is theirs now too

    # -- actions -------------------------------------------------------------------------------

    def _report(self, d: defer.Deferred, event: Event, what: str, quiet=()) -> None:
        """Dispatch ``event`` with ``d``'s result; log any failure (but ``quiet`` ones, which
        dispatch nothing), the handler's included: no Deferred is left failing unhandled."""
        def swallow(f) -> None:
            f.trap(*quiet)  # anything else goes on to the log below

        d.addCallback(lambda result: self.dispatch(event, result))
        if quiet:
            d.addErrback(swallow)
        d.addErrback(lambda f: log.failure("{what} callback_id={callback_id}", f, what=what,
                                           callback_id=self.id))

    def _place(self, leg: Leg) -> None:
        """Open the leg's media and send the INVITE."""
        call_id = f"{self.id}-{leg.name}"
        try:
            leg.media = self.ctx.media.new_leg(self.app.name, call_id)
            offer = leg.media.open()
        except Exception as e:  # noqa: BLE001 - any media failure ends the callback cleanly
            log.failure("no media for leg {leg} callback_id={callback_id}", leg=leg.name,
                        callback_id=self.id)
            leg.state, leg.reason = "failed", f"media unavailable: {e}"
            self.dispatch(Event.PLACE_FAILED, "media_unavailable", leg.reason)
            return
        leg.state = "calling"
        leg.placed_at = self.clock.seconds()
        try:
            leg.call = self.ctx.ua.place_call(
                leg.number, caller_id=self.caller_id_for(leg.name), display_name=None,
                sdp_offer=offer, no_answer_timeout=self.ctx.no_answer_timeout,
                listener=LegListener(self, leg), log_context=self.id)
        except CallStateError as e:
            leg.state, leg.reason = "failed", str(e)
            self.dispatch(Event.PLACE_FAILED, "shutdown", str(e))
            return
        # The call logs its Call-ID once against log_context ("call placed call_id=…
        # callback_id=…"), the line that joins this callback's log to the SIP side's.
        self._changed()

    def _answered(self, leg: Leg, remote_sdp) -> None:
        leg.state = "answered"
        leg.answered_at = self.clock.seconds()
        leg.media.answer(remote_sdp)
        if self.ctx.keeper is not None:
            self.ctx.keeper.answered(self)
        if self.ctx.metrics is not None and leg.placed_at is not None:
            self.ctx.metrics.post_dial_delay(leg.answered_at - leg.placed_at)

    def _down(self, leg: Leg, state: str, status: int | None, reason: str) -> None:
        """Record a leg's final event (``failed`` or ``ended``)."""
        leg.state = state
        leg.ended_at = self.clock.seconds()
        if state == "failed" or leg.sip_status is None:
            leg.sip_status = status
        leg.reason = reason
        if self.ctx.metrics is not None:
            self.ctx.metrics.leg_final(leg.name, status)

    def _authorize_b(self, destination: str) -> None:
        """Re-authorize for legB with legA's time so far."""
        # Counted as legA's xDR will count it: a started second is charged.
        elapsed = connected_seconds(self.clock.seconds() - self.a.answered_at)
        req = AuthRequest(session_id=self.id, account_id=self.account_id, cli=self.request.phone,
                          cld=destination, access_code=self.app.access_code,
                          leg_a_elapsed=elapsed, leg_a_connect=self._datetime(self.a.answered_at),
                          # What legA's authorization read: one round trip if nothing moved.
                          basis=getattr(self.auth, "basis", None))
        started = self.clock.seconds()
        # LegA's caller hears silence until legB is dialled: its statements go first in the
        # pool, before other running callbacks' rows and xDRs (cbserver.priority).
        d = defer.maybeDeferred(priority.urgent, self.ctx.authorizer.authorize, req)
        if self.ctx.on_legb_delay is not None:
            d.addBoth(self._legb_delay, started)
        d.addCallbacks(lambda auth: self.dispatch(Event.AUTH_OK, auth), self._auth_failed)
        d.addErrback(lambda f: log.failure("re-authorization callback_id={callback_id}", f,
                                           callback_id=self.id))

    def _legb_delay(self, result, started: float):
        """Report how long legB's re-authorization took; pass its result on."""
        try:
            self.ctx.on_legb_delay(self.clock.seconds() - started)
        except Exception:  # noqa: BLE001 - an observer must never break the call
            log.failure("legB delay observer callback_id={callback_id}", callback_id=self.id)
        return result

    def _auth_failed(self, f) -> None:
        if f.check(AuthorizationError):
            self.dispatch(Event.AUTH_REFUSED, f.value)
        else:
            self.dispatch(Event.AUTH_ERROR, f)

    def _dial_b(self, auth) -> None:
        """Play "please wait" on legA and place legB."""
        self.auth = auth
        self._enter(State.CALLING_B)
        self._set_status("calling_destination")
        self._on_play_wait()
        self._arm_cut()  # legA is charged while legB rings: cut it there too if need be
        self._place(self.b)

    def _arm_cut(self) -> None:
        """(Re-)arm the maximum-duration cut whenever what pays or what costs changes.

        Armed when legA answers, and again when the caller is identified (hosted), legB is
        authorized, answers or fails. What the call may cost is what its authorization holds,
        ``A(elapsed + t) + B(t)`` (or more, as held), or, when it allowed no legB (``t = 0``),
        the free budget it read. The cut comes when the legs, priced as their xDRs will price
        them (seconds rounded up, legA by ``CALLBACK_FAIL`` once a placed legB failed), would
        cost more ``cut_margin`` seconds later. Until legB answers it is assumed to answer at
        the cut (the least it then costs is counted), so legA's seconds in the IVR, while
        legB is authorized and while it rings are paid for. The time limit (``max_seconds``
        of talk after legB answers) applies as before. An account without a limit is cut
        by time only.
        """
        auth, now, margin = self.auth, self.clock.seconds(), self.ctx.cut_margin
        delays = []
        if self.b.answered_at is not None:
            delays.append(max(0.0, self.b.answered_at + auth.max_seconds - now))
        if auth.budget is not None:
            delays.append(self._paid_for(now, margin))
        if not delays:
            self._cancel_timer("max-duration")
            return
        delay = min(delays)
        if self.b.answered_at is not None and delay > WARNING_BEFORE_END:
            self._start_timer("warning", delay - WARNING_BEFORE_END, self.dispatch,
                              Event.WARN_TIMER)
        self._start_timer("max-duration", delay, self.dispatch, Event.MAX_DURATION)

    def _paid_for(self, now: float, margin: float) -> float:
        """Seconds from ``now`` until the cut that keeps both xDRs within the held amount."""
        auth = self.auth
        elapsed, t = auth.request.leg_a_elapsed, auth.max_seconds
        if t > 0:
            held = max(auth.reserved_a + auth.reserved_b,
                       auth.leg_a.amount(elapsed + t) + auth.leg_b.amount(t))
        else:
            # No legB: legA's cost so far is held; the free budget pays for the explanation,
            # unless another call of the balance owns it (overdraft protection).
            free = auth.budget if auth.reason != "concurrent_call" else Decimal(0)
            held = max(Decimal(0), free, auth.reserved_a + auth.reserved_b)
        legb_failed = self.b.state == "failed" and self.b.call is not None
        _, a_pricer, _ = leg_pricer(auth, "A", self._datetime(self.a.answered_at), legb_failed)
        legs = [(a_pricer, now - self.a.answered_at)]
        fixed = Decimal(0)
        if self.b.answered_at is not None:
            _, b_pricer, _ = leg_pricer(auth, "B", self._datetime(self.b.answered_at))
            legs.append((b_pricer, now - self.b.answered_at))
        elif t > 0 and not legb_failed:
            # legB may answer just before the cut: it then lasts up to the margin.
            fixed = auth.leg_b.amount(connected_seconds(margin))
        paid = paid_seconds(held, legs, MAX_DURATION_CUT, fixed)
        return 0.0 if paid is None else max(0.0, paid - margin)

    def _start_relay(self) -> None:
        self._relay = relay = self.ctx.media.join(self.a.media, self.b.media, self.id)
        d = self._relay.start()
        d.addCallback(lambda how: self.dispatch(
            Event.RELAY_STOPPED if getattr(how, "name", str(how)) == "STOPPED" else Event.RELAY_LOST,
            getattr(how, "name", str(how)), relay.lost_leg))
        d.addErrback(lambda f: log.failure("relay callback_id={callback_id}", f,
                                           callback_id=self.id))

    def _explain(self, prompts, code: str, status, reason: str) -> None:
        """Tell legA why (a short prompt), then end the callback.

        The cause is decided now: the caller hanging up during the explanation does not
        change why the callback ended.
        """
        self._enter(State.EXPLAINING)
        self._pending_cause = (code, status, reason)
        if self.a.state != "answered" or self.a.media is None:
            self.dispatch(Event.EXPLAINED)
            return
        d = self.a.media.play(prompts)
        d.addTimeout(EXPLAIN_TIMEOUT, self.clock)

        def cut_short(f):
            # Timed out or cancelled: end anyway. Anything else is a bug: log it, end anyway.
            if not f.check(defer.TimeoutError, defer.CancelledError):
                log.failure("explanation callback_id={callback_id}", f, callback_id=self.id)

        d.addErrback(cut_short)
        self._report(d, Event.EXPLAINED, "explanation")

    def _finish(self, code: str, status, reason: str) -> None:
        """End both legs (CANCEL/BYE) and, once they ended, write the xDRs."""
        if self._pending_cause is not None:
            code, status, reason = self._pending_cause
        self._enter(State.ENDING)
        self.cause = {"code": code, "sip_status": status, "reason": reason}
        self._cancel_all_timers()
        if self._relay is not None:
            relay, self._relay = self._relay, None
            relay.stop()
        if self._ivr is not None:
            self._ivr.cancel()
        for leg in (self.a, self.b):
            if leg.media is not None:
                leg.media.stop_prompt()
            self._hangup(leg)
        self._changed()
        self._maybe_write()

    def _hangup(self, leg: Leg) -> None:
        """CANCEL or BYE a leg that is still up."""
        if leg.call is not None and leg.state in _UP:
            leg.call.hangup().addErrback(
                lambda f: log.failure("hangup leg {leg} callback_id={callback_id}", f,
                                      leg=leg.name, callback_id=self.id))

    def _maybe_write(self) -> None:
        """Once no leg is up any more, write the xDRs."""
        if self.state is not State.ENDING:
            return
        if any(leg.call is not None and leg.state in _UP for leg in (self.a, self.b)):
            return
        self._enter(State.WRITING)
        d = store_xdrs(self)
        d.addCallbacks(lambda records: self.dispatch(Event.XDRS_WRITTEN, records),
                       lambda f: self.dispatch(Event.XDRS_FAILED, f))
        d.addErrback(lambda f: log.failure("xDRs callback_id={callback_id}", f,
                                           callback_id=self.id))

    # -- handlers: TABLE's entries -------------------------------------------------------------

    def _on_start_calling(self) -> None:
        self._enter(State.CALLING_A)
        self._changed()
        self._place(self.a)

    def _on_place_failed(self, code: str, reason: str) -> None:
        self._finish(code, None, reason)

    def _on_ringing(self, leg: Leg, early_sdp) -> None:
        """180/183: show ringing; early media SDP configures the leg's RTP."""
        if leg.state == "calling":
            leg.state = "ringing"
            leg.alerted_at = self.clock.seconds()
            if early_sdp:
                leg.media.answer(early_sdp)
            self._changed()

    def _on_a_answered(self, leg: Leg, remote_sdp) -> None:
        self._answered(leg, remote_sdp)
        hosted = self.request.mode == "hosted" and self.ctx.ivr_factory is not None
        self._enter(State.IVR if hosted else State.AUTHORIZING_B)
        self._set_status("answered")
        self._arm_cut()  # legA costs from now: the first authorization's hold pays for it
        if hosted:
            self._ivr = self.ctx.ivr_factory(self)
            d = self._ivr.run()
            d.addCallbacks(lambda result: self.dispatch(Event.IVR_DONE, result),
                           lambda f: self.dispatch(Event.IVR_FAILED, f))
            d.addErrback(lambda f: log.failure("IVR callback_id={callback_id}", f,
                                               callback_id=self.id))
        else:
            self._authorize_b(self.b.number)

    def _on_a_failed(self, leg: Leg, status: int, reason: str) -> None:
        self._down(leg, "failed", status, reason)
        kind = classify_failure(status, reason)
        self._finish("trunk_unreachable" if kind == "unreachable" else f"lega_{kind}",
                     status, reason)

    def _on_a_hung_up(self, leg: Leg, reason: str) -> None:
        self._down(leg, "ended", 200, reason)
        if self.b.state in ("calling", "ringing"):
            self._finish("caller_hung_up", None, "caller hung up while legB was ringing")
        else:
            self._finish("lega_hung_up", None, reason)

    def _on_b_hung_up(self, leg: Leg, reason: str) -> None:
        self._down(leg, "ended", 200, reason)
        self._finish("legb_hung_up", None, reason)

    def _on_ended_locally(self, leg: Leg, reason: str) -> None:
        self._down(leg, "ended", 200, reason)
        self._finish("local_hangup", None, reason)

    def _on_shut_down(self, cause: str = "shutdown", reason: str = "server shutting down") -> None:
        self._finish(cause, None, reason)

    def _on_ivr_done(self, result) -> None:
        self._ivr = None
        auth, destination = result
        self.caller_identified(auth)
        self.b.number = destination
        self._dial_b(auth)

    def _on_ivr_failed(self, f) -> None:
        self._ivr = None
        if f.check(IvrFailed):
            if self.ctx.metrics is not None:
                self.ctx.metrics.ivr_failure(f.value.code)
            self._finish(f.value.code, None, str(f.value))
        elif not f.check(defer.CancelledError):
            if f.check(DatabaseUnavailable, AuthorizationError):
                # PostgreSQL away, or the identified account refused: one line, no traceback.
                log.warn("IVR failed callback_id={callback_id}: {err}", callback_id=self.id,
                         err=describe_failure(f))
            else:
                log.failure("IVR failed callback_id={callback_id}", f, callback_id=self.id)
            self._finish("ivr_error", None, f.getErrorMessage())

    def _on_auth_ok(self, auth) -> None:
        self.auth = auth
        if auth.max_seconds <= 0:
            self._arm_cut()  # legA only, through the explanation, on what the budget pays
            self._explain(["not_enough_balance", "goodbye"], "no_balance", None,
                          "not enough balance for legB")
        else:
            self._dial_b(auth)

    def _on_auth_refused(self, e: AuthorizationError) -> None:
        self._explain(["call_failed", "goodbye"], f"legb_{e.reason}", None, str(e))

    def _on_auth_error_logged(self, f) -> None:
        if f.check(DatabaseUnavailable):
            # Expected while PostgreSQL is away (the pool logs the outage itself): one
            # line, not a traceback per callback.
            log.warn("re-authorization failed callback_id={callback_id}: database unavailable "
                     "({err})", callback_id=self.id, err=describe_failure(f))
        else:
            log.failure("re-authorization failed callback_id={callback_id}", f,
                        callback_id=self.id)

    def _on_auth_error(self, f) -> None:
        self._on_auth_error_logged(f)
        self._explain(["call_failed", "goodbye"], "authorization_failed", None, str(f.value))

    def _on_play_wait(self) -> None:
        """Repeat "please wait" on legA while legB rings."""
        self._report(self.a.media.play(["please_wait"]), Event.WAIT_PLAYED, "please wait",
                     quiet=(defer.CancelledError,))

    def _on_wait_played(self, _result) -> None:
        self._start_timer("wait-prompt", WAIT_PROMPT_PAUSE, self.dispatch, Event.WAIT_TIMER)

    def _on_b_answered(self, leg: Leg, remote_sdp) -> None:
        """legB answered: relay media, re-arm the maximum-duration cut and its warning."""
        self._answered(leg, remote_sdp)
        self._enter(State.CONNECTED)
        self._cancel_timer("wait-prompt")
        self._start_relay()
        self._set_status("connected")
        self._arm_cut()

    def _on_b_failed(self, leg: Leg, status: int, reason: str) -> None:
        self._down(leg, "failed", status, reason)
        self._cancel_timer("wait-prompt")
        self._arm_cut()  # legA alone now, maybe by CALLBACK_FAIL: through the explanation
        kind = classify_failure(status, reason)
        prompt = {"busy": "busy", "no_answer": "no_answer"}.get(kind, "call_failed")
        self._explain([prompt, "goodbye"], f"legb_{kind}", status, reason)

    def _on_warn(self) -> None:
        """One minute left: tell both parties, then rejoin the media."""
        self._enter(State.WARNING)
        relay, self._relay = self._relay, None
        relay.stop()
        plays = [leg.media.play(["one_minute_left"]) for leg in (self.a, self.b)]
        self._report(defer.DeferredList(plays, consumeErrors=True), Event.WARNING_PLAYED,
                     "one minute left")

    def _on_rejoin(self, _result) -> None:
        self._enter(State.CONNECTED)
        self._start_relay()

    def _on_max_duration(self) -> None:
        limit = self.auth.max_seconds
        self._finish("max_duration", None, f"maximum duration of {limit}s reached")

    def _on_relay_lost(self, name: str, leg: str | None = None) -> None:
        """The relay ended by itself: a leg's media stopped (no RTP nor RTCP for the
        inactivity timeout, or an RTCP BYE that no SIP BYE followed within its grace)."""
        where = f" on leg{leg}" if leg else ""
        self._finish("media_timeout" if name == "INACTIVE" else "media_bye", None,
                     f"media ended{where}: {'inactive' if name == 'INACTIVE' else 'rtcp bye, no SIP BYE'}")

    def _on_explained(self, _result=None) -> None:
        self._finish(*self._pending_cause)

    def _on_answered_while_ending(self, leg: Leg, remote_sdp) -> None:
        """The answer crossed our CANCEL: end this leg too."""
        self._answered(leg, remote_sdp)
        self._hangup(leg)

    def _on_failed_while_ending(self, leg: Leg, status: int, reason: str) -> None:
        self._down(leg, "failed", status, reason)
        self._maybe_write()

    def _on_ended_while_ending(self, leg: Leg, reason: str) -> None:
        self._down(leg, "ended", 200, reason)
        self._maybe_write()

    def _on_xdrs_written(self, records) -> None:
        total = sum((r.amount for r in records), Decimal(0))
        self.charges = {"A": format(records[0].amount, "f"), "B": format(records[1].amount, "f"),
                        "total": format(total, "f"), "currency": records[0].currency}
        self._enter(State.ENDED)
        self.status = "ended"
        self._changed()
        log.info("callback ended callback_id={callback_id} cause={cause} charges={total} "
                 "{currency}", callback_id=self.id, cause=self.cause["code"],
                 total=self.charges["total"], currency=self.charges["currency"])
        if self._late_reservation:
            self._on_release_late_reservation(None)
        if self.ctx.keeper is not None:
            self.ctx.keeper.ended(self)
        self.done.callback(self.as_dict())

    def _on_late_reservation(self, _auth) -> None:
        # The xDRs being stored release the reservations that existed when they were sent;
        # this one may be newer: release it once they are stored.
        self._late_reservation = True

    def _on_release_late_reservation(self, _auth) -> None:
        """legB's re-authorization reserved balance after the xDRs were stored: drop it."""
        self._late_reservation = False
        d = defer.maybeDeferred(self.ctx.authorizer.release, self.id)
        d.addErrback(lambda f: log.failure("releasing a late reservation callback_id={callback_id}",
                                           f, callback_id=self.id))

    def _on_xdrs_failed(self, f) -> None:
        """The recorder refused the xDRs: end the session all the same, the money kept in the log.

        The recorder spools through an outage, so a failure here is a refusal: PostgreSQL
        rejected a leg (``XdrRejected``: the writer keeps it in ``<spool>.rejected``) or the
        spool itself could not be written (``OSError``: nowhere else holds it). Waiting
        cannot change either, so the session ends: status ``ended`` (the final row frees the
        concurrency slot), the reservations released (a refused leg's were not), and both
        legs' xDRs written in full on the error line, so an operator can bill them by hand.
        """
        records = [leg.record.to_dict() for leg in (self.a, self.b) if leg.record is not None]
        reason = "rejected" if f.check(XdrRejected) else "spool_failed" if f.check(OSError) else "error"
        fmt = "xDRs refused callback_id={callback_id}: {why}; xdrs={xdrs}"
        fields = {"callback_id": self.id, "xdrs": json.dumps(records, sort_keys=True, default=str)}
        if reason == "error":
            log.failure(fmt, f, why="unexpected error", **fields)
        else:
            log.error(fmt, why=f.getErrorMessage(), **fields)
        if self.ctx.metrics is not None:
            self.ctx.metrics.xdr_refused(reason)
        self._late_reservation = False  # released below with the rest
        self._enter(State.ENDED)
        self.status = "ended"
        d = defer.maybeDeferred(self.ctx.authorizer.release, self.id)
        d.addErrback(lambda e: log.failure("releasing reservations callback_id={callback_id}", e,
                                           callback_id=self.id))
        self._changed()
        if self.ctx.keeper is not None:
            self.ctx.keeper.ended(self)
        self.done.callback(self.as_dict())
