"""Prepaid authorization of a callback: may this account call, and for how long.

``Authorizer.authorize(request)`` runs before legA is placed and again before legB. It
checks the account (exists, active, inside its activation/expiration dates and availability
periods, password where the mode requires one, product with Voice calls), selects the
tariff from the product's rating list (this node and the instance's access code, else the
entry with an empty access code, else refused), prices both numbers, and computes the
maximum duration ``t``: the largest whole number of seconds with
``A(elapsed + t) + B(t) <= budget``. The budget and the reservation that holds it are decided
under the balance's row lock (``IAuthorizationStore.reserve``).

Refusals raise ``AuthorizationError`` with a machine ``reason``; an authorized call whose
budget buys no second returns ``max_seconds == 0`` with ``reason`` ``no_balance`` (or
``concurrent_call`` under overdraft protection) and holds nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field, replace
from decimal import Decimal

from twisted.internet import defer, threads
from zope.interface import Interface, implementer

from cbserver.billing import passwords
from cbserver.billing.destinations import DestinationPolicy, DestinationRefused
from cbserver.billing.domain import (
    RESERVATION_EXPIRY,
    AccountInfo,
    Balance,
    LoadedTariff,
    RatingEntry,
    ReservationDecision,
    TariffNotFound,
)
from cbserver.billing.model import (
    WILDCARD,
    InvalidCallError,
    InvalidNumberError,
    NoRateError,
    Rate,
    TariffRates,
)
from cbserver.billing.numbers import normalise_number
from cbserver.billing.rating import LegPricer, max_duration, price_leg
from cbserver.logs import Logger

DEFAULT_ACCESS_CODE = "WEBCALLBACK"
#: Accounts whose last read an ``Authorizer`` keeps for their next legA (``_guess``).
READ_MEMORY = 4096
CALLBACK_FAIL = "CALLBACK_FAIL"

REASONS = ("unknown_account", "inactive", "expired", "bad_password", "no_voice_service",
           "not_rated", "invalid_number", "no_tariff", "no_balance", "concurrent_call",
           "destination_not_allowed")


_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_FREE_RATE = Rate(WILDCARD, 1, 1, Decimal(0), Decimal(0), _EPOCH)
#: A leg that costs nothing: lets ``max_duration`` bound legB alone.
_FREE = LegPricer(TariffRates("XXX", (_FREE_RATE,)), _FREE_RATE, _EPOCH, True)


class AuthorizationError(Exception):
    """The call is refused; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True)
class AuthRequest:
    """What the callback session asks: who calls whom, in which mode, how far it has got."""

    session_id: str
    account_id: str
    cli: str  # legA: the number called back
    cld: str  # legB: the destination
    password: str | None = None
    check_password: bool = False
    access_code: str = DEFAULT_ACCESS_CODE
    leg_a_elapsed: int = 0
    leg_a_connect: dt.datetime | None = None  # when legA answered (None: not yet placed)
    # Only the Hosted callback of the instance naming the internal account sets this: every
    # other request naming an internal account is refused as if the account did not exist.
    internal_ok: bool = False
    # The ``AuthBasis`` of this session's previous authorization (legB's re-authorization):
    # what it read, to decide on first and store in one round trip if nothing moved.
    basis: object = field(default=None, compare=False)


@dataclass(frozen=True)
class AuthBasis:
    """What an authorization was decided on: the account as read (with its fingerprint),
    its rating entries and the balance the stored decision was made for."""

    account: AccountInfo
    entries: list
    balance: Balance


@dataclass(frozen=True)
class Authorization:
    """The answer: the figure, the account, the tariffs and the bound leg pricers."""

    request: AuthRequest
    account: AccountInfo
    tariff: LoadedTariff
    entry: RatingEntry
    leg_a: LegPricer
    leg_b: LegPricer
    max_seconds: int
    reason: str | None
    budget: Decimal | None  # free budget as read (None: no limit, postpaid without a credit limit)
    reserved_a: Decimal = Decimal(0)
    reserved_b: Decimal = Decimal(0)
    fail_tariff: LoadedTariff | None = None
    fail_leg_a: LegPricer | None = field(default=None)
    basis: AuthBasis | None = field(default=None, compare=False, repr=False)

    @property
    def currency(self) -> str:
        """The currency of the charges (the tariff's)."""
        return self.tariff.rates.currency


class IAuthorizer(Interface):
    """Decides whether a callback may proceed and for how long."""

    def authorize(request):
        """Fire with an ``Authorization`` or fail with ``AuthorizationError``."""

    def release(session_id):
        """Drop the reservations of a session that ends without xDRs."""


def choose_entry(entries: list[RatingEntry], access_code: str) -> RatingEntry | None:
    """The entry for ``access_code``, else the one with an empty access code, else None."""
    by_code = {e.access_code: e for e in entries}
    return by_code.get(access_code) or by_code.get("")


def callback_fail_entry(entries: list[RatingEntry]) -> RatingEntry | None:
    """The ``CALLBACK_FAIL`` entry (legA's tariff when legB fails), or None."""
    return next((e for e in entries if e.access_code == CALLBACK_FAIL), None)


def account_refusal(account: AccountInfo, now: dt.datetime) -> AuthorizationError | None:
    """Why the account may not call at ``now`` (status, dates, availability), or None."""
    if account.status != "active":
        return AuthorizationError("inactive", f"account {account.id} is {account.status}")
    if account.activation_date is not None and now < account.activation_date:
        return AuthorizationError("inactive", f"account {account.id} is not active before "
                                              f"{account.activation_date.isoformat()}")
    if account.expiration_date is not None and now >= account.expiration_date:
        return AuthorizationError("expired", f"account {account.id} expired "
                                             f"{account.expiration_date.isoformat()}")
    for days, since, what in ((account.avail_after_first_use_days, account.first_usage, "first"),
                              (account.avail_after_last_use_days, account.last_usage, "last")):
        if days and since is not None and now >= since + dt.timedelta(days=days):
            return AuthorizationError("expired", f"account {account.id}: {days} days after "
                                                 f"{what} usage have passed")
    if not account.has_voice:
        return AuthorizationError("no_voice_service", f"product of {account.id} lacks Voice calls")
    return None


def usable_seconds(account: AccountInfo, now: dt.datetime) -> int | None:
    """Whole seconds from ``now`` until the account stops being usable; None: no such end.

    Its expiration date, and the end of its availability after first usage (a first call
    starts that period now). A call is cut there rather than running past it. Availability
    after last usage sets no end while a call is up: the call itself is a use.
    """
    ends = []
    if account.expiration_date is not None:
        ends.append(account.expiration_date)
    if account.avail_after_first_use_days:
        ends.append((account.first_usage or now)
                    + dt.timedelta(days=account.avail_after_first_use_days))
    if not ends:
        return None
    return max(0, int((min(ends) - now).total_seconds()))


def spendable(account: AccountInfo, balance: Balance) -> Decimal | None:
    """What the locked balance allows to spend (before reservations); None means no limit.

    Debit account: its balance. Credit account: credit limit minus balance (owed); no credit
    limit means no limit. Subordinate account: the customer's credit limit minus its balance
    (owed); a prepaid customer without a credit limit may spend only a negative balance
    (prepaid money), a postpaid one without a limit has no limit.
    """
    if not account.subordinate:
        if account.account_type == "debit":
            return balance.balance
        return None if balance.credit_limit is None else balance.credit_limit - balance.balance
    if balance.credit_limit is None:
        if account.customer_balance_control == "prepaid":
            return -balance.balance
        return None
    return balance.credit_limit - balance.balance


@implementer(IAuthorizer)
class Authorizer:
    """The ``IAuthorizer`` over an ``IAuthorizationStore`` and an ``ITariffSource``."""

    log = Logger()

    def __init__(self, store, tariffs, clock, *, node: str, instance_id: str | None = None,
                 max_call_seconds: int = 4 * 3600, verify_password=None, special_charge: bool = False,
                 reservation_expiry: int = RESERVATION_EXPIRY, run_in_thread=None,
                 legb_ring_seconds: int = 60, hold_margin: int = 600, internal_account: str = "",
                 destinations=None):
        self.store = store  # IAuthorizationStore
        self.tariffs = tariffs
        self.clock = clock
        self.node = node
        self.instance_id = instance_id or store.instance_id
        self.max_call_seconds = max_call_seconds
        self.verify_password = verify_password or passwords.verify_password
        self.special_charge = special_charge
        self.reservation_expiry = reservation_expiry
        self.legb_ring_seconds = legb_ring_seconds
        self.hold_margin = hold_margin
        self.internal_account = internal_account  # the one this instance's Hosted IVR may charge
        self.destinations = destinations or DestinationPolicy()  # no lists: E.164's length only
        # (account id, access codes) -> the last fresh read of it (an AuthBasis), oldest first.
        self._reads: dict[tuple, AuthBasis] = {}
        passwords.dummy_hash()  # made now (once per process), so no refusal pays for making it
        self.run_in_thread = run_in_thread or (
            lambda f, *a: threads.deferToThreadPool(clock, clock.getThreadPool(), f, *a))

    def now(self) -> dt.datetime:
        """The clock's time as an aware UTC datetime."""
        return dt.datetime.fromtimestamp(self.clock.seconds(), dt.UTC)

    def _lifetime(self, seconds: int) -> int:
        """Seconds a hold may live: the call's ``seconds``, legB's ring time and ``hold_margin``."""
        return seconds + self.legb_ring_seconds + self.hold_margin

    def release(self, session_id: str):
        """Drop the reservations of ``session_id``."""
        return self.store.release(session_id)

    def _usable(self, account: AccountInfo | None, request: AuthRequest) -> AccountInfo | None:
        """The account, or None where it must look unknown: an internal account may only be
        charged by the Hosted callback of the instance that names it (issue 14, item 3)."""
        if account is None or not account.internal:
            return account
        if request.internal_ok and account.id == self.internal_account:
            return account
        return None

    @defer.inlineCallbacks
    def _unknown(self, request: AuthRequest):
        """Refuse an unknown account only after the same scrypt work a known one costs, so
        that the answer's timing does not tell which accounts exist (issue 14, item 9)."""
        if request.check_password:
            yield self.run_in_thread(self.verify_password, request.password or "",
                                     passwords.dummy_hash())
        raise AuthorizationError("unknown_account", f"no account {request.account_id!r}")

    @defer.inlineCallbacks
    def _check_password(self, request: AuthRequest, account: AccountInfo):
        """Refuse a wrong password; scrypt runs in a thread to keep the reactor free."""
        if not request.check_password:
            return
        given = request.password or ""
        if account.password_hash is None:
            if given:
                # As slow as a wrong password: the timing must not tell this case apart.
                yield self.run_in_thread(self.verify_password, given, passwords.dummy_hash())
                raise AuthorizationError("bad_password", f"account {account.id} has no password")
            return
        ok = yield self.run_in_thread(self.verify_password, given, account.password_hash)
        if not ok:
            raise AuthorizationError("bad_password", f"wrong password for account {account.id}")

    @defer.inlineCallbacks
    def _tariff(self, tariff_id: int):
        """The tariff of a rating entry (``no_tariff`` when it cannot be loaded)."""
        try:
            tariff = yield self.tariffs.get(tariff_id)
        except (TariffNotFound, ValueError) as e:
            raise AuthorizationError("no_tariff", str(e)) from None
        return tariff

    @staticmethod
    def _price(tariff: LoadedTariff, number: str, at: dt.datetime) -> LegPricer:
        """Bind ``number`` to its rate; ``not_rated`` / ``invalid_number`` otherwise."""
        try:
            return price_leg(tariff.rates, number, at)
        except InvalidNumberError as e:
            raise AuthorizationError("invalid_number", str(e)) from None
        except NoRateError as e:
            raise AuthorizationError("not_rated", str(e)) from None

    @defer.inlineCallbacks
    def authorize(self, request: AuthRequest):
        """Check, select, price and reserve; fire with an ``Authorization``."""
        now = self.now()
        elapsed = request.leg_a_elapsed
        if isinstance(elapsed, bool) or not isinstance(elapsed, int) or elapsed < 0:
            raise InvalidCallError(f"leg_a_elapsed: must be whole seconds >= 0, got {elapsed!r}")
        for number in (request.cli, request.cld):
            try:
                normalise_number(number)
            except InvalidNumberError as e:
                raise AuthorizationError("invalid_number", str(e)) from None
        # Both numbers are dialled: legA (called back) and legB; checked before either is.
        for number in (request.cli, request.cld):
            try:
                self.destinations.check(number)
            except DestinationRefused as e:
                raise AuthorizationError(e.reason, str(e)) from None
        codes = [request.access_code, "", CALLBACK_FAIL]
        basis = request.basis
        if (isinstance(basis, AuthBasis) and not request.check_password
                and basis.account.id == request.account_id
                and getattr(self.store, "reserve_again", None) is not None):
            auth = yield self._again(request, now, codes, basis)
            if auth is not None:
                return auth
        done = None
        guess = self._guess(request, codes)
        if guess is not None:
            # legA in one round trip: decided on this node's last read of the account, stored
            # by PostgreSQL only if that read still holds; else its fresh read decides below.
            account, entries, balance, done = yield self._at_once(request, now, codes, guess)
        else:
            account, entries, balance = yield self.store.fetch_account_and_entries(
                request.account_id, self.node, codes, request.session_id,
                self.reservation_expiry)
        self._remember(request, codes, account, entries, balance)
        if done is not None:
            return done
        account = self._usable(account, request)
        if account is None:
            yield self._unknown(request)
        # The password first: without it, an account's status is nobody's business, and a
        # refusal for status would answer faster than a wrong password.
        yield self._check_password(request, account)
        decide = yield self._plan(request, now, account, entries)
        seen = []
        auth = yield self.store.reserve(session_id=request.session_id, account=account,
                                        instance_id=self.instance_id, decide=_seeing(decide, seen),
                                        expiry=self.reservation_expiry, balance=balance)
        self.log.debug("authorized session_id={session_id} account={account} max_seconds={seconds} "
                      "reason={reason}", session_id=request.session_id, account=account.id,
                      seconds=auth.max_seconds, reason=auth.reason)
        return replace(auth, basis=AuthBasis(account, entries, seen[-1] if seen else balance))

    def _guess(self, request: AuthRequest, codes) -> AuthBasis | None:
        """This node's last read of the account for these codes, if legA may be decided on it
        in one round trip: no password to check (the fresh read checks it first, as before),
        not a re-authorization (its own basis was just tried: ``_again``), a store that can
        (``fetch_and_reserve``), a fingerprint to compare."""
        if (request.check_password or request.basis is not None
                or getattr(self.store, "fetch_and_reserve", None) is None):
            return None
        basis = self._reads.get((request.account_id, tuple(codes)))
        if basis is None or basis.account.fingerprint is None:
            return None
        return basis

    def _remember(self, request: AuthRequest, codes, account, entries, balance) -> None:
        """Keep the account's fresh read for its next legA (bounded: the oldest goes)."""
        key = (request.account_id, tuple(codes))
        self._reads.pop(key, None)
        if account is None or account.fingerprint is None:
            return
        if len(self._reads) >= READ_MEMORY:
            del self._reads[next(iter(self._reads))]
        self._reads[key] = AuthBasis(account, entries, balance)

    @defer.inlineCallbacks
    def _at_once(self, request: AuthRequest, now: dt.datetime, codes, guess: AuthBasis):
        """legA on ``guess``: fire with ``(account, entries, balance, Authorization or None)``,
        the first three the fresh read (``IAuthorizationStore.fetch_and_reserve``), the last
        the authorization when the decision made on ``guess`` was stored, None when nothing
        was (the caller decides on the fresh read, as after ``fetch_account_and_entries``)."""
        decide = None
        account = self._usable(guess.account, request)
        if account is not None:
            try:
                decide = yield self._plan(request, now, account, guess.entries)
            except AuthorizationError:
                decide = None  # the fresh read decides, and says why
        seen = []
        if decide is None:
            # Nothing to store: the same round trip reads only (the fingerprint is not sent).
            guess = AuthBasis(dataclasses.replace(guess.account, fingerprint=None),
                              guess.entries, guess.balance)
            decide = _nothing
        fresh, entries, balance, auth = yield self.store.fetch_and_reserve(
            session_id=request.session_id, account_id=request.account_id, node=self.node,
            codes=codes, instance_id=self.instance_id, guess=guess.account,
            decide=_seeing(decide, seen), balance=guess.balance,
            expiry=self.reservation_expiry)
        if auth is not None:
            self.log.debug("authorized at once session_id={session_id} account={account} "
                           "max_seconds={seconds} reason={reason}",
                           session_id=request.session_id, account=account.id,
                           seconds=auth.max_seconds, reason=auth.reason)
            auth = replace(auth, basis=AuthBasis(account, guess.entries, seen[-1]))
        return fresh, entries, balance, auth

    @defer.inlineCallbacks
    def _again(self, request: AuthRequest, now: dt.datetime, codes, basis: AuthBasis):
        """Re-authorize on what the session's previous authorization read, in one round trip
        (``IAuthorizationStore.reserve_again``); fire with the ``Authorization``, or None when
        the store stored nothing (the account or its balance moved) or the old figures would
        refuse: the caller then reads everything afresh and decides as before."""
        account = self._usable(basis.account, request)
        if account is None:
            return None
        try:
            decide = yield self._plan(request, now, account, basis.entries)
        except AuthorizationError:
            return None  # the fresh read decides, and says why
        seen = []
        auth = yield self.store.reserve_again(
            session_id=request.session_id, account=account, node=self.node, codes=codes,
            instance_id=self.instance_id, decide=_seeing(decide, seen),
            expiry=self.reservation_expiry, balance=basis.balance)
        if auth is None:
            return None
        self.log.debug("authorized again session_id={session_id} account={account} "
                       "max_seconds={seconds} reason={reason}", session_id=request.session_id,
                       account=account.id, seconds=auth.max_seconds, reason=auth.reason)
        return replace(auth, basis=AuthBasis(account, basis.entries, seen[-1]))

    @defer.inlineCallbacks
    def _plan(self, request: AuthRequest, now: dt.datetime, account: AccountInfo, entries):
        """Check the account and its entry, load and price; fire with ``decide(Balance)`` ->
        ``(Authorization, ReservationDecision or None)``, or fail with the refusal."""
        elapsed = request.leg_a_elapsed
        refusal = account_refusal(account, now)
        if refusal is not None:
            raise refusal
        entry = choose_entry(entries, request.access_code)
        if entry is None:
            raise AuthorizationError("no_tariff", f"no rating entry for voice at node {self.node} "
                                                  f"and access code {request.access_code!r}")
        tariff = yield self._tariff(entry.tariff_id)
        a_at = request.leg_a_connect or now
        leg_a = self._price(tariff, request.cli, a_at)
        leg_b = self._price(tariff, request.cld, now)
        fail_tariff = fail_leg_a = None
        fail_entry = callback_fail_entry(entries)
        if self.special_charge and fail_entry is not None:
            try:
                fail_tariff = yield self._tariff(fail_entry.tariff_id)
                fail_leg_a = self._price(fail_tariff, request.cli, a_at)
            except AuthorizationError as e:
                # The special tariff cannot price legA's number: that must not refuse a
                # callback the callback tariff allows. legA is then charged by the callback
                # tariff if legB fails; the operator is told why, so they can add the rate.
                self.log.warn("CALLBACK_FAIL tariff not applied account={account} number={number}: "
                              "{reason} ({detail})", account=account.id, number=request.cli,
                              reason=e.reason, detail=e.detail)
                fail_tariff = fail_leg_a = None
        ring = self.legb_ring_seconds
        fail_hold = fail_leg_a.amount(elapsed + ring) if fail_leg_a is not None else Decimal(0)
        # The longest call: max_call_seconds, and no further than the account stays usable.
        usable = usable_seconds(account, now)
        if usable == 0:
            raise AuthorizationError("expired", f"account {account.id} stops being usable now")
        limit = self.max_call_seconds if usable is None else min(self.max_call_seconds, usable)

        def decide(balance: Balance):
            budget = spendable(account, balance)
            reason = None
            if entry.overdraft_protection and balance.open_calls:
                seconds, reason = 0, "concurrent_call"
            elif budget is None:
                seconds = limit
            else:
                if not entry.overdraft_protection:
                    budget -= balance.reserved_by_others
                seconds = max_duration(budget, leg_a, elapsed, leg_b, limit)
                if fail_leg_a is not None and seconds:
                    # legA may instead be charged by CALLBACK_FAIL for (elapsed + ring): hold that too
                    seconds = min(seconds, max_duration(budget - fail_hold, leg_b, 0, _FREE,
                                                        limit))
                if seconds == 0:
                    reason = "no_balance"
            if seconds == 0:
                if elapsed == 0:
                    return Authorization(request, account, tariff, entry, leg_a, leg_b, 0, reason, budget,
                                         fail_tariff=fail_tariff, fail_leg_a=fail_leg_a), None
                # legA is connected and will be charged: keep holding what it has cost so far.
                held = max(leg_a.amount(elapsed), fail_hold)
                return (Authorization(request, account, tariff, entry, leg_a, leg_b, 0, reason, budget,
                                      held, Decimal(0), fail_tariff, fail_leg_a),
                        ReservationDecision(held, Decimal(0), tariff.rates.currency, self._lifetime(0)))
            amount_a = max(leg_a.amount(elapsed + seconds), fail_hold)
            amount_b = leg_b.amount(seconds)
            auth = Authorization(request, account, tariff, entry, leg_a, leg_b, seconds, reason, budget,
                                 amount_a, amount_b, fail_tariff, fail_leg_a)
            # Capped by the time limit, not by money: any free budget that pays for what is
            # held gives this same decision (max_duration is monotone in the budget), so it
            # stands even if other calls moved the balance since it was read. Overdraft
            # protection depends on the number of open calls, so it never relaxes.
            min_free = (amount_a + amount_b if seconds == limit
                        and not entry.overdraft_protection else None)
            return auth, ReservationDecision(amount_a, amount_b, tariff.rates.currency,
                                             self._lifetime(seconds), min_free)

        return decide


def _nothing(_balance: Balance):
    """A decision that stores nothing (``fetch_and_reserve`` only reads)."""
    return None, None


def _seeing(decide, seen: list):
    """``decide``, noting each ``Balance`` it is called with in ``seen``."""

    def noted(balance: Balance):
        seen.append(balance)
        return decide(balance)

    return noted
