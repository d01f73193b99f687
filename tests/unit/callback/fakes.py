"""Fakes for the callback session's collaborators: UA, media, authorizer, recorder."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from decimal import Decimal

from twisted.internet import defer
from zope.interface import implementer

from cbserver.billing.authorize import Authorization, AuthorizationError, IAuthorizer
from cbserver.billing.domain import AccountInfo, LoadedTariff, RatingEntry
from cbserver.billing.model import Rate, TariffRates
from cbserver.billing.rating import max_duration, price_leg
from cbserver.billing.xdr import ICallRecorder
from cbserver.callback.legmedia import ILegMedia, IMediaFactory
from cbserver.config import ApplicationConfig
from cbserver.media.collector import CollectOutcome, CollectResult
from cbserver.media.player import PlayResult
from cbserver.media.relay import IRelay, RelayEnd
from cbserver.sip.interfaces import ICall, IUserAgent

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def app(**kw) -> ApplicationConfig:
    base = dict(name="Web callback", callback_page_address="https://x/", second_number="18005550100",
                internal_account="cb-internal", special_charge_if_legb_fails=True,
                account_id_translation_rule="s/^/cb/")
    base.update(kw)
    return ApplicationConfig(**base)


def tariff(name="Callback", tariff_id=1, price="0.60", price_55="0.12") -> LoadedTariff:
    rates = (Rate(prefix="1", first_interval=60, next_interval=6, first_price=Decimal(price),
                  next_price=Decimal(price), effective_from=EPOCH, rate_id=tariff_id * 10),
             Rate(prefix="55", first_interval=30, next_interval=6, first_price=Decimal(price_55),
                  next_price=Decimal(price_55), effective_from=EPOCH, rate_id=tariff_id * 10 + 1))
    return LoadedTariff(tariff_id, TariffRates(currency="USD", rates=rates, name=name))


def account(account_id="cb1818000001", password_hash=None) -> AccountInfo:
    return AccountInfo(
        id=account_id, customer_id=7, product_id=3, account_type="debit",
        balance_control="individual", balance=Decimal("20"), credit_limit=None, status="active",
        activation_date=None, expiration_date=None, avail_after_first_use_days=None,
        avail_after_last_use_days=None, first_usage=None, last_usage=None,
        password_hash=password_hash, internal=False, has_voice=True,
        customer_balance_control="prepaid", customer_balance=Decimal(0),
        customer_credit_limit=None, customer_currency="USD", product_currency="USD")


@implementer(IAuthorizer)
class FakeAuthorizer:
    """Real rating over a small tariff; accounts and passwords from a dict."""

    def __init__(self, clock, accounts=None, budget=Decimal("20"), fail_price="0.00"):
        self.clock = clock
        self.accounts = accounts if accounts is not None else {"cb1818000001": None,
                                                               "cb-internal": "s3cret"}
        self.budget = budget
        self.tariff = tariff()
        self.fail_tariff = tariff("Callback fail", 2, fail_price, fail_price)
        self.requests = []
        self.released = []
        self.max_cap = 4 * 3600

    def authorize(self, req):
        self.requests.append(req)
        if req.account_id not in self.accounts:
            return defer.fail(AuthorizationError("unknown_account", req.account_id))
        if req.check_password and req.password != self.accounts[req.account_id]:
            return defer.fail(AuthorizationError("bad_password", req.account_id))
        now = dt.datetime.fromtimestamp(self.clock.seconds(), dt.UTC)
        try:
            leg_a = price_leg(self.tariff.rates, req.cli, req.leg_a_connect or now)
            leg_b = price_leg(self.tariff.rates, req.cld, now)
        except Exception as e:  # noqa: BLE001
            return defer.fail(AuthorizationError("not_rated", str(e)))
        fail_a = price_leg(self.fail_tariff.rates, req.cli, req.leg_a_connect or now)
        seconds = max_duration(self.budget, leg_a, req.leg_a_elapsed, leg_b, self.max_cap)
        auth = Authorization(req, account(req.account_id), self.tariff, RatingEntry("", 1, False),
                             leg_a, leg_b, seconds, None if seconds else "no_balance", self.budget,
                             fail_tariff=self.fail_tariff, fail_leg_a=fail_a)
        return defer.succeed(auth)

    def release(self, session_id):
        self.released.append(session_id)
        return defer.succeed(None)


@implementer(ICallRecorder)
class FakeRecorder:
    def __init__(self):
        self.records = []

    def record(self, leg):
        self.records.append(leg)
        return defer.succeed(None)


@implementer(ICall)
class FakeCall:
    """A placed call whose events the test fires through ``listener``."""

    def __init__(self, number, kw):
        self.call_id = f"fake-{number}-{id(self):x}@test"
        self.number = number
        self.kw = kw
        self.listener = kw["listener"]
        self.state = "calling"
        self.hangups = 0

    def answer(self, sdp=b"v=0 answer"):
        self.state = "answered"
        self.listener.call_answered(self, sdp)

    def ring(self):
        self.listener.call_ringing(self, None)

    def fail(self, status, reason):
        self.state = "failed"
        self.listener.call_failed(self, status, reason)

    def bye(self):
        self.state = "ended"
        self.listener.call_ended(self, True, "remote BYE")

    def hangup(self):
        self.hangups += 1
        if self.state == "answered":
            self.state = "ended"
            self.listener.call_ended(self, False, "local hangup")
        elif self.state == "calling":
            self.state = "failed"
            self.listener.call_failed(self, 487, "cancelled")
        return defer.succeed(None)


@implementer(IUserAgent)
class FakeUA:
    def __init__(self):
        self.calls: list[FakeCall] = []

    def place_call(self, number, **kw):
        call = FakeCall(number, kw)
        self.calls.append(call)
        return call


@implementer(ILegMedia)
class FakeLegMedia:
    """Plays take ``play_seconds`` on the clock; collections answer from a script."""

    def __init__(self, clock, name, script, play_seconds=1.0):
        self.clock = clock
        self.name = name
        self.script = script  # list of digit strings for successive collect() calls
        self.play_seconds = play_seconds
        self.played: list[tuple] = []
        self.closed = False
        self.answered_sdp = None
        self._playing = None

    def open(self):
        return b"v=0 offer"

    def answer(self, sdp):
        self.answered_sdp = sdp

    def info(self, content_type, body):
        return False

    def play(self, names):
        self.stop_prompt()  # as LegMedia.play: a new prompt interrupts the current one
        self.played.append(tuple(names))
        d = defer.Deferred(lambda d: None)
        call = self.clock.callLater(self.play_seconds, lambda: d.called or d.callback(PlayResult.DONE))
        self._playing = (d, call)
        return d

    def stop_prompt(self):
        if self._playing is not None:
            d, call = self._playing
            self._playing = None
            if call.active():
                call.cancel()
            if not d.called:
                d.callback(PlayResult.INTERRUPTED)

    def collect(self, names, max_digits, first_digit_timeout=6.0, inter_digit_timeout=4.0,
                terminator="#"):
        self.played.append(tuple(names))
        digits = self.script.pop(0) if self.script else ""
        outcome = CollectOutcome.TERMINATOR if digits else CollectOutcome.FIRST_DIGIT_TIMEOUT
        d = defer.Deferred()
        self.clock.callLater(2.0, lambda: d.called or d.callback(CollectResult(digits, outcome)))
        return d

    def close(self):
        self.stop_prompt()
        self.closed = True
        return defer.succeed(None)


@implementer(IRelay)
class FakeRelay:
    def __init__(self):
        self.done = defer.Deferred(lambda d: None)
        self.stopped = False
        self.lost_leg = None

    def start(self):
        return self.done

    def stop(self):
        self.stopped = True
        if not self.done.called:
            self.done.callback(RelayEnd.STOPPED)


@implementer(IMediaFactory)
class FakeMedia:
    def __init__(self, clock, scripts=None):
        self.clock = clock
        self.legs: list[FakeLegMedia] = []
        self.relays: list[FakeRelay] = []
        self.scripts = scripts or {}

    def new_leg(self, application, call_id):
        name = call_id.rsplit("-", 1)[-1]
        leg = FakeLegMedia(self.clock, name, self.scripts.get(name, []))
        self.legs.append(leg)
        return leg

    def join(self, a, b, call_id):
        a.stop_prompt()  # as legmedia.join: the relay replaces any prompt
        b.stop_prompt()
        relay = FakeRelay()
        self.relays.append(relay)
        return relay


@dataclass
class Request:
    application: str = "Web callback"
    mode: str = "extended"
    phone: str = "5511987654321"
    account: str | None = "cb1818000001"
    password: str | None = None
    destination: str | None = "18185550123"
    client_address: str = "127.0.0.1"
    client_token: str | None = None

    def but(self, **kw):
        return replace(self, **kw)
