"""The hosted IVR: identify the caller, tell the balance, take the number to call.

legA of a Hosted callback is placed under the instance's internal account. Once it answers,
``HostedIvr.run`` identifies the caller: the called-back number, run through the instance's
``account_id_translation_rule``, may name an active account (identification by ANI);
otherwise the caller keys the account number (PIN; the same rule maps the keyed digits to
the account ID, so ``cb``-prefixed accounts can be keyed as digits) and, where the account
has one, its service password, with ``limits.ivr_attempts`` tries before the call ends and the number and
the account are locked out for ``limits.lockout`` seconds. Failures are also counted per account
and per number across calls, in PostgreSQL (``lockouts.failed``): hanging up after each wrong
PIN and calling again, or spreading guesses over calls and nodes, meets the same lockout. Then
the balance is announced, the caller keys the destination followed by ``#`` (``*`` starts the
number again), hears the minutes available, and ``run`` fires with ``(authorization, destination)``.
"""

from __future__ import annotations

import datetime as dt

from twisted.internet import defer

from cbserver.billing.authorize import AuthorizationError, AuthRequest
from cbserver.logs import Logger
from cbserver.media.collector import CollectOutcome
from cbserver.media.speech import SpeechError, balance_announcement, minutes_announcement
from cbserver.translation import TranslationError, compile_rule

log = Logger()

# Refusals that mean "this is not a valid account/PIN": the caller may try again.
_IDENTITY_REASONS = ("unknown_account", "bad_password", "inactive", "expired")


class IvrFailed(Exception):
    """The IVR ended the call; ``code`` is the callback's cause code."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


class HostedIvr:
    """One run of the hosted dialogue on a session's legA."""

    max_account_digits = 20
    max_destination_digits = 24

    def __init__(self, session, directory, lockouts, attempts: int, lockout_seconds: float):
        self.session = session
        self.directory = directory  # has_password(account_id) -> Deferred[bool | None]
        self.lockouts = lockouts  # locked(keys) / lock(keys, seconds) / failed(...) -> Deferred
        self.attempts = attempts
        self.lockout_seconds = lockout_seconds
        self._current: defer.Deferred | None = None
        self._cancelled = False

    # -- plumbing -------------------------------------------------------------------------

    @property
    def media(self):
        """legA's media."""
        return self.session.a.media

    def _wait(self, d: defer.Deferred) -> defer.Deferred:
        """Track the media/database operation in progress so ``cancel`` can stop it."""
        if self._cancelled:
            # Nobody waits for ``d`` any more: its cancellation must not be an unhandled error.
            d.addErrback(self._dropped)
            d.cancel()
            raise defer.CancelledError()
        self._current = d
        return d

    def _dropped(self, f) -> None:
        """The end of an operation started after the dialogue was cancelled."""
        if not f.check(defer.CancelledError):
            log.failure("IVR operation after cancel callback_id={callback_id}", f,
                        callback_id=self.session.id)

    def cancel(self) -> None:
        """The callback is ending: stop the dialogue."""
        self._cancelled = True
        if self._current is not None and not self._current.called:
            self._current.cancel()

    def _authorize(self, account_id: str, password: str | None, destination: str):
        """Authorize ``account_id`` for legA so far and ``destination`` for legB."""
        s = self.session
        elapsed = int(s.clock.seconds() - s.a.answered_at)
        req = AuthRequest(session_id=s.id, account_id=account_id, cli=s.request.phone,
                          cld=destination, password=password, check_password=password is not None,
                          access_code=s.app.access_code, leg_a_elapsed=elapsed,
                          leg_a_connect=dt.datetime.fromtimestamp(s.a.answered_at, dt.UTC))
        return self._wait(s.ctx.authorizer.authorize(req))

    # -- the dialogue ---------------------------------------------------------------------

    @defer.inlineCallbacks
    def run(self):
        """Identify, announce, collect the destination; fire with (authorization, number)."""
        s = self.session
        phone = s.request.phone
        if (yield self._wait(self.lockouts.locked([f"phone:{phone}"]))):
            yield self._wait(self.media.play(["goodbye"]))
            raise IvrFailed("ivr_locked_out", f"number {phone} is locked out")
        yield self._wait(self.media.play(["welcome"]))
        auth = yield self._identify_by_ani()
        if auth is None:
            auth = yield self._identify_by_pin()
        s.caller_identified(auth)
        account = auth.account.id
        if auth.budget is not None:
            try:
                names = balance_announcement(max(auth.budget, 0), auth.currency)
            except SpeechError as e:
                log.warn("cannot say the balance callback_id={callback_id}: {err}", callback_id=s.id, err=e)
            else:
                yield self._wait(self.media.play(names))
        destination, auth = yield self._destination(account)
        minutes = auth.max_seconds // 60
        yield self._wait(self.media.play(minutes_announcement(minutes)))
        return auth, destination

    def _account_id(self, digits: str) -> str | None:
        """Digits (the ANI, or a keyed account number) through the translation rule."""
        rule = self.session.app.account_id_translation_rule
        try:
            return compile_rule(rule).apply(digits) if rule else digits
        except TranslationError as e:
            log.warn("translation rule failed callback_id={callback_id}: {err}",
                     callback_id=self.session.id, err=e)
            return None

    @defer.inlineCallbacks
    def _identify_by_ani(self):
        """The translated calling number names an active account: no questions asked."""
        s = self.session
        candidate = self._account_id(s.request.phone)
        if candidate is None or candidate == s.app.internal_account:
            return None
        try:
            auth = yield self._authorize(candidate, None, s.request.phone)
        except AuthorizationError as e:
            log.info("no ANI identification callback_id={callback_id}: {reason}", callback_id=s.id,
                     reason=e.reason)
            return None
        log.info("caller identified by ANI callback_id={callback_id} account={account}", callback_id=s.id,
                 account=candidate)
        return auth

    @defer.inlineCallbacks
    def _identify_by_pin(self):
        """Ask for the account number and, where it has one, the password."""
        s = self.session
        for attempt in range(1, self.attempts + 1):
            got = yield self._wait(self.media.collect(["enter_account_number"],
                                                      self.max_account_digits))
            account = self._account_id(got.digits) if got.digits else None
            if not account:
                if got.outcome is CollectOutcome.FIRST_DIGIT_TIMEOUT and attempt == self.attempts:
                    yield self._wait(self.media.play(["goodbye"]))
                    raise IvrFailed("ivr_no_input", "no account number entered")
                yield self._wait(self.media.play(["invalid", "try_again"]))
                continue
            if (yield self._wait(self.lockouts.locked([f"account:{account}"]))):
                yield self._wait(self.media.play(["goodbye"]))
                raise IvrFailed("ivr_locked_out", f"account {account} is locked out")
            password = None
            has_password = yield self._wait(self.directory.has_password(account))
            if has_password:
                got = yield self._wait(self.media.collect(["enter_pin"], 32))
                password = got.digits
            try:
                auth = yield self._authorize(account, password if has_password else None,
                                             s.request.phone)
            except AuthorizationError as e:
                if e.reason not in _IDENTITY_REASONS:
                    raise
                log.info("IVR identification failed callback_id={callback_id} attempt={n}: {reason}",
                         callback_id=s.id, n=attempt, reason=e.reason)
                locked_now = yield self._wait(self.lockouts.failed(
                    [f"phone:{s.request.phone}", f"account:{account}"], self.attempts,
                    self.lockout_seconds))
                if locked_now and attempt < self.attempts:
                    # Earlier calls used up the account's or the number's attempts.
                    yield self._wait(self.media.play(["invalid", "goodbye"]))
                    raise IvrFailed("ivr_locked_out", f"{', '.join(locked_now)} locked out after "
                                                      f"{self.attempts} failures across calls") from None
                if attempt < self.attempts:
                    yield self._wait(self.media.play(["invalid", "try_again"]))
                    continue
                yield self._wait(self.lockouts.lock([f"phone:{s.request.phone}",
                                                     f"account:{account}"], self.lockout_seconds))
                yield self._wait(self.media.play(["invalid", "goodbye"]))
                raise IvrFailed("ivr_failed",
                                f"{self.attempts} failed identification attempts") from None
            return auth
        yield self._wait(self.lockouts.lock([f"phone:{s.request.phone}"], self.lockout_seconds))
        yield self._wait(self.media.play(["goodbye"]))
        raise IvrFailed("ivr_failed", f"{self.attempts} failed identification attempts")

    @defer.inlineCallbacks
    def _destination(self, account: str):
        """Collect the number to call (``*`` restarts it) and authorize legB for it."""
        for _attempt in range(self.attempts):
            got = yield self._wait(self.media.collect(["enter_destination"],
                                                      self.max_destination_digits,
                                                      terminator="#"))
            digits = got.digits
            if "*" in digits:
                # The caller pressed * to start the number again: keep what follows the last *.
                digits = digits.rsplit("*", 1)[1]
                if not digits:
                    continue
            if not digits or not digits.isdigit():
                yield self._wait(self.media.play(["invalid", "try_again"]))
                continue
            try:
                auth = yield self._authorize(account, None, digits)
            except AuthorizationError as e:
                if e.reason in ("not_rated", "invalid_number", "destination_not_allowed"):
                    yield self._wait(self.media.play(["invalid", "try_again"]))
                    continue
                yield self._wait(self.media.play(["call_failed", "goodbye"]))
                raise IvrFailed(f"legb_{e.reason}", str(e)) from None
            if auth.max_seconds <= 0:
                yield self._wait(self.media.play(["not_enough_balance", "goodbye"]))
                raise IvrFailed("no_balance", "not enough balance for the destination")
            return digits, auth
        yield self._wait(self.media.play(["goodbye"]))
        raise IvrFailed("ivr_no_input", "no valid destination entered")
