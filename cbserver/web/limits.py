"""Abuse protection for the web triggers: the Hosted allow-list, rate limits, concurrency caps.

* ``hosted_allowed`` says whether a client may use an instance's Hosted mode: its address is
  in one of the instance's ``hosted_allowed_clients`` networks, or it presented one of the
  instance's ``token:<secret>`` entries (compared in constant time, never logged).
* ``RateLimiter`` counts requests per client address, per called-back number and per account
  over a sliding window of ``[limits] window`` seconds (estimated from two fixed windows, so
  no burst at a window boundary doubles a limit), in the shared ``ILimitStore``
  (PostgreSQL), so every node sees the same counts. A request over any limit fails with
  ``RateLimited``.
* ``ConcurrencyGauge`` caps the callbacks in progress per account: the web layer takes a slot
  (atomically, across nodes) before starting a callback and binds it to the callback's id; a
  bound slot counts while the callback is in progress (``callback_sessions``), so nobody has to
  release it. ``release(callback_id)`` frees it at once (optional, idempotent).
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import uuid

from twisted.internet import defer
from zope.interface import Interface, implementer

from cbserver.callback.api import CallbackRefused
from cbserver.logs import Logger

LIMIT_KINDS = ("client", "phone", "account", "concurrent")


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
}


def _networks(entries) -> list:
    """The IP networks among allow-list entries."""
    return [ipaddress.ip_network(e, strict=False) for e in entries if not e.startswith("token:")]


def hosted_tokens(app_cfg) -> list[str]:
    """The instance's Hosted tokens (the secrets of its ``token:<secret>`` entries)."""
    return [e[len("token:"):] for e in app_cfg.hosted_allowed_clients if e.startswith("token:")]


def token_allowed(app_cfg, token: str | None) -> bool:
    """Whether ``token`` is one of the instance's Hosted tokens (constant-time compare)."""
    if not token:
        return False
    given = token.encode("utf-8")
    found = False
    for secret in hosted_tokens(app_cfg):
        found |= hmac.compare_digest(given, secret.encode("utf-8"))
    return found


def address_allowed(app_cfg, client_address: str) -> bool:
    """Whether the client address lies in one of the instance's allowed networks."""
    return in_networks(client_address, _networks(app_cfg.hosted_allowed_clients))


def in_networks(address: str, networks) -> bool:
    """Whether ``address`` (text) lies in one of ``networks``; False for a malformed one."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


_NETWORK_TYPES = (ipaddress.IPv4Network, ipaddress.IPv6Network)
_ANY_ADDRESS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def trusted_networks(trusted_proxies) -> tuple:
    """``[web] trusted_proxies`` as IP networks (items already parsed are kept as they are).

    The web front end parses them once at start-up and passes the result on, so a request
    costs no parsing.
    """
    return tuple(n if isinstance(n, _NETWORK_TYPES) else ipaddress.ip_network(n, strict=False)
                 for n in trusted_proxies)


def from_trusted_proxy(peer: str, trusted_proxies) -> bool:
    """Whether the TCP peer is one of ``trusted_proxies``, whose forwarding headers count."""
    return bool(trusted_proxies) and in_networks(peer, trusted_networks(trusted_proxies))


def client_address(peer: str, forwarded_for: list[str] | None, trusted_proxies=()) -> str:
    """The address of the client a request comes from.

    The TCP peer, unless it is one of ``trusted_proxies`` (networks, as text or parsed by
    ``trusted_networks``, e.g. the load balancer's):
    then the right-most ``X-Forwarded-For`` entry that is not a trusted proxy itself (entries
    further left were written by the client and cannot be trusted). A malformed entry stops
    the walk and the proxy's own address is used, so a forged header never helps a client.
    """
    nets = trusted_networks(trusted_proxies)
    if not (nets and in_networks(peer, nets)):
        return peer
    chain = [a.strip() for h in forwarded_for or () for a in h.split(",") if a.strip()]
    for entry in reversed(chain):
        if not in_networks(entry, _ANY_ADDRESS):
            return peer
        if not in_networks(entry, nets):
            return entry
    return peer


def hosted_allowed(app_cfg, client_address: str, token: str | None = None) -> bool:
    """Whether a client may trigger the instance's Hosted mode (empty allow-list: nobody)."""
    return address_allowed(app_cfg, client_address) or token_allowed(app_cfg, token)


class IRateLimiter(Interface):
    """Counts callback requests and refuses those over a limit."""

    def check(request):
        """Count a ``CallbackRequest``; a Deferred that fails with ``RateLimited`` if over."""

    def check_client(client_address):
        """Count another kind of attempt (a Hosted token) against the client's limit."""


class IConcurrencyGauge(Interface):
    """Callbacks in progress per account, shared by every node."""

    def acquire(account, callback_id=None):
        """Take a slot for a callback of ``account``; a Deferred slot id, or ``RateLimited``.

        With ``callback_id`` (the id the callback will have) the slot is bound at once."""

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

    def check(self, request):
        """Count the request against its three limits; fail with ``RateLimited`` if over one."""
        keys = [("client", request.client_address or "unknown"), ("phone", request.phone)]
        if request.account:
            keys.append(("account", request.account))
        return self._count(keys)

    def check_client(self, client_address):
        """Count an attempt against the client's limit only (e.g. a Hosted token guess)."""
        return self._count([("client", client_address or "unknown")])

    @defer.inlineCallbacks
    def _count(self, keys):
        """Add a hit to each counter; fail with ``RateLimited`` for the first one over."""
        now = self.clock.seconds()
        size = max(1, int(self.limits.window))
        start = int(now) - int(now) % size
        self._checks += 1
        if self._checks % self.prune_every == 1:
            self._prune(start - size)
        counts = yield self.store.count_hits(keys, start, start - size)
        caps = {"client": self.limits.per_client, "phone": self.limits.per_phone,
                "account": self.limits.per_account}
        elapsed = now - start
        for kind, _key in keys:
            hits, previous = counts.get(kind, (0, 0))
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

    def __init__(self, store, limits, clock, start_timeout: float = 60.0,
                 stale_after: float = 24 * 3600.0):
        self.store = store
        self.limits = limits
        self.clock = clock
        self.start_timeout = start_timeout  # an unbound slot older than this is dead
        self.stale_after = stale_after  # prune() forgets slots older than this

    def _times(self) -> tuple[int, int]:
        """(now, the oldest time an unbound slot is still live), whole seconds."""
        now = int(self.clock.seconds())
        return now, now - int(self.start_timeout)

    @defer.inlineCallbacks
    def acquire(self, account, callback_id=None):
        """Take a slot or fail with ``RateLimited("concurrent")``."""
        now, stale = self._times()
        slot_id = str(uuid.uuid4())
        taken, _in_use = yield self.store.take_slot(slot_id, account,
                                                    self.limits.concurrent_per_account, now, stale,
                                                    callback_id=callback_id)
        if not taken:
            raise RateLimited("concurrent", 30)
        return slot_id

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
        return self.store.count_slots(account, self._times()[1])

    def prune(self):
        """Forget slots older than ``stale_after`` (of accounts that never called again)."""
        return self.store.prune_slots(int(self.clock.seconds() - self.stale_after))
