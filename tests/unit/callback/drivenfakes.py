"""Fakes whose every outcome the test decides: the stateful session test drives them.

Nothing here completes by itself: a call rings, answers, fails or ends; a prompt finishes;
DTMF arrives; the database answers (or fails while it is "down"); the recorder stores the
xDRs; a relay loses its media - each only when the test says so, so that hypothesis can
interleave them in any order. Each fake implements the interface of the real collaborator
(``verifyObject`` in ``test_callback_seams.py``) and follows its documented contract, e.g.
``ICall``: exactly one final event, delivered possibly from inside ``place_call`` or
``hangup``; a play cancelled fires ``INTERRUPTED`` as the real ``Player`` does.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from zope.interface import implementer

from cbserver.billing.authorize import AuthorizationError, IAuthorizer
from cbserver.billing.xdr import ICallRecorder, XdrRejected
from cbserver.callback.legmedia import ILegMedia, IMediaFactory
from cbserver.errors import DatabaseUnavailable
from cbserver.media.collector import CollectOutcome, CollectResult
from cbserver.media.player import PlayResult
from cbserver.media.relay import IRelay, RelayEnd
from cbserver.sip.call_dialog import CallStateError
from cbserver.sip.interfaces import ICall, IUserAgent
from tests.unit.callback.fakes import FakeAuthorizer


class World:
    """What the driven fakes share: the clock, the database's state, the pending work."""

    def __init__(self):
        self.clock = Clock()
        self.clock.advance(1_780_000_000)
        self.db_up = True
        self.ua_stopping = False
        self.ports_exhausted = False
        self.fail_next_place = False  # the next call fails inside place_call (trunk unreachable)
        self.calls: list[DrivenCall] = []
        self.media: list[DrivenLegMedia] = []
        self.relays: list[DrivenRelay] = []
        self.db_ops: list[tuple[str, defer.Deferred, object]] = []  # (kind, d, request)
        self.records_pending: list[tuple[object, defer.Deferred]] = []
        self.written: Counter = Counter()  # (session id, leg) -> times stored
        self.holds: set[str] = set()  # session ids holding a reservation
        self.reject_next = False


@implementer(ICall)
class DrivenCall:
    """One call; ``hangup`` asks, the test answers (487, a crossing 2xx, BYE completion...)."""

    def __init__(self, world: World, number: str, listener):
        self.world = world
        self.number = number
        self.listener = listener
        self.call_id = f"driven-{len(world.calls)}@test"
        self.state = "calling"
        self.finals = 0
        self.hangups = 0
        self._waiters: list[defer.Deferred] = []

    @property
    def finished(self) -> bool:
        return self.state in ("failed", "ended")

    def _final(self, state: str, event: str, *args) -> None:
        assert self.finals == 0, f"second final event on {self.call_id}"
        self.finals += 1
        self.state = state
        getattr(self.listener, event)(self, *args)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def hangup(self):
        self.hangups += 1
        if self.finished:
            return defer.succeed(None)
        if self.state in ("calling", "ringing"):
            self.state = "cancelling"  # RFC 3261 9.1: CANCEL sent, 487 (or a 2xx) to come
        elif self.state == "answered":
            self.state = "terminating"  # RFC 3261 15.1.1: BYE sent
        d = defer.Deferred()
        self._waiters.append(d)
        return d

    # -- what the far end (or the UA itself) does, as the test decides

    def ring(self, early_sdp: bytes | None) -> bool:
        """18x (also one crossing our CANCEL)."""
        if self.state not in ("calling", "ringing", "cancelling"):
            return False
        if self.state == "calling":
            self.state = "ringing"
        self.listener.call_ringing(self, early_sdp)
        return True

    def answer(self, report_crossing: bool) -> bool:
        """2xx. Crossing our CANCEL it is reported as 487 (as ``Call`` does) or as answered."""
        if self.state in ("calling", "ringing"):
            self.state = "answered"
            self.listener.call_answered(self, b"v=0 answer")
            return True
        if self.state == "cancelling":
            if report_crossing:
                self.state = "answered"
                self.listener.call_answered(self, b"v=0 answer")
            else:
                self._final("failed", "call_failed", 487, "cancelled")
            return True
        return False

    def fail(self, status: int, reason: str) -> bool:
        """A final non-2xx (487 when we cancelled)."""
        if self.state in ("calling", "ringing"):
            self._final("failed", "call_failed", status, reason)
            return True
        if self.state == "cancelling":
            self._final("failed", "call_failed", 487, "cancelled")
            return True
        return False

    def remote_bye(self) -> bool:
        """The far end hangs up (also crossing our BYE)."""
        if self.state not in ("answered", "terminating"):
            return False
        self._final("ended", "call_ended", True, "remote BYE")
        return True

    def bye_completed(self) -> bool:
        """Our BYE got its answer (or timed out)."""
        if self.state != "terminating":
            return False
        self._final("ended", "call_ended", False, "local hangup")
        return True

    def ua_ends(self) -> bool:
        """The UA ends an answered call by itself (session timer expiry, RFC 4028 10)."""
        if self.state != "answered":
            return False
        self._final("ended", "call_ended", False, "session expired")
        return True


@implementer(IUserAgent)
class DrivenUA:
    """Places ``DrivenCall``s; refuses while stopping; may fail one inside ``place_call``."""

    def __init__(self, world: World):
        self.world = world

    def place_call(self, number, *, caller_id, display_name=None, sdp_offer, extra_headers=(),
                   no_answer_timeout, listener, log_context=None):
        if self.world.ua_stopping:
            self.world.ua_stopping = False  # one refusal per fault the test injects
            raise CallStateError("user agent is stopping")
        call = DrivenCall(self.world, number, listener)
        self.world.calls.append(call)
        if self.world.fail_next_place:
            self.world.fail_next_place = False
            call.fail(503, "trunk unreachable: no address")  # before place_call returns
        return call


@implementer(ILegMedia)
class DrivenLegMedia:
    """One leg's media: a prompt or a collection in progress at a time, finished by the test."""

    def __init__(self, world: World, call_id: str):
        self.world = world
        self.call_id = call_id
        self.current: tuple[str, defer.Deferred] | None = None
        self.closed = False
        self.played: list[tuple] = []

    def open(self):
        return b"v=0 offer"

    def answer(self, remote_sdp):
        pass

    def info(self, content_type, body):
        return False

    def play(self, names):
        self.stop_prompt()
        self.played.append(tuple(names))
        # Cancelling a play interrupts it, as the real Player's canceller does.
        d = defer.Deferred(canceller=lambda d: d.callback(PlayResult.INTERRUPTED))
        self.current = ("play", d)
        return d

    def stop_prompt(self):
        if self.current is not None and self.current[0] == "play":
            _, d = self.current
            self.current = None
            if not d.called:
                d.callback(PlayResult.INTERRUPTED)

    def collect(self, names, max_digits, first_digit_timeout=6.0, inter_digit_timeout=4.0,
                terminator="#"):
        self.stop_prompt()
        self.played.append(tuple(names))
        # As prompt_and_collect: cancelling ends the collection with what was keyed.
        d = defer.Deferred(canceller=lambda d: d.callback(
            CollectResult("", CollectOutcome.CANCELLED)))
        self.current = ("collect", d)
        return d

    def finish(self, kind: str, result) -> bool:
        """The test ends the prompt (``play``) or the collection (``collect``) in progress."""
        if self.current is None or self.current[0] != kind or self.current[1].called:
            return False
        _, d = self.current
        self.current = None
        d.callback(result)
        return True

    def close(self):
        self.stop_prompt()
        if self.current is not None:
            self.current[1].cancel()
            self.current = None
        self.closed = True
        return defer.succeed(None)


@implementer(IRelay)
class DrivenRelay:
    def __init__(self):
        self.done = defer.Deferred(canceller=lambda d: d.callback(RelayEnd.STOPPED))
        self.started = False
        self.lost_leg = None  # set by the test before it ends the relay by itself

    def start(self):
        self.started = True
        return self.done

    def stop(self):
        if not self.done.called:
            self.done.callback(RelayEnd.STOPPED)

    @property
    def active(self) -> bool:
        return self.started and not self.done.called


@implementer(IMediaFactory)
class DrivenMedia:
    def __init__(self, world: World):
        self.world = world

    def new_leg(self, application, call_id):
        if self.world.ports_exhausted:
            self.world.ports_exhausted = False
            raise CannotListenError("127.0.0.1", 0, "no bindable RTP pair")
        media = DrivenLegMedia(self.world, call_id)
        self.world.media.append(media)
        return media

    def join(self, a, b, call_id):
        a.stop_prompt()  # as legmedia.join
        b.stop_prompt()
        relay = DrivenRelay()
        self.world.relays.append(relay)
        return relay


@implementer(IAuthorizer)
class DrivenAuthorizer:
    """Real rating (``FakeAuthorizer``'s), answered when the test says, with its outcome."""

    def __init__(self, world: World):
        self.world = world
        # CALLBACK_FAIL dearer than what legB's authorization holds: once legB fails, the
        # maximum-duration cut comes during the explanation (EXPLAINING/MAX_DURATION).
        self.rating = FakeAuthorizer(world.clock, accounts={
            "cb1818000001": None, "cb-internal": None, "cb5511987654321": None}, fail_price="3.00")

    def authorize(self, req):
        d = defer.Deferred()
        self.world.db_ops.append(("authorize", d, req))
        return d

    def answer(self, d, req, outcome) -> None:
        """``outcome``: ("ok", max_seconds), ("refused", reason) or ("error", None) (the
        connection broke during the transaction); fails whenever the database is down."""
        if not self.world.db_up or outcome[0] == "error":
            d.errback(DatabaseUnavailable("connection refused"))
        elif outcome[0] == "refused":
            d.errback(AuthorizationError(outcome[1], req.account_id))
        else:
            rated = self.rating.authorize(req)  # fails for a number the tariff does not rate
            rated.addCallback(lambda auth: dataclasses.replace(auth, max_seconds=outcome[1]))
            rated.addCallback(self._reserved, req)
            rated.chainDeferred(d)

    def _reserved(self, auth, req):
        self.world.holds.add(req.session_id)
        return auth

    def release(self, session_id):
        self.world.holds.discard(session_id)
        return defer.succeed(None)


class DrivenDirectory:
    """The IVR's account directory: answers from the database, when the test says."""

    def __init__(self, world: World):
        self.world = world

    def has_password(self, account_id):
        d = defer.Deferred()
        self.world.db_ops.append(("has_password", d, account_id))
        return d


class DrivenLockouts:
    """The IVR's lockouts, in the database."""

    def __init__(self, world: World):
        self.world = world

    def locked(self, keys):
        d = defer.Deferred()
        self.world.db_ops.append(("locked", d, keys))
        return d

    def lock(self, keys, seconds):
        d = defer.Deferred()
        self.world.db_ops.append(("lock", d, keys))
        return d

    def failed(self, keys, limit, seconds):
        # Not driven: the driven tests script lock/locked; cross-call counting is tested
        # against PostgreSQL (tests/integration/web/test_security_money_pg.py).
        return defer.succeed([])


@implementer(ICallRecorder)
class DrivenRecorder:
    """Stores legs when the test flushes it; spools (still succeeds) while the db is down.

    Storing a session's legs releases its reservations (holds), as ``xdr_store`` does, but
    only those that existed when ``record`` was called: a reservation committed after the
    legs were sent may miss the writer's DELETE, so the worst case is the one modelled.
    """

    def __init__(self, world: World):
        self.world = world

    def record(self, leg):
        d = defer.Deferred()
        self.world.records_pending.append((leg, d, leg.session_id in self.world.holds))
        return d

    def flush(self) -> bool:
        pending, self.world.records_pending = self.world.records_pending, []
        for leg, d, held in pending:
            if self.world.reject_next:
                self.world.reject_next = False
                d.errback(XdrRejected("violates check constraint"))
                continue
            self.world.written[leg.key] += 1
            if held and all(self.world.written[(leg.session_id, n)] for n in ("A", "B")):
                self.world.holds.discard(leg.session_id)
            d.callback(None)
        return bool(pending)
