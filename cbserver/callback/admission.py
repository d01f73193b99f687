"""Admission of callback requests: everything that decides whether this node takes one now.

One place for the rules that refuse a valid request before any call is placed (issue 12):

* the node's readiness (``not_ready``) and its own busy caps (``busy``): at most
  ``[limits] node_max_active`` callbacks in progress and ``node_max_starting`` requests
  between validation and the callback service's answer, refused at once, before any
  database work; when the RTP range has no port pairs left for one more callback's legs; and,
  below those caps, beyond the requests the start-delay gate lets start at once (a limit cut
  while starts are late, a standing queue in front of the database or the node's own core:
  ``loadgate.StartDelayGate``, ``[limits] start_delay_target``), so the node's capacity is
  measured on the machine it runs on, not tuned by hand; each busy refusal is counted by the
  rule that made it (``load_state``, ``/readyz``);
* ``RateLimiter``: requests per client address, per called-back number and per account over a
  sliding window of ``[limits] window`` seconds (estimated from two fixed windows, so no
  burst at a window boundary doubles a limit), counted in the shared ``ILimitStore``
  (PostgreSQL) so every node sees the same counts; over any limit is ``RateLimited``.
  A request whose authentication fails (``bad_credentials``: unknown account or wrong
  password) gives its per-phone and per-account hits back and counts as a failure instead,
  per client and per (account, client): a stranger's wrong passwords neither use up the
  owner's quotas nor lock the owner out from another address (issue 14, item 9);
* ``ConcurrencyGauge``: the per-account cap on callbacks in progress. A slot is taken
  (atomically, across nodes) before the callback starts and bound to its id; a bound slot
  counts while the callback is in progress (``callback_sessions``), so nobody has to release
  it. ``release(callback_id)`` frees it at once (optional, idempotent).

``Admission.start`` applies them in that order and starts the callback. For a request that
names an account, the limits and the slot are one statement and one transaction
(``RateLimiter.check_and_claim``, ``cb_admit``): the database refuses with the limiter's own
arithmetic, so a refused request never takes a slot. The web layer keeps
only HTTP concerns: parsing, the client's address, the Hosted allow-list, and turning a
refusal into a status code and a ``Retry-After``.
"""

from __future__ import annotations

import dataclasses
import math
import uuid

from twisted.internet import defer
from zope.interface import Interface, implementer

from cbserver import priority
from cbserver.callback.api import CallbackRefused
from cbserver.callback.loadgate import StartDelayGate
from cbserver.errors import DatabaseUnavailable
from cbserver.logs import Logger, describe_failure

NOT_READY = "The service is not ready; please try again in a moment."
BUSY = "The service is busy right now; please try again in a moment."
DRAINING = "This server is being taken out of service; please try again in a moment."

LIMIT_KINDS = ("client", "phone", "account", "concurrent", "auth_client", "auth_account")
#: Retry-After (seconds) of a refusal for the account's concurrency cap.
CONCURRENT_RETRY = 30


@dataclasses.dataclass(frozen=True)
class SlotClaim:
    """A concurrency slot to take for ``account`` (``ConcurrencyGauge.claim``), bound at once
    to ``callback_id``; at most ``cap`` live, an unbound one live ``start_timeout`` seconds."""

    slot_id: str
    account: str
    cap: int
    start_timeout: int
    callback_id: str | None = None


class RateLimited(CallbackRefused):
    """Too many requests; ``kind`` is one of LIMIT_KINDS, ``retry_after`` whole seconds."""

    def __init__(self, kind: str, retry_after: int, message: str | None = None):
        super().__init__("rate_limited", message or _MESSAGES[kind])
        self.kind = kind
        self.retry_after = max(1, int(retry_after))


_MESSAGES = {
    "client": "Too many callback requests from your address; please try again later.",
    "phone": "Too many callbacks to this number; please try again later.",
    "account": "Too many callback requests for this account; please try again later.",
    "concurrent": "This account already has the most callbacks in progress it may have.",
    "auth_client": "Too many failed sign-ins from your address; please try again later.",
    "auth_account": "Too many failed sign-ins for this account from your address; please try "
                    "again later.",
}


class IRateLimiter(Interface):
    """Counts callback requests and refuses those over a limit."""

    def check(request):
        """Count a ``CallbackRequest``; a Deferred window token, or ``RateLimited`` if over."""

    def failed(request, window):
        """The request ``check`` counted in ``window`` failed authentication: count it as a
        failure instead of a request for its phone and account."""

    def check_client(client_address):
        """Count another kind of attempt (a Hosted token) against the client's limit."""

    def check_and_claim(request, claim):
        """``check``, and take the ``SlotClaim``'s slot in the same transaction unless a limit
        refuses: a Deferred ``(window, slot id)``, or ``RateLimited`` (``concurrent`` when
        the account has no free slot)."""


class IConcurrencyGauge(Interface):
    """Callbacks in progress per account, shared by every node."""

    def acquire(account, callback_id=None):
        """Take a slot for a callback of ``account``; a Deferred slot id, or ``RateLimited``.

        With ``callback_id`` (the id the callback will have) the slot is bound at once."""

    def claim(account, callback_id=None):
        """The ``SlotClaim`` that ``acquire`` would take (for ``IRateLimiter.check_and_claim``)."""

    def bind(slot_id, callback_id):
        """Attach a taken slot to the callback the service started."""

    def cancel(slot_id):
        """Give back a slot whose callback was not started."""

    def release(callback_id):
        """Give back the slot of a callback that reached a final status (idempotent)."""

    def in_use(account):
        """A Deferred count of the account's callbacks in progress."""


def sliding_count(hits: int, previous: int, elapsed: float, window: float) -> float:
    """Requests in the last ``window`` seconds, estimated from two fixed windows.

    The previous window's count is weighted by the part of it still inside the sliding
    window; ``elapsed`` is the time since the current window started.
    """
    return previous * max(0.0, 1.0 - elapsed / window) + hits


def retry_after(hits: int, previous: int, cap: int, elapsed: float, window: float) -> int:
    """Whole seconds until one more request would be within ``cap`` (at least 1)."""
    if hits + 1 <= cap and previous > 0:
        # Later in this window, when enough of the previous one has slid out.
        due = window * (1.0 - (cap - hits - 1) / previous)
    else:
        # In the next window, whose "previous" is this one.
        due = window + window * max(0.0, 1.0 - (cap - 1) / hits) if hits else window
    return max(1, math.ceil(due - elapsed))


@implementer(IRateLimiter)
class RateLimiter:
    """Sliding-window limits per client address, called-back number and account.

    Every request that reaches the limiter counts, refused or not, so a client that keeps
    hammering stays refused; ``RateLimited.retry_after`` says when the next one would pass.
    """

    log = Logger()
    prune_every = 256

    def __init__(self, store, limits, clock):
        self.store = store
        self.limits = limits
        self.clock = clock
        self._checks = 0

    @staticmethod
    def _quota_keys(request) -> list[tuple[str, str]]:
        """The per-phone and per-account counters of a request."""
        keys = [("phone", request.phone)]
        if request.account:
            keys.append(("account", request.account))
        return keys

    @staticmethod
    def _failure_keys(request) -> list[tuple[str, str]]:
        """The failed-authentication counters of a request: its client, and its account as
        tried from that client (another client's correct password is not blocked)."""
        client = request.client_address or "unknown"
        keys = [("auth_client", client)]
        if request.account:
            keys.append(("auth_account", f"{request.account} {client}"))
        return keys

    @defer.inlineCallbacks
    def check(self, request):
        """Count the request against its three limits and refuse it while its client (or the
        client with this account) has failed authentication too often; fire with the window
        the hits were counted in (for ``failed``), or fail with ``RateLimited``."""
        quota, fails = self._quota_keys(request), self._failure_keys(request)
        start, size, now = self._window()
        # One round trip: the hits counted and the failure counters read in one statement.
        counted, failures = yield self._count(
            [("client", request.client_address or "unknown"), *quota], start, size, now, fails)
        yield self._refuse(quota, fails, start, counted, failures, now - start, size)
        return start

    @defer.inlineCallbacks
    def check_and_claim(self, request, claim):
        """See ``IRateLimiter``: the limits and the account's slot in one round trip.

        The store decides the refusal with the same arithmetic (``sliding_count``), so a
        refused request takes no slot; the counts it returns say which limit refused and
        the Retry-After, exactly as ``check`` would."""
        quota, fails = self._quota_keys(request), self._failure_keys(request)
        start, size, now = self._window()
        keys = [("client", request.client_address or "unknown"), *quota]
        self._maybe_prune(start, size)
        counts, failures, refused, taken = yield self.store.admit(
            keys, fails, start, start - size, now - start, self._caps(), claim)
        counted = [(kind, *counts.get(kind, (0, 0))) for kind, _ in keys]
        try:
            yield self._refuse(quota, fails, start, counted, failures, now - start, size)
            if refused:  # cannot happen with equal arithmetic; refused is refused all the same
                raise RateLimited("client", 1)
        except RateLimited:
            if taken:
                yield self.store.release_slot(claim.slot_id)
            raise
        if not taken:
            raise RateLimited("concurrent", CONCURRENT_RETRY)
        return start, claim.slot_id

    def _caps(self) -> dict[str, int]:
        """Each counter kind's cap."""
        return {"client": self.limits.per_client, "phone": self.limits.per_phone,
                "account": self.limits.per_account,
                "auth_client": self.limits.failures_per_client,
                "auth_account": self.limits.failures_per_account}

    @defer.inlineCallbacks
    def _refuse(self, quota, fails, start, counted, failures, elapsed, size):
        """Fail with ``RateLimited`` for the first limit the counts are over: a failure
        counter first (the request's quota hits are given back), then a counted one."""
        caps = self._caps()
        for kind, _key in fails:
            hits, previous = failures.get(kind, (0, 0))
            # One more failure than the cap would pass: the next try is refused before any
            # password is checked.
            if sliding_count(hits, previous, elapsed, size) + 1 > caps[kind]:
                yield self.store.refund_hits(quota, start)
                raise RateLimited(kind, retry_after(hits, previous, caps[kind], elapsed, size))
        self._raise_over(counted, elapsed, size)

    @defer.inlineCallbacks
    def failed(self, request, window):
        """See ``IRateLimiter``: phone and account hits back, one failure more."""
        yield self.store.refund_hits(self._quota_keys(request), window)
        yield self.store.count_hits(self._failure_keys(request), window, window - self._window()[1])

    @defer.inlineCallbacks
    def check_client(self, client_address):
        """Count an attempt against the client's limit only (e.g. a Hosted token guess)."""
        start, size, now = self._window()
        counted = yield self._count([("client", client_address or "unknown")], start, size, now)
        self._raise_over(counted, now - start, size)

    def _window(self) -> tuple[int, int, float]:
        """(start of the current fixed window, window size, now)."""
        now = self.clock.seconds()
        size = max(1, int(self.limits.window))
        return int(now) - int(now) % size, size, now

    def _count(self, keys, start: int, size: int, now: float, peek=None):
        """Add a hit to each counter; a Deferred ``[(kind, hits, previous)]`` in key order.

        With ``peek`` (keys to read without counting), ``(that list, {kind: (hits, previous)})``.
        """
        self._maybe_prune(start, size)

        def ordered(counts):
            return [(kind, *counts.get(kind, (0, 0))) for kind, _ in keys]

        if peek is not None:
            d = self.store.count_and_peek(keys, peek, start, start - size)
            return d.addCallback(lambda both: (ordered(both[0]), both[1]))
        return self.store.count_hits(keys, start, start - size).addCallback(ordered)

    def _maybe_prune(self, start: int, size: int) -> None:
        """Every ``prune_every`` checks, forget the windows before the previous one."""
        self._checks += 1
        if self._checks % self.prune_every == 1:
            self._prune(start - size)

    def _raise_over(self, counted, elapsed: float, size: int) -> None:
        """Fail with ``RateLimited`` for the first counter over its cap."""
        caps = self._caps()
        for kind, hits, previous in counted:
            if sliding_count(hits, previous, elapsed, size) > caps[kind]:
                raise RateLimited(kind, retry_after(hits, previous, caps[kind], elapsed, size))

    def _prune(self, before: int) -> None:
        """Forget windows before the previous one, in the background (errors logged)."""
        d = self.store.prune_counters(before)
        d.addErrback(lambda f: self.log.failure("pruning rate-limit counters failed", failure=f))


@implementer(IConcurrencyGauge)
class ConcurrencyGauge:
    """The per-account cap on callbacks in progress, over slots in the shared store."""

    log = Logger()

    def __init__(self, store, limits, start_timeout: float = 60.0,
                 stale_after: float = 24 * 3600.0):
        self.store = store
        self.limits = limits
        # Ages in the store's own clock (PostgreSQL's now()), the one clock every node judges
        # every node's slots by: no node's clock is compared with another's.
        self.start_timeout = int(start_timeout)  # an unbound slot older than this is dead
        self.stale_after = int(stale_after)  # prune() forgets slots older than this

    @defer.inlineCallbacks
    def acquire(self, account, callback_id=None):
        """Take a slot or fail with ``RateLimited("concurrent")``."""
        slot_id = str(uuid.uuid4())
        taken, _in_use = yield self.store.take_slot(slot_id, account,
                                                    self.limits.concurrent_per_account,
                                                    self.start_timeout, callback_id=callback_id)
        if not taken:
            raise RateLimited("concurrent", CONCURRENT_RETRY)
        return slot_id

    def claim(self, account, callback_id=None):
        """See ``IConcurrencyGauge``."""
        return SlotClaim(str(uuid.uuid4()), account, self.limits.concurrent_per_account,
                         self.start_timeout, callback_id)

    def bind(self, slot_id, callback_id):
        """See ``IConcurrencyGauge``."""
        return self.store.bind_slot(slot_id, callback_id)

    def cancel(self, slot_id):
        """See ``IConcurrencyGauge``."""
        return self.store.release_slot(slot_id)

    def release(self, callback_id):
        """See ``IConcurrencyGauge``."""
        return self.store.release_callback(callback_id)

    def in_use(self, account):
        """See ``IConcurrencyGauge``."""
        return self.store.count_slots(account, self.start_timeout)

    def prune(self):
        """Forget slots older than ``stale_after`` (of accounts that never called again)."""
        return self.store.prune_slots(self.stale_after)


class Admission:
    """Decides, in one place, whether this node starts a callback now, and starts it.

    ``ready()`` tells whether the node takes callbacks at all; ``limits`` (``LimitsConfig``,
    None: no node caps) gives the node's busy caps and the limiter's and gauge's settings;
    ``clock`` (an ``IReactorTime``; the service's own clock when None) times the starts for
    the start-delay gate.
    """

    log = Logger()

    def __init__(self, service, limiter, gauge, ready, limits=None, clock=None):
        self.service = service
        self.limiter = limiter  # IRateLimiter
        self.gauge = gauge  # IConcurrencyGauge
        self.ready = ready
        self.limits = limits
        self.starting = 0  # requests between validation and the service's answer
        # busy refusals at the fixed node caps, by cap (the gate counts its own by reason)
        self.refusals = {"active": 0, "starting": 0, "media": 0}
        # The RTP port pool (``cbserver.media.ports.PortPool``; None: not checked): a callback
        # takes a pair per leg, so a node whose range is short of pairs for one more callback
        # would accept it and then fail it (``media_unavailable``). Set by the server's wiring.
        self.media = None
        clock = clock if clock is not None else getattr(service, "clock", None)
        target = limits.start_delay_target if limits is not None and clock is not None else 0.0
        self.gate = StartDelayGate(clock, target, limits.start_delay_interval if target else 1.0,
                                   ceiling=limits.node_max_starting if target else 100)
        self.starts = 0  # starts that finished (the statements-per-start denominator)
        db = getattr(service, "db", None)
        if target and hasattr(db, "admission_wait"):
            self._db = db
            self.gate.queue_delay = self.queue_delay
        if target:
            # Running callbacks report legB's re-authorization time to the same gate.
            service.on_legb_delay = self.gate.observe_legb

    def queue_delay(self) -> float:
        """Seconds a start admitted now would spend queued for database connections: the
        pool's current admission queue time per statement times the statements a start has
        taken on average (both measured; at least one)."""
        per_start = self._db.admission_checkouts / self.starts if self.starts else 1.0
        return self._db.admission_wait() * max(1.0, per_start)

    def load_state(self) -> dict:
        """The node's admission load for ``/readyz``: the gate, requests starting now, and
        the pool's queues (running callbacks' statements, admissions')."""
        state = {"starting": self.starting, "gate": self.gate.state(),
                 "refused": {**self.refusals, **self.gate.refusals}}
        db = getattr(self.service, "db", None)
        if hasattr(db, "queued"):
            running, admissions = db.queued()
            state["db_queue"] = {"running": running, "admission": admissions}
        return state

    def check_load(self) -> None:
        """Refuse with ``busy`` when this node is at one of its own caps.

        Past its capacity a node that accepted every request would queue them behind the
        database until the callers gave up or hung up on legA; refusing at once, before any
        database work, keeps the accepted callbacks on time and tells the client to retry.
        """
        if self.limits is not None:
            if self.service.active >= self.limits.node_max_active:
                self._busy("active")
            if self.starting >= self.limits.node_max_starting:
                self._busy("starting")
        if self.media is not None and \
                2 * (self.service.active + self.starting + 1) > self.media.capacity:
            # Every callback running or starting may hold a pair for each of its two legs.
            self._busy("media")
        if not self.gate.admit():
            raise CallbackRefused("busy", BUSY)

    def _busy(self, cap: str):
        """Refuse ``busy`` at the node cap ``cap``, counted by it (``/readyz``)."""
        self.refusals[cap] += 1
        raise CallbackRefused("busy", BUSY)

    @defer.inlineCallbacks
    def _failed(self, request, window):
        """Count a failed authentication (a database error is logged: the refusal stands)."""
        try:
            yield self.limiter.failed(request, window)
        except Exception as e:  # noqa: BLE001 - the caller is refused either way
            self.log.warn("could not count a failed authentication: {err}", err=describe_failure(e))

    @defer.inlineCallbacks
    def start(self, request):
        """Admit a validated ``CallbackRequest`` and start it; fire with the callback's id.

        Fails with ``CallbackRefused``: ``not_ready``, ``busy``, ``RateLimited`` (a rate or
        the account's concurrency), or the service's own refusal. PostgreSQL away is
        ``not_ready``. A slot taken for a callback that did not start is given back.
        """
        slot = None
        try:
            try:
                if not self.ready():
                    raise CallbackRefused("not_ready", NOT_READY)
                if getattr(self.service, "draining", False):
                    # Drained (cbserver node drain): the balancer sends the retry elsewhere.
                    raise CallbackRefused("draining", DRAINING)
                self.check_load()
                self.starting += 1
                token = self.gate.started()
                # This generator's database work (and what it calls) queues behind running
                # callbacks' when connections are scarce (cbserver.priority).
                mark = priority.admission()
                try:
                    callback_id = self.service.new_callback_id()
                    if request.account:
                        # The limits and the account's slot in one round trip (cb_admit).
                        claim = self.gauge.claim(request.account, callback_id)
                        try:
                            window, slot = yield self.limiter.check_and_claim(request, claim)
                        except RateLimited as e:
                            if e.kind == "concurrent":  # refused after the id was drawn, as before
                                request = dataclasses.replace(request, callback_id=callback_id)
                            raise
                        request = dataclasses.replace(request, callback_id=callback_id)
                    else:  # no account (Hosted: the IVR finds it later), so no slot
                        window = yield self.limiter.check(request)
                        request = dataclasses.replace(request, callback_id=callback_id)
                    try:
                        cb_id = yield self.service.request_callback(request)
                    except CallbackRefused as e:
                        if e.code == "bad_credentials":
                            yield self._failed(request, window)
                        raise
                finally:
                    priority.restore(mark)
                    self.starting -= 1
                    self.starts += 1
                    self.gate.finished(token)
            except DatabaseUnavailable as e:
                self.log.warn("database unavailable while starting a callback: {err} "
                              "callback_id={callback_id}", err=describe_failure(e),
                              callback_id=request.callback_id or "-")
                raise CallbackRefused("not_ready", NOT_READY) from None
        except BaseException as e:
            if slot is not None:
                self.gauge.cancel(slot).addErrback(
                    lambda f: self.log.failure("could not free a callback slot callback_id={callback_id}",
                                               failure=f, callback_id=request.callback_id))
            if isinstance(e, CallbackRefused) and request.callback_id:
                # The web layer logs the refusal; once an id was drawn the line names it.
                e.callback_id = request.callback_id
            raise
        return cb_id
