"""In-memory ``ILimitStore`` for unit tests (same rules as the PostgreSQL store)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface import implementer

from cbserver.db.limits_store import ILimitStore


@implementer(ILimitStore)
class MemoryLimitStore:
    """Counters and slots in dicts; ``is_open(callback_id)`` says whether a callback runs.

    ``clock`` stands for the database's clock (PostgreSQL's ``now()``), which times slots."""

    def __init__(self, is_open=lambda _cid: True, clock=None):
        self.is_open = is_open
        self.clock = clock if clock is not None else Clock()
        self.counters: dict[tuple[str, str, int], int] = {}
        self.slots: dict[str, dict] = {}
        self.secrets: dict[str, bytes] = {}

    def count_hits(self, keys, window_start, previous_start):
        out = {}
        for kind, key in keys:
            k = (kind, key, window_start)
            self.counters[k] = self.counters.get(k, 0) + 1
            out[kind] = (self.counters[k], self.counters.get((kind, key, previous_start), 0))
        return defer.succeed(out)

    def peek_hits(self, keys, window_start, previous_start):
        return defer.succeed({kind: (self.counters.get((kind, key, window_start), 0),
                                     self.counters.get((kind, key, previous_start), 0))
                              for kind, key in keys})

    def count_and_peek(self, keys, peek_keys, window_start, previous_start):
        # Through count_hits and peek_hits, so a test replacing either sees this fail too.
        d = self.count_hits(keys, window_start, previous_start)
        return d.addCallback(lambda counted: self.peek_hits(peek_keys, window_start, previous_start)
                             .addCallback(lambda peeked: (counted, peeked)))

    def admit(self, keys, peek_keys, window_start, previous_start, elapsed, caps, claim=None):
        # The limiter's own arithmetic decides here; the PostgreSQL store is tested against it.
        from cbserver.callback.admission import sliding_count

        size = window_start - previous_start

        def decide(both):
            counted, peeked = both
            refused = any(sliding_count(*counted[k], elapsed, size) > caps[k] for k, _ in keys) or any(
                sliding_count(*peeked[k], elapsed, size) + 1 > caps[k] for k, _ in peek_keys)
            if refused or claim is None:
                return defer.succeed((counted, peeked, refused, None))
            d = self.take_slot(claim.slot_id, claim.account, claim.cap, claim.start_timeout,
                               claim.callback_id)
            return d.addCallback(lambda r: (counted, peeked, False, r[0]))

        return self.count_and_peek(keys, peek_keys, window_start, previous_start).addCallback(decide)

    def refund_hits(self, keys, window_start):
        for kind, key in keys:
            k = (kind, key, window_start)
            if self.counters.get(k, 0) > 0:
                self.counters[k] -= 1
        return defer.succeed(None)

    def prune_counters(self, before):
        for k in [k for k in self.counters if k[2] < before]:
            del self.counters[k]
        return defer.succeed(None)

    def _live(self, slot, unbound_since):
        if slot["callback_id"] is None:
            return slot["taken_at"] >= unbound_since
        return self.is_open(slot["callback_id"])

    def take_slot(self, slot_id, account, cap, start_timeout, callback_id=None):
        now = int(self.clock.seconds())
        unbound_since = now - int(start_timeout)
        for sid in [s for s, v in self.slots.items()
                    if v["account"] == account and not self._live(v, unbound_since)]:
            del self.slots[sid]
        in_use = sum(1 for v in self.slots.values() if v["account"] == account)
        if in_use >= cap:
            return defer.succeed((False, in_use))
        self.slots[slot_id] = {"account": account, "callback_id": callback_id, "taken_at": now}
        return defer.succeed((True, in_use + 1))

    def count_slots(self, account, start_timeout):
        unbound_since = int(self.clock.seconds()) - int(start_timeout)
        return defer.succeed(sum(1 for v in self.slots.values()
                                 if v["account"] == account and self._live(v, unbound_since)))

    def bind_slot(self, slot_id, callback_id):
        if slot_id in self.slots:
            self.slots[slot_id]["callback_id"] = callback_id
        return defer.succeed(None)

    def release_slot(self, slot_id):
        self.slots.pop(slot_id, None)
        return defer.succeed(None)

    def release_callback(self, callback_id):
        for sid, v in list(self.slots.items()):
            if v["callback_id"] == callback_id:
                del self.slots[sid]
                return defer.succeed(v["account"])
        return defer.succeed(None)

    def prune_slots(self, older_than):
        before = int(self.clock.seconds()) - int(older_than)
        for sid in [s for s, v in self.slots.items() if v["taken_at"] < before]:
            del self.slots[sid]
        return defer.succeed(None)

    def shared_secret(self, name, candidate):
        return defer.succeed(self.secrets.setdefault(name, bytes(candidate)))
