"""The callback service: turns a validated request into a running ``CallbackSession``.

``CallbackService`` implements ``ICallbackService`` for the web layer: it checks the mode
against the instance, caps the callbacks an account has in progress, authorizes before
anything is dialled (refusing with a stable code the page can show), then starts the
session and keeps its status in PostgreSQL so any node can report it. On shutdown it stops
taking callbacks and ends the ones in progress, writing their xDRs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

from twisted.application import service
from twisted.internet import defer
from zope.interface import implementer

from cbserver import priority
from cbserver.billing import readiness
from cbserver.billing.authorize import AuthorizationError, AuthRequest
from cbserver.callback.api import CallbackRefused, ICallbackService
from cbserver.callback.causes import describe
from cbserver.callback.ivr import HostedIvr
from cbserver.callback.legmedia import IMediaFactory, LegMedia, join
from cbserver.callback.recovery import RecoveryKeeper
from cbserver.callback.session import CallbackSession, SessionContext
from cbserver.callback.statuswriter import StatusWriter
from cbserver.db import authz_store, callbacks_store
from cbserver.db.stores import PostgresReadinessStore
from cbserver.errors import DatabaseUnavailable
from cbserver.logs import Logger, describe_failure

# Authorization refusals -> (refusal code, message for the page).
_REFUSALS = {
    "unknown_account": ("bad_credentials", "unknown account or wrong password"),
    "bad_password": ("bad_credentials", "unknown account or wrong password"),
    "inactive": ("inactive_account", "this account is not active"),
    "expired": ("inactive_account", "this account has expired"),
    "no_voice_service": ("forbidden", "this account may not make calls"),
    "no_tariff": ("forbidden", "callback is not available for this account"),
    "not_rated": ("forbidden", "calls to this number are not allowed"),
    "destination_not_allowed": ("destination_not_allowed",
                                "this instance does not call that number (too long, or its prefix "
                                "is not allowed)"),
    "invalid_number": ("invalid_input", "the number is not valid"),
    "no_balance": ("no_balance", "not enough balance for this call"),
    "concurrent_call": ("rate_limited", "this account already has a call in progress"),
}
# Refusals about the number called back rather than the account: in Hosted mode these are
# the caller's, every other one is about the instance's internal account.
_NUMBER_REASONS = ("not_rated", "invalid_number", "destination_not_allowed")


@implementer(IMediaFactory)
class MediaFactory:
    """Adapts the shared ``MediaEnvironment`` to what sessions ask for."""

    def __init__(self, env):
        self.env = env

    def new_leg(self, application: str, call_id: str) -> LegMedia:
        """A leg's media endpoint (not yet bound)."""
        return LegMedia(self.env, application, call_id)

    def join(self, a: LegMedia, b: LegMedia, call_id: str):
        """A relay between two legs."""
        return join(self.env, a, b, call_id)


class AccountDirectory:
    """What the IVR may ask about an account before authorizing it."""

    def __init__(self, db):
        self.db = db

    @defer.inlineCallbacks
    def has_password(self, account_id: str):
        """True when the account has a service password, or is unknown.

        An unknown account is asked for a password too, so that the IVR does not reveal
        which account numbers exist.
        """
        info = yield authz_store.fetch_account(self.db, account_id)
        # An internal account is no caller's: it looks unknown here too (issue 14, item 3).
        return info is None or info.internal or info.password_hash is not None


class Lockouts:
    """IVR lockouts, kept in PostgreSQL so every node honours them."""

    def __init__(self, db):
        self.db = db

    def locked(self, keys):
        """Deferred[bool]: any of ``keys`` locked out now."""
        return callbacks_store.locked(self.db, keys)

    def lock(self, keys, seconds: float):
        """Lock ``keys`` out for ``seconds``."""
        return callbacks_store.lock(self.db, keys, seconds)

    def failed(self, keys, limit: int, seconds: float):
        """Count a failed identification against ``keys`` across calls; lock out (for
        ``seconds``) each key at ``limit`` failures. Deferred[list]: the keys locked now."""
        return callbacks_store.failed(self.db, keys, limit, seconds)


@implementer(ICallbackService)
class CallbackService(service.Service):
    """Starts, tracks and ends callbacks; see the module docstring."""

    log = Logger()
    name = "callbacks"

    def __init__(self, cfg, db, authorizers: dict, recorder, sip, media_factory, clock,
                 metrics=None, directory=None, lockouts=None, recovery_store=None):
        self.cfg = cfg
        self.db = db
        self.apps = {app.name: app for app in cfg.application}
        self.authorizers = authorizers  # application name -> IAuthorizer
        self.recorder = recorder
        self.sip = sip  # has .ua once started
        self.media = media_factory
        self.clock = clock
        self.metrics = metrics
        self.directory = directory or AccountDirectory(db)
        self.lockouts = lockouts or Lockouts(db)
        self.sessions: dict[str, CallbackSession] = {}
        # Ended sessions whose final status is not stored yet (PostgreSQL may be away):
        # still reported from memory, but no longer counted as in progress.
        self.finishing: dict[str, CallbackSession] = {}
        self.status_writer = StatusWriter(db, clock, cfg.server.node)
        # Crash recovery rows (cbserver.callback.recovery), when a store is given.
        self.keeper = None if recovery_store is None else RecoveryKeeper(
            recovery_store, cfg.server.node, db.instance_id, clock, writer=self.status_writer)
        self.accepting = False
        # Set by cbserver.callback.nodestate.NodeMonitor while this node is drained: admission
        # refuses new callbacks ("draining"); those in progress go on.
        self.draining = False

    def set_applications(self, applications, authorizers: dict) -> None:
        """Take callbacks for ``applications`` from the next request on (a catalog change);
        ``authorizers`` maps each name to its ``IAuthorizer``. Callbacks in progress keep the
        application and authorizer they started with."""
        self.apps = {app.name: app for app in applications}
        self.authorizers = dict(authorizers)

    # -- life cycle -----------------------------------------------------------------------

    def startService(self) -> None:
        """Start taking callbacks, and log what in the catalog would refuse them (readiness)."""
        super().startService()
        self.accepting = True
        self.check_readiness().addErrback(self._readiness_failed)

    @defer.inlineCallbacks
    def stopService(self):
        """Stop taking callbacks; end those in progress and wait for their xDRs."""
        super().stopService()
        self.accepting = False
        ends = [s.shutdown() for s in list(self.sessions.values())]
        if ends:
            self.log.info("ending {n} callbacks in progress", n=len(ends))
            yield defer.DeferredList(ends, consumeErrors=True)
        yield defer.DeferredList([self.status_writer.settled(sid)
                                  for sid in self.status_writer.pending()], consumeErrors=True)

    def end_all(self, cause: str, reason: str) -> defer.Deferred:
        """End every callback in progress now with ``cause`` (a drain's deadline); fire when
        they have ended (their xDRs handed to the recorder)."""
        ends = [s.shutdown(cause, reason) for s in list(self.sessions.values())]
        return defer.DeferredList(ends, consumeErrors=True)

    @property
    def active(self) -> int:
        """Callbacks in progress on this node."""
        return len(self.sessions)

    # -- ICallbackService -------------------------------------------------------------------

    def new_callback_id(self) -> str:
        """A fresh random callback id (32 hex digits)."""
        return uuid.uuid4().hex

    @defer.inlineCallbacks
    def request_callback(self, request):
        """Validate against the instance, authorize, start the session; fire with its id."""
        if not self.accepting or not self.db.ready or getattr(self.sip, "ua", None) is None:
            raise CallbackRefused("not_ready", "the callback service is not ready; try again soon")
        app = self.apps.get(request.application)
        if app is None:
            raise CallbackRefused("not_found", f"no callback instance {request.application!r}")
        # Held for the whole request: the catalog may replace the applications meanwhile.
        authorizer = self.authorizers[app.name]
        account, destination, check_password = self._mode_parameters(app, request)
        # The per-account cap on callbacks in progress is admission's ConcurrencyGauge,
        # (cbserver.callback.admission), which took a slot atomically across nodes before this call.
        session_id = request.callback_id or self.new_callback_id()
        auth_req = AuthRequest(session_id=session_id, account_id=account, cli=request.phone,
                               cld=destination, password=request.password,
                               check_password=check_password, access_code=app.access_code,
                               internal_ok=request.mode == "hosted")
        try:
            auth = yield authorizer.authorize(auth_req)
        except AuthorizationError as e:
            if request.mode == "hosted" and e.reason not in _NUMBER_REASONS:
                raise self._internal_account_unusable(app, e.reason, e.detail) from None
            code, message = _REFUSALS.get(e.reason, ("forbidden", describe(e.reason)))
            self.log.info("callback refused application={app} mode={mode} reason={reason}",
                          app=app.name, mode=request.mode, reason=e.reason)
            raise CallbackRefused(code, message) from None
        if auth.max_seconds <= 0:
            yield authorizer.release(session_id)
            if request.mode == "hosted":
                raise self._internal_account_unusable(app, auth.reason or "no_balance", "")
            code, message = _REFUSALS.get(auth.reason or "no_balance", _REFUSALS["no_balance"])
            raise CallbackRefused(code, message)
        session = CallbackSession(session_id, request, app, auth, self._context(app, authorizer))
        session.account_id = None if request.mode == "hosted" else account
        self.sessions[session_id] = session
        try:
            yield self.status_writer.store(session, new=True)
        except Exception:
            del self.sessions[session_id]
            yield authorizer.release(session_id)
            raise
        if self.metrics is not None:
            self.metrics.callback_started(request.mode)
        # The web layer logs the request (with the client); this is the same event.
        self.log.debug("callback started session={sid} application={app} mode={mode}",
                      sid=session_id, app=app.name, mode=request.mode)
        # The callback is accepted: its own database work goes before new requests' for its
        # whole life, although it is started from inside their admission (priority.running).
        priority.running(session.start).addBoth(self._session_done, session)
        return session_id

    def get_status(self, callback_id: str):
        """The status dict of a callback (this node's memory first, then PostgreSQL)."""
        session = self.sessions.get(callback_id) or self.finishing.get(callback_id)
        if session is not None:
            return defer.succeed(self._decorate(session.as_dict()))
        return callbacks_store.fetch(self.db, callback_id).addCallback(
            lambda state: None if state is None else self._decorate(state))

    # -- internals ----------------------------------------------------------------------------

    @staticmethod
    def _decorate(state: dict) -> dict:
        """Add the human sentence for the cause."""
        cause = state.get("cause")
        if cause and "description" not in cause:
            cause = dict(cause, description=describe(cause["code"]))
            state = dict(state, cause=cause)
        return state

    def _internal_account_unusable(self, app, reason: str, detail: str) -> CallbackRefused:
        """Hosted legA runs on the instance's internal account; if that account cannot pay
        for it, the operator's set-up is wrong, not the caller's credentials: log an error
        naming the account, and tell the caller the service is unavailable (503)."""
        self.log.error("hosted callback refused: the internal account {account} of application "
                       "{app} cannot be used ({reason}{detail}); fix [[application]] "
                       "internal_account or the account", account=app.internal_account,
                       app=app.name, reason=reason, detail=f": {detail}" if detail else "")
        return CallbackRefused("not_ready", "Hosted callback is not available right now; "
                                            "please try again later")

    @defer.inlineCallbacks
    def check_readiness(self):
        """Log each readiness finding (an error or a warning line) and fire with the list.

        Run at start-up, so a typo in the catalog or the config shows before the first caller
        meets it as a refused callback (see ``cbserver.billing.readiness``).
        """
        now = dt.datetime.fromtimestamp(self.clock.seconds(), dt.UTC)
        cfg = dataclasses.replace(self.cfg, application=tuple(self.apps.values()))  # as served now
        findings = yield readiness.check_readiness(PostgresReadinessStore(self.db), cfg, now)
        for f in findings:
            emit = self.log.error if f.severity == readiness.ERROR else self.log.warn
            emit("readiness {code}: {subject}: {text}", code=f.code, subject=f.subject,
                 text=f.message, **f.details)
        if not findings:
            self.log.info("readiness: every instance's products and tariffs can take callbacks")
        return findings

    def _readiness_failed(self, failure):
        """The start-up check could not read the catalog: one warning line when PostgreSQL is
        away (the pool logs the outage itself), a traceback for anything else."""
        if failure.check(DatabaseUnavailable):
            self.log.warn("readiness not checked: {error} (run `cbserver check` once the database "
                          "is back)", error=describe_failure(failure))
        else:
            self.log.failure("could not check the catalog's readiness", failure=failure)

    def _mode_parameters(self, app, request):
        """(account to authorize, legB number, check password?) for the request's mode."""
        if request.mode == "extended":
            if not (request.account and request.password and request.destination):
                raise CallbackRefused("invalid_input", "Extended mode needs the account ID, "
                                                       "password, your number and the number to dial")
            return request.account, request.destination, True
        if request.mode == "simple":
            if not request.account:
                raise CallbackRefused("invalid_input", "Simple mode needs the account ID",
                                      "account")
            if not app.second_number:
                raise CallbackRefused("forbidden", "Simple mode is not configured here")
            return request.account, app.second_number, False
        if request.mode == "hosted":
            if not app.hosted_allowed_clients or not app.internal_account:
                raise CallbackRefused("hosted_not_allowed", "Hosted mode is not available")
            # legA is charged to the internal account until the IVR identifies the caller.
            return app.internal_account, request.phone, False
        raise CallbackRefused("invalid_input", f"unknown mode {request.mode!r}", "mode")

    def _context(self, app, authorizer=None) -> SessionContext:
        """The collaborators of one session."""
        limits = self.cfg.limits

        def ivr(session):
            return HostedIvr(session, self.directory, self.lockouts, limits.ivr_attempts,
                             limits.lockout)

        return SessionContext(ua=self.sip.ua, media=self.media,
                              authorizer=authorizer or self.authorizers[app.name],
                              recorder=self.recorder,
                              clock=self.clock, node=self.cfg.server.node,
                              no_answer_timeout=self.cfg.sip.no_answer_timeout,
                              ivr_factory=ivr, on_change=self._changed, metrics=self.metrics,
                              instance_id=self.db.instance_id, keeper=self.keeper,
                              cut_margin=self.cfg.billing.cut_margin,
                              on_legb_delay=getattr(self, "on_legb_delay", None))

    def _changed(self, session: CallbackSession) -> None:
        """Persist a session's new status without blocking the call (batched, newest wins)."""
        self.status_writer.store(session)

    def _session_done(self, result, session: CallbackSession):
        """Forget a finished session once its last status is stored.

        Until then it is answered from memory (``finishing``): read from PostgreSQL it
        would be a 503 while the database is away, though this node knows it ended.
        """
        self.sessions.pop(session.id, None)
        self.finishing[session.id] = session
        if self.metrics is not None and session.cause is not None:
            self.metrics.callback_ended(session.request.mode, session.cause["code"])

        def forget(_):
            self.finishing.pop(session.id, None)
            return result

        return self.status_writer.settled(session.id).addCallback(forget)
