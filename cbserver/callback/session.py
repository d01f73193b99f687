"""One callback: the legA -> (IVR) -> legB -> joined -> ended state machine.

A ``CallbackSession`` is created once the request was authorized. It places legA through the
UA, plays "please wait" (Simple/Extended) or runs the hosted IVR once legA answers,
re-authorizes and places legB, joins the legs' media, enforces the maximum duration (with a
warning one minute before), and on every path ends both dialogs and writes both legs' xDRs
with the cause. Every timer runs on the injected clock. Status changes are reported to
``on_change`` (the service persists them for the page).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from twisted.internet import defer

from cbserver.billing.authorize import AuthorizationError, AuthRequest
from cbserver.billing.xdr import LegRecord, leg_record
from cbserver.callback.causes import classify_failure
from cbserver.callback.legs import Leg, LegListener
from cbserver.db.pool import DATABASE_ERRORS
from cbserver.logs import Logger, describe_failure
from cbserver.namedtimers import NamedTimersMixin
from cbserver.sip.ua import CallStateError

log = Logger()

WARNING_BEFORE_END = 60  # seconds: "one minute left"
WAIT_PROMPT_PAUSE = 2.0  # seconds of silence between "please wait" repetitions


@dataclass
class SessionContext:
    """What a session needs from the service: collaborators and the instance's settings."""

    ua: object
    media: object  # new_leg(application, call_id) -> LegMedia, join(a, b, call_id) -> Relay
    authorizer: object  # IAuthorizer
    recorder: object  # ICallRecorder
    clock: object
    node: str
    no_answer_timeout: float
    ivr_factory: object = None  # (session) -> object with run() -> Deferred[Authorization]
    on_change: object = None  # (session) -> None
    metrics: object = None
    extra: dict = field(default_factory=dict)


class CallbackSession(NamedTimersMixin):
    """The state machine of one callback; see the module docstring."""

    def __init__(self, session_id: str, request, app, auth, ctx: SessionContext,
                 created_at: float | None = None):
        self.id = session_id
        self.request = request
        self.app = app
        self.auth = auth  # the authorization that legA's xDR uses until legB is re-authorized
        self.ctx = ctx
        self.clock = ctx.clock
        self.status = "calling_you"
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
        self._waiting = False
        self._ending = False
        self._writing = False
        self._pending_cause = None
        self.done = defer.Deferred()

    # -- helpers -------------------------------------------------------------------------

    def _datetime(self, seconds: float | None) -> dt.datetime | None:
        """Clock seconds as an aware UTC datetime."""
        return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)

    def _set_status(self, status: str) -> None:
        """Record a new status and tell the service."""
        self.status = status
        self._changed()

    def _changed(self) -> None:
        """Something the page shows changed."""
        self.updated_at = self.clock.seconds()
        if self.ctx.on_change is not None:
            self.ctx.on_change(self)

    def caller_id_for(self, leg: str) -> str:
        """The calling number shown on a leg (RFC 3325 P-Asserted-Identity too).

        With ``use_account_id_as_ani`` (manual: "show the account ID (i.e. PIN) as the
        calling number") both legs show the account ID once there is one: legA, so the person
        sees which account calls them back, and legB. Otherwise, and for a Hosted legA (nobody
        is identified before it), legA shows the instance's number (the helpdesk) when it has
        one, and legB the person's own number.
        """
        if self.app.use_account_id_as_ani and self.account_id:
            return self.account_id
        if leg == "A":
            return self.app.second_number or "cbserver"
        return self.request.phone

    def as_dict(self) -> dict:
        """The status of this callback (the ``ICallbackService.get_status`` shape)."""
        return {
            "id": self.id, "application": self.app.name, "mode": self.request.mode,
            "status": self.status, "legs": {"A": self.a.as_dict(), "B": self.b.as_dict()},
            "cause": self.cause, "charges": self.charges,
            "created_at": self._datetime(self.created_at).isoformat(timespec="milliseconds"),
            "updated_at": self._datetime(self.updated_at).isoformat(timespec="milliseconds"),
        }

    # -- the path of a callback ------------------------------------------------------------

    def start(self) -> defer.Deferred:
        """Place legA; the returned Deferred fires with the final status dict."""
        self._changed()
        self._place(self.a)
        return self.done

    def _place(self, leg: Leg) -> None:
        """Open the leg's media and send the INVITE."""
        call_id = f"{self.id}-{leg.name}"
        try:
            leg.media = self.ctx.media.new_leg(self.app.name, call_id)
            offer = leg.media.open()
        except Exception as e:  # noqa: BLE001 - any media failure ends the callback cleanly
            log.failure("no media for leg {leg} session={sid}", leg=leg.name, sid=self.id)
            leg.state, leg.reason = "failed", f"media unavailable: {e}"
            self._finish("media_unavailable", None, leg.reason)
            return
        leg.state = "calling"
        leg.placed_at = self.clock.seconds()
        try:
            leg.call = self.ctx.ua.place_call(
                leg.number, caller_id=self.caller_id_for(leg.name), display_name=None,
                sdp_offer=offer, no_answer_timeout=self.ctx.no_answer_timeout,
                listener=LegListener(self, leg))
        except CallStateError as e:
            leg.state, leg.reason = "failed", str(e)
            self._finish("shutdown", None, str(e))
            return
        self._changed()

    def leg_ringing(self, leg: Leg, early_sdp) -> None:
        """180/183: show ringing; early media SDP configures the leg's RTP."""
        if leg.state == "calling":
            leg.state = "ringing"
            if early_sdp:
                leg.media.answer(early_sdp)
            self._changed()

    def leg_answered(self, leg: Leg, remote_sdp) -> None:
        """A leg answered."""
        leg.state = "answered"
        leg.answered_at = self.clock.seconds()
        leg.media.answer(remote_sdp)
        if self.ctx.metrics is not None and leg.placed_at is not None:
            self.ctx.metrics.post_dial_delay(leg.answered_at - leg.placed_at)
        if self._ending:
            # The answer crossed our hang-up: end this leg too.
            self._hangup(leg)
            return
        if leg is self.a:
            self._set_status("answered")
            if self.request.mode == "hosted" and self.ctx.ivr_factory is not None:
                self._run_ivr()
            else:
                self._authorize_b(self.b.number)
        else:
            self._join()

    def caller_identified(self, auth) -> None:
        """Hosted: the IVR identified the caller; legA is theirs from now on.

        The internal account pays only for a call in which nobody was identified (manual,
        "Create an internal account": it charges the "partially made" calls where no valid
        account ID was given). Once the caller is known, legA is charged to their account
        even if they hang up, or fail, before a legB is placed.
        """
        self.auth = auth
        self.account_id = auth.account.id

    def _run_ivr(self) -> None:
        """Hosted: identify the caller, tell the balance, ask for the number."""
        self._ivr = self.ctx.ivr_factory(self)
        d = self._ivr.run()

        def identified(result):
            self._ivr = None
            if self._ending:
                return
            auth, destination = result
            self.auth = auth
            self.account_id = auth.account.id
            self.b.number = destination
            self._dial_b(auth)

        def failed(f):
            self._ivr = None
            if self._ending:
                return
            from cbserver.callback.ivr import IvrFailed

            if f.check(IvrFailed):
                if self.ctx.metrics is not None:
                    self.ctx.metrics.ivr_failure(f.value.code)
                self._finish(f.value.code, None, str(f.value))
            elif not f.check(defer.CancelledError):
                log.failure("IVR failed session={sid}", f, sid=self.id)
                self._finish("ivr_error", None, f.getErrorMessage())

        d.addCallbacks(identified, failed)

    @defer.inlineCallbacks
    def _authorize_b(self, destination: str):
        """Re-authorize for legB with legA's time so far, then dial it or explain why not."""
        elapsed = int(self.clock.seconds() - self.a.answered_at)
        req = AuthRequest(session_id=self.id, account_id=self.account_id, cli=self.request.phone,
                          cld=destination, access_code=self.app.access_code,
                          leg_a_elapsed=elapsed, leg_a_connect=self._datetime(self.a.answered_at))
        try:
            auth = yield self.ctx.authorizer.authorize(req)
        except AuthorizationError as e:
            if not self._ending:
                yield self._say_and_finish(["call_failed", "goodbye"], f"legb_{e.reason}", None,
                                           str(e))
            return
        except Exception as e:  # noqa: BLE001 - the database may be away: end cleanly
            if isinstance(e, DATABASE_ERRORS):
                # Expected while PostgreSQL is away (the pool logs the outage itself): one
                # line, not a traceback per callback.
                log.warn("re-authorization failed session={sid}: database unavailable ({err})",
                         sid=self.id, err=describe_failure(e))
            else:
                log.failure("re-authorization failed session={sid}", sid=self.id)
            if not self._ending:
                yield self._say_and_finish(["call_failed", "goodbye"], "authorization_failed",
                                           None, str(e))
            return
        if self._ending:
            return
        self.auth = auth
        if auth.max_seconds <= 0:
            yield self._say_and_finish(["not_enough_balance", "goodbye"], "no_balance", None,
                                       "not enough balance for legB")
            return
        self._dial_b(auth)

    def _dial_b(self, auth) -> None:
        """Play "please wait" on legA and place legB."""
        self.auth = auth
        self._set_status("calling_destination")
        self._waiting = True
        self._play_wait()
        self._place(self.b)

    def _play_wait(self) -> None:
        """Repeat "please wait" on legA while legB rings."""
        if not self._waiting or self._ending or self.a.media is None:
            return
        d = self.a.media.play(["please_wait"])

        def again(_result):
            if self._waiting and not self._ending:
                self._start_timer("wait-prompt", WAIT_PROMPT_PAUSE, self._play_wait)

        d.addCallbacks(again, lambda f: f.trap(defer.CancelledError))

    def _join(self) -> None:
        """legB answered: relay media, arm the maximum-duration timer and its warning."""
        self._waiting = False
        self._cancel_timer("wait-prompt")
        self._relay = self.ctx.media.join(self.a.media, self.b.media, self.id)
        self._relay.start().addCallbacks(self._relay_ended,
                                         lambda f: f.trap(defer.CancelledError))
        self._set_status("connected")
        limit = self.auth.max_seconds
        if limit > WARNING_BEFORE_END:
            self._start_timer("warning", limit - WARNING_BEFORE_END, self._warn)
        self._start_timer("max-duration", limit, self._finish, "max_duration", None,
                    f"maximum duration of {limit}s reached")

    def _warn(self) -> None:
        """One minute left: tell both parties, then rejoin the media."""
        if self._ending or self._relay is None:
            return
        relay, self._relay = self._relay, None
        relay.stop()
        plays = [leg.media.play(["one_minute_left"]) for leg in (self.a, self.b)]

        def rejoin(_):
            if not self._ending:
                self._relay = self.ctx.media.join(self.a.media, self.b.media, self.id)
                self._relay.start().addCallbacks(self._relay_ended,
                                                 lambda f: f.trap(defer.CancelledError))

        defer.DeferredList(plays, consumeErrors=True).addCallback(rejoin)

    def _relay_ended(self, how) -> None:
        """The relay stopped by itself: media inactivity or RTCP BYE ends the call."""
        name = getattr(how, "name", str(how))
        if name == "STOPPED" or self._ending:
            return
        self._finish("media_timeout" if name == "INACTIVE" else "media_bye", None,
                     f"media ended: {name.lower()}")

    def leg_failed(self, leg: Leg, status: int, reason: str) -> None:
        """A leg was never answered."""
        leg.state, leg.sip_status, leg.reason = "failed", status, reason
        leg.ended_at = self.clock.seconds()
        if self.ctx.metrics is not None:
            self.ctx.metrics.leg_final(leg.name, status)
        if self._ending:
            self._maybe_done()
            return
        kind = classify_failure(status, reason)
        if leg is self.a:
            self._finish("trunk_unreachable" if kind == "unreachable" else f"lega_{kind}",
                         status, reason)
            return
        self._waiting = False
        self._cancel_timer("wait-prompt")
        prompt = {"busy": "busy", "no_answer": "no_answer"}.get(kind, "call_failed")
        self._say_and_finish([prompt, "goodbye"], f"legb_{kind}", status, reason)

    def leg_ended(self, leg: Leg, by_remote: bool, reason: str) -> None:
        """An answered leg ended (BYE either way)."""
        leg.state = "ended"
        leg.ended_at = self.clock.seconds()
        if leg.sip_status is None:
            leg.sip_status = 200
        leg.reason = reason
        if self.ctx.metrics is not None:
            self.ctx.metrics.leg_final(leg.name, 200)
        if self._ending:
            self._maybe_done()
            return
        if not by_remote:
            self._finish("local_hangup", None, reason)
            return
        if leg is self.a and self.b.state in ("calling", "ringing"):
            self._finish("caller_hung_up", None, "caller hung up while legB was ringing")
        elif leg is self.a:
            self._finish("lega_hung_up", None, reason)
        else:
            self._finish("legb_hung_up", None, reason)

    @defer.inlineCallbacks
    def _say_and_finish(self, prompts, code: str, status, reason: str):
        """Tell legA why (a short prompt), then end the callback.

        The cause is decided now: the caller hanging up during the explanation does not
        change why the callback ended.
        """
        self._pending_cause = (code, status, reason)
        if self.a.state == "answered" and self.a.media is not None:
            d = self.a.media.play(prompts)
            d.addTimeout(15, self.clock)
            try:
                yield d
            except (defer.TimeoutError, defer.CancelledError):
                pass
        self._finish(code, status, reason)

    # -- the end -----------------------------------------------------------------------------

    def shutdown(self) -> defer.Deferred:
        """The server is stopping: end this callback now."""
        self._finish("shutdown", None, "server shutting down")
        return self.done

    def _finish(self, code: str, status, reason: str) -> None:
        """End both legs (CANCEL/BYE) and, once they ended, write the xDRs. Idempotent."""
        if self._ending:
            return
        if self._pending_cause is not None:
            code, status, reason = self._pending_cause
        self._ending = True
        self._waiting = False
        self.cause = {"code": code, "sip_status": status, "reason": reason}
        self._cancel_all_timers()
        if self._relay is not None:
            self._relay.stop()
            self._relay = None
        if self._ivr is not None:
            self._ivr.cancel()
        for leg in (self.a, self.b):
            if leg.media is not None:
                leg.media.stop_prompt()
            self._hangup(leg)
        self._changed()
        self._maybe_done()

    def _hangup(self, leg: Leg) -> None:
        """CANCEL or BYE a leg that is still up."""
        if leg.call is not None and leg.state in ("calling", "ringing", "answered"):
            d = leg.call.hangup()
            d.addErrback(lambda f: log.failure("hangup leg {leg} session={sid}", f,
                                               leg=leg.name, sid=self.id))

    def _maybe_done(self) -> None:
        """Once no leg is up any more, write the xDRs and report the end."""
        if not self._ending or self.done.called or self._writing:
            return
        if any(leg.call is not None and leg.state in ("calling", "ringing", "answered")
               for leg in (self.a, self.b)):
            return
        self._writing = True
        self._write_xdrs().addErrback(
            lambda f: log.failure("xDRs not written session={sid}", f, sid=self.id))

    @defer.inlineCallbacks
    def _write_xdrs(self):
        """Build and store both legs' xDRs, close the media, report the final status."""
        now = self.clock.seconds()
        for leg in (self.a, self.b):
            if leg.ended_at is None:
                leg.ended_at = now
        legb_failed = self.b.answered_at is None
        records = [self._record(leg, legb_failed) for leg in (self.a, self.b)]
        for leg, rec in zip((self.a, self.b), records, strict=True):
            leg.record = rec
        for leg in (self.a, self.b):
            if leg.media is not None:
                try:
                    yield leg.media.close()
                except Exception:  # noqa: BLE001 - closing media must not lose the xDRs
                    log.failure("closing media session={sid}", sid=self.id)
        # Both legs in the same reactor turn, so the writer stores them in one transaction;
        # both are attempted even if one is refused, then the first failure is raised.
        results = yield defer.DeferredList([self.ctx.recorder.record(rec) for rec in records],
                                           consumeErrors=True)
        for ok, value in results:
            if not ok:
                value.raiseException()
        total = sum((r.amount for r in records), Decimal(0))
        self.charges = {"A": format(records[0].amount, "f"), "B": format(records[1].amount, "f"),
                        "total": format(total, "f"), "currency": records[0].currency}
        self.status = "ended"
        self._changed()
        log.info("callback ended session={sid} cause={cause} charges={total} {currency}",
                 sid=self.id, cause=self.cause["code"], total=self.charges["total"],
                 currency=self.charges["currency"])
        self.done.callback(self.as_dict())

    def _record(self, leg: Leg, legb_failed: bool) -> LegRecord:
        """The xDR of one leg under the authorization that applies to it."""
        auth = self.auth
        sip_code = leg.sip_status
        reason = leg.reason or (self.cause or {}).get("reason", "")
        if leg.name == "B" and leg.call is None:
            reason = f"not placed: {(self.cause or {}).get('code', '')}"
        number = auth.request.cli if leg.name == "A" else auth.request.cld
        if leg.name == "B" and (leg.call is None or number != leg.number):
            # legB never dialled under this authorization (e.g. hosted caller never
            # identified): a zero-cost record that still says what happened.
            return LegRecord(
                session_id=self.id, leg="B", account_id=auth.account.id, cli=self.request.phone,
                cld=leg.number, node=self.ctx.node, disconnect_time=self._datetime(leg.ended_at),
                currency=auth.currency, trigger_mode=self.request.mode,
                customer_id=str(auth.account.customer_id), access_code=self.app.access_code,
                sip_code=sip_code, sip_reason=reason)
        return leg_record(auth, leg.name, trigger_mode=self.request.mode, node=self.ctx.node,
                          disconnect_time=self._datetime(leg.ended_at),
                          connect_time=self._datetime(leg.answered_at),
                          duration=leg.duration(), sip_code=sip_code, sip_reason=reason,
                          legb_failed=legb_failed)
