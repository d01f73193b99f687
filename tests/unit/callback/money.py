"""A callback session on a ``task.Clock`` under the real ``Authorizer`` over in-memory stores.

For the money tests: an account of any type with a given balance, a tariff built from the
test's rates, a store that answers ``reserve`` after a delay on the clock (as PostgreSQL
would), and a driver that runs the clock with every delayed call running late by the
test's lateness. ``allowed`` says whether the charges keep the balance within what the
account allows, worked out from the account's rules, not from the authorizer's code.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from decimal import Decimal

from twisted.internet import defer, task
from twisted.internet.task import Clock

from cbserver.billing.authorize import Authorizer, AuthRequest
from cbserver.billing.domain import Balance, LoadedTariff, RatingEntry
from cbserver.billing.model import Rate, TariffRates
from cbserver.callback.session import CallbackSession, SessionContext
from tests.unit.callback.fakes import FakeMedia, FakeRecorder, FakeUA, Request, account, app

EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
LEG_A_NUMBER = "5511987654321"  # priced by the "55" rate
LEG_B_NUMBER = "18185550123"  # priced by the "1" rate


@dataclass(frozen=True)
class Tier:
    """First/next interval (seconds) and prices per minute of one test rate."""

    f: int
    n: int
    p1: Decimal
    p2: Decimal

    def rate(self, prefix: str, rate_id: int) -> Rate:
        return Rate(prefix, self.f, self.n, self.p1, self.p2, EPOCH, rate_id=rate_id)


@dataclass(frozen=True)
class Account:
    """The balance a call draws on: ``kind`` debit, credit or subordinate (of a prepaid or
    postpaid customer)."""

    kind: str  # "debit", "credit", "sub-prepaid", "sub-postpaid"
    balance: Decimal  # debit: money left; credit/customer: amount owed (prepaid: negative)
    credit_limit: Decimal | None = None
    overdraft_protection: bool = False

    def info(self):
        base = account("cb1818000001")
        if self.kind == "debit":
            return replace(base, account_type="debit", balance=self.balance)
        if self.kind == "credit":
            return replace(base, account_type="credit", balance=self.balance,
                           credit_limit=self.credit_limit)
        control = "prepaid" if self.kind == "sub-prepaid" else "postpaid"
        return replace(base, account_type="credit", balance_control="subordinate",
                       customer_balance_control=control, customer_balance=self.balance,
                       customer_credit_limit=self.credit_limit)

    def allowed(self, charged: Decimal) -> Decimal:
        """How far ``charged`` takes the balance beyond what the account allows (0: within)."""
        if self.kind == "debit":
            return max(Decimal(0), charged - self.balance)  # money left stays >= 0
        owed = self.balance + charged
        if self.credit_limit is not None:
            return max(Decimal(0), owed - self.credit_limit)  # owed stays <= the limit
        if self.kind == "sub-prepaid":
            return max(Decimal(0), owed)  # only prepaid money: the balance stays <= 0
        return Decimal(0)  # no limit


class MemoryStore:
    """``IAuthorizationStore`` for one account: reserves after ``delay`` seconds of clock."""

    instance_id = "i-test"

    def __init__(self, clock, acct: Account, fail_entry: bool, delay: float = 0.0):
        self.clock, self.acct, self.delay = clock, acct, delay
        self.entries = [RatingEntry("WEBCALLBACK", 1, acct.overdraft_protection)]
        if fail_entry:
            self.entries.append(RatingEntry("CALLBACK_FAIL", 2, acct.overdraft_protection))
        self.held: dict[str, tuple[Decimal, Decimal]] = {}
        self.again = 0  # legB holds stored by reserve_again (one round trip)

    def balance(self) -> Balance:
        a = self.acct
        return Balance(a.balance, a.credit_limit, Decimal(0), 0)

    def fetch_account(self, account_id):
        return defer.succeed(self.acct.info())

    def fetch_account_and_entries(self, account_id, node, codes, session_id, expiry):
        return defer.succeed((self.acct.info(), list(self.entries), self.balance()))

    def reserve(self, *, session_id, account, instance_id, decide, expiry, balance=None):
        def run():
            auth, decision = decide(self.balance())
            if decision is not None:
                self.held[session_id] = (decision.amount_a, decision.amount_b)
            return auth
        if not self.delay:
            return defer.maybeDeferred(run)
        return task.deferLater(self.clock, self.delay, run)

    def reserve_again(self, *, session_id, account, node, codes, instance_id, decide, expiry,
                      balance):
        # As cb_reserve_again: the decision made on the earlier figures stands only while
        # they are still the balance's (then it is the one a fresh read would make).
        def run():
            if balance != self.balance() or account != self.acct.info():
                return None
            auth, decision = decide(balance)
            self.held.pop(session_id, None)
            if decision is not None:
                self.held[session_id] = (decision.amount_a, decision.amount_b)
            self.again += 1
            return auth
        if not self.delay:
            return defer.maybeDeferred(run)
        return task.deferLater(self.clock, self.delay, run)

    def release(self, session_id):
        self.held.pop(session_id, None)
        return defer.succeed(None)


class Tariffs:
    """``get(tariff_id)``: the callback tariff (1) and the ``CALLBACK_FAIL`` tariff (2)."""

    def __init__(self, a: Tier, b: Tier, fail: Tier):
        self.by_id = {
            1: LoadedTariff(1, TariffRates(currency="USD", name="Callback",
                                           rates=(a.rate("55", 11), b.rate("1", 12)))),
            2: LoadedTariff(2, TariffRates(currency="USD", name="Callback fail",
                                           rates=(fail.rate("55", 21), fail.rate("1", 22)))),
        }

    def get(self, tariff_id):
        return defer.succeed(self.by_id[tariff_id])


class MoneyCall:
    """One Extended callback of ``acct`` under the real ``Authorizer``, driven on a Clock."""

    def __init__(self, acct: Account, a: Tier, b: Tier, fail: Tier | None = None,
                 auth_delay: float = 0.0, start: float = 1_780_000_000.0,
                 max_call_seconds: int = 4 * 3600):
        self.clock = Clock()
        self.clock.advance(start)
        self.acct = acct
        self.tiers = {"A": a, "B": b, "CALLBACK_FAIL": fail}
        self.store = MemoryStore(self.clock, acct, fail is not None, auth_delay)
        self.authorizer = Authorizer(self.store, Tariffs(a, b, fail or a), self.clock, node="node1",
                                     special_charge=fail is not None, legb_ring_seconds=60,
                                     max_call_seconds=max_call_seconds)
        self.ua, self.media, self.recorder = FakeUA(), FakeMedia(self.clock), FakeRecorder()
        self.ctx = SessionContext(ua=self.ua, media=self.media, authorizer=self.authorizer,
                                  recorder=self.recorder, clock=self.clock, node="node1",
                                  no_answer_timeout=60)
        self.request = Request(phone=LEG_A_NUMBER, destination=LEG_B_NUMBER)
        self.auth_requests: list[AuthRequest] = []
        self.session = None
        self.final: list[dict] = []

    def authorize_first(self):
        """The authorization before legA (fires with it)."""
        req = AuthRequest(session_id="m1", account_id="cb1818000001", cli=LEG_A_NUMBER,
                          cld=LEG_B_NUMBER, access_code="WEBCALLBACK")
        return self.authorizer.authorize(req)

    def start(self, auth) -> None:
        self.session = CallbackSession("m1", self.request, app(), auth, self.ctx)
        self.session.start().addCallback(self.final.append)

    def run(self, lateness, script, steps: int = 2000) -> None:
        """Run the clock until the session ends: each delayed call runs ``lateness[i]``
        seconds after its time (cycling), and ``script(self)`` is called after each step to
        let the parties act (it schedules their answers and hang-ups on the clock)."""
        i = 0
        script(self)
        while not self.final and steps:
            steps -= 1
            pending = [c.getTime() for c in self.clock.getDelayedCalls() if c.active()]
            assert pending, "a session waits for nothing"
            late = lateness[i % len(lateness)] if lateness else 0.0
            i += 1
            self.clock.advance(max(0.0, min(pending) - self.clock.seconds()) + late)
            script(self)
        assert self.final, "the session did not end"

    def records(self):
        return {r.leg: r for r in self.recorder.records}
