"""The SQL of abuse protection: rate-limit counters and per-account callback slots.

Counters are kept per window in ``rate_limit_counters``; one statement increments every
counter a request touches and returns the new counts with the previous window's beside them
(``cb_count_hits``, sql/032: ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``), so several
nodes on one database count together and the limiter can weigh the two windows into a
sliding one. Callbacks being started or in progress are rows of ``callback_slots``; a slot is
taken under a transaction-scoped advisory lock on the account (``cb_take_slot``, one round
trip), so two nodes cannot both take the last free slot. A slot bound to a callback stays
live only while that callback's row in ``callback_sessions`` is not final and its node is
alive (``cb_slot_live``, sql/032, the one statement of that rule), so slots free themselves
without anyone having to release them.
"""

from __future__ import annotations

import psycopg2
from twisted.internet import defer
from zope.interface import Interface, implementer

# Count the hit in the current window and read the previous window beside it: one call of
# cb_count_hits (sql/032), whose plan PostgreSQL keeps per connection.
COUNT_HITS = "SELECT kind, hits, previous FROM cb_count_hits(%(kinds)s, %(keys)s, %(start)s, %(previous)s)"
# Both in one round trip (sql/functions/65): count the request's hits, read its failure counters.
COUNT_PEEK_HITS = ("SELECT kind, counted, hits, previous FROM cb_count_peek_hits(%(kinds)s, "
                   "%(keys)s, %(peek_kinds)s, %(peek_keys)s, %(start)s, %(previous)s)")
# Read counters without counting: failed authentications are counted only once they failed.
PEEK_HITS = """
SELECT r.kind, r.window_start, r.hits FROM rate_limit_counters r
  JOIN unnest(%(kinds)s::text[], %(keys)s::text[]) AS u(k, v) ON r.kind = u.k AND r.key = u.v
 WHERE r.window_start IN (%(start)s, %(previous)s)
"""
# Give back a request's hit (its authentication failed: it counts as a failure instead).
REFUND_HITS = """
UPDATE rate_limit_counters r SET hits = r.hits - 1
  FROM unnest(%(kinds)s::text[], %(keys)s::text[]) AS u(k, v)
 WHERE r.kind = u.k AND r.key = u.v AND r.window_start = %(start)s AND r.hits > 0
"""
PRUNE_COUNTERS = "DELETE FROM rate_limit_counters WHERE window_start < %s"
# The live-slot rule is cb_slot_live (sql/functions/20), counted here through cb_count_slots;
# cb_take_slot states the same rule in its loop, asking liveness once per process (session 9).
COUNT_LIVE_SLOTS = "SELECT cb_count_slots(%(account)s, %(start_timeout)s, %(node_expiry)s)"
BIND_SLOT = "UPDATE callback_slots SET callback_id = %s WHERE slot_id = %s"
RELEASE_SLOT = "DELETE FROM callback_slots WHERE slot_id = %s"
RELEASE_CALLBACK = "DELETE FROM callback_slots WHERE callback_id = %s RETURNING account_id"
# Slot times are the database's clock (cb_take_slot), so their age is judged by it too.
PRUNE_SLOTS = "DELETE FROM callback_slots WHERE taken_at < floor(extract(epoch FROM now())) - %s"
SHARED_SECRET = """
WITH made AS (
    INSERT INTO web_secrets (name, secret) VALUES (%(name)s, %(candidate)s)
    ON CONFLICT (name) DO NOTHING RETURNING secret)
SELECT secret FROM made
UNION ALL
SELECT secret FROM web_secrets WHERE name = %(name)s AND NOT EXISTS (SELECT 1 FROM made)
"""

def count_hits(db, keys: list[tuple[str, str]], window_start: int,
               previous_start: int) -> defer.Deferred:
    """Add one hit to each ``(kind, key)`` counter of the window.

    Fires with ``{kind: (hits in this window, hits in the previous window)}``.
    """
    params = {"start": window_start, "previous": previous_start,
              "kinds": [k for k, _ in keys], "keys": [v for _, v in keys]}
    d = db.runQuery(COUNT_HITS, params)
    d.addCallback(lambda rows: {kind: (int(hits), int(prev)) for kind, hits, prev in rows})
    return d


def count_and_peek(db, keys: list[tuple[str, str]], peek_keys: list[tuple[str, str]],
                   window_start: int, previous_start: int) -> defer.Deferred:
    """``count_hits(keys)`` and ``peek_hits(peek_keys)`` in one statement (one transaction).

    Fires with ``(counted, peeked)``, each ``{kind: (hits now, hits in the previous window)}``;
    every peeked kind is present ((0, 0) when it has no counter).
    """
    params = {"start": window_start, "previous": previous_start,
              "kinds": [k for k, _ in keys], "keys": [v for _, v in keys],
              "peek_kinds": [k for k, _ in peek_keys], "peek_keys": [v for _, v in peek_keys]}

    def split(rows):
        counted = {}
        peeked = {kind: (0, 0) for kind, _ in peek_keys}
        for kind, was_counted, hits, prev in rows:
            (counted if was_counted else peeked)[kind] = (int(hits), int(prev))
        return counted, peeked

    return db.runQuery(COUNT_PEEK_HITS, params).addCallback(split)


def peek_hits(db, keys: list[tuple[str, str]], window_start: int,
              previous_start: int) -> defer.Deferred:
    """Fire with ``{kind: (hits in this window, hits in the previous one)}``, counting nothing."""
    params = {"start": window_start, "previous": previous_start,
              "kinds": [k for k, _ in keys], "keys": [v for _, v in keys]}

    def fold(rows):
        out = {kind: (0, 0) for kind, _ in keys}
        for kind, start, hits in rows:
            now, prev = out[kind]
            out[kind] = (int(hits), prev) if int(start) == window_start else (now, int(hits))
        return out

    return db.runQuery(PEEK_HITS, params).addCallback(fold)


def refund_hits(db, keys: list[tuple[str, str]], window_start: int) -> defer.Deferred:
    """Take one hit back from each ``(kind, key)`` counter of the window (never below 0)."""
    return db.runOperation(REFUND_HITS, {"start": window_start, "kinds": [k for k, _ in keys],
                                         "keys": [v for _, v in keys]})


def prune_counters(db, before: int) -> defer.Deferred:
    """Delete counters of windows that started before ``before`` (epoch seconds)."""
    return db.runOperation(PRUNE_COUNTERS, (before,))


@defer.inlineCallbacks
def shared_secret(db, name: str, candidate: bytes):
    """Fire with the secret stored under ``name``, storing ``candidate`` if there is none."""
    params = {"name": name, "candidate": psycopg2.Binary(candidate)}
    rows = yield db.runQuery(SHARED_SECRET, params)
    if not rows:  # another node inserted it after this statement's snapshot: read it now
        rows = yield db.runQuery(SHARED_SECRET, params)
    return bytes(rows[0][0])


TAKE_SLOT_FN = "SELECT taken, in_use FROM cb_take_slot(%s, %s, %s, %s, %s, %s)"

# The admission's transaction commits without waiting for the WAL flush (issue 17 item 1,
# docs/bench-callbacks.md "Session 8"), so the hot counter row (one per client address) is
# not locked through an fsync. What it writes (counter hits, a slot row) may be lost only if
# PostgreSQL itself crashes within a fraction of a second after the commit (wal_writer_delay),
# and every later synchronous commit (the callback's own rows, its money) flushes it first,
# WAL being written in order. Losing it is harmless: a counter one hit short for the rest of
# its window, a slot whose callback then fails (its database went away) or that frees itself
# by cb_slot_live's rule. Other nodes see it at commit as before. Never for money, xDRs,
# status or crash-recovery rows. SET LOCAL lasts the statement's own implicit transaction
# (one Query message on an autocommit connection).
ASYNC_COMMIT = "SET LOCAL synchronous_commit = off; "

# A request's rate-limit check and its account's slot in one round trip (sql/functions/68).
# cb_admit sets ASYNC_COMMIT's setting itself, for its transaction (session 10: the SET LOCAL
# statement sent before the call was one statement more per callback).
ADMIT_FN = ("SELECT kind, counted, hits, previous, over, taken, in_use FROM cb_admit("
            "%(kinds)s::text[], %(keys)s::text[], %(caps)s::float8[], %(peek_kinds)s::text[], "
            "%(peek_keys)s::text[], %(peek_caps)s::float8[], %(start)s, %(previous)s, "
            "%(elapsed)s::float8, %(size)s, %(slot)s, %(account)s, %(slot_cap)s, "
            "%(start_timeout)s, %(node_expiry)s, %(callback)s)")


def admit(db, keys, peek_keys, window_start: int, previous_start: int, elapsed: float,
          caps: dict, claim=None, node_expiry: int = 60) -> defer.Deferred:
    """``count_and_peek`` and, unless a cap refuses the request, ``take_slot`` for ``claim``,
    in one statement and one transaction (``cb_admit``).

    ``caps`` gives each counted and peeked kind's cap; ``claim`` (a ``SlotClaim``, or None)
    the slot to take. Fires with ``(counted, peeked, refused, taken)``: the first two as
    ``count_and_peek``'s, ``refused`` whether a cap refused (the database's arithmetic is
    ``sliding_count``'s), ``taken`` whether the slot was taken (None: not tried).
    """
    size = window_start - previous_start
    params = {"start": window_start, "previous": previous_start, "elapsed": float(elapsed),
              "size": size, "kinds": [k for k, _ in keys], "keys": [v for _, v in keys],
              "caps": [float(caps[k]) for k, _ in keys],
              "peek_kinds": [k for k, _ in peek_keys], "peek_keys": [v for _, v in peek_keys],
              "peek_caps": [float(caps[k]) for k, _ in peek_keys],
              "slot": claim.slot_id if claim else None, "account": claim.account if claim else None,
              "slot_cap": claim.cap if claim else 0,
              "start_timeout": int(claim.start_timeout) if claim else 0,
              "node_expiry": node_expiry, "callback": claim.callback_id if claim else None}

    def split(rows):
        counted, peeked = {}, {kind: (0, 0) for kind, _ in peek_keys}
        refused, taken = False, None
        for kind, was_counted, hits, prev, over, took, _in_use in rows:
            if kind is None:
                taken = took
            else:
                (counted if was_counted else peeked)[kind] = (int(hits), int(prev))
                refused = refused or bool(over)
        return counted, peeked, refused, taken

    return db.runQuery(ADMIT_FN, params).addCallback(split)


def take_slot(db, slot_id: str, account: str, cap: int, start_timeout: int,
              node_expiry: int = 60, callback_id: str | None = None) -> defer.Deferred:
    """Fire with ``(taken, in_use)``: whether the slot was taken and the live slots now.

    One round trip: ``cb_take_slot`` (sql/031, 032) drops the account's dead slots, counts the
    live ones and takes one if below ``cap``, under the account's advisory lock. A slot taken
    with ``callback_id`` is bound at once; it stays live while young even before the
    callback's session row exists, for ``start_timeout`` seconds. The slot's time is the
    database's clock, the one every node judges it by.
    """
    d = db.runQuery(TAKE_SLOT_FN, (slot_id, account, cap, int(start_timeout), node_expiry,
                                   callback_id))
    d.addCallback(lambda rows: (bool(rows[0][0]), int(rows[0][1])))
    return d


def count_slots(db, account: str, start_timeout: int, node_expiry: int = 60) -> defer.Deferred:
    """Fire with the number of the account's live slots (unbound ones live ``start_timeout`` s)."""
    d = db.runQuery(COUNT_LIVE_SLOTS, {"account": account, "start_timeout": int(start_timeout),
                                       "node_expiry": node_expiry})
    d.addCallback(lambda rows: int(rows[0][0]))
    return d


def bind_slot(db, slot_id: str, callback_id: str) -> defer.Deferred:
    """Record which callback holds a slot."""
    return db.runOperation(BIND_SLOT, (callback_id, slot_id))


def release_slot(db, slot_id: str) -> defer.Deferred:
    """Free a slot by its id (the callback was not started)."""
    return db.runOperation(RELEASE_SLOT, (slot_id,))


def release_callback(db, callback_id: str) -> defer.Deferred:
    """Free the slot a callback holds; fire with the account id, or None if it held none."""
    d = db.runQuery(RELEASE_CALLBACK, (callback_id,))
    d.addCallback(lambda rows: rows[0][0] if rows else None)
    return d


def prune_slots(db, older_than: int) -> defer.Deferred:
    """Delete slots taken more than ``older_than`` seconds ago (a node died holding them)."""
    return db.runOperation(PRUNE_SLOTS, (int(older_than),))


class ILimitStore(Interface):
    """Shared counters and slots for abuse protection (PostgreSQL, or a fake in tests)."""

    def count_hits(keys, window_start, previous_start):
        """Add one hit to each ``(kind, key)`` counter of the window.

        A Deferred ``{kind: (hits now, hits in the window that started at previous_start)}``.
        """

    def peek_hits(keys, window_start, previous_start):
        """Like ``count_hits`` but counting nothing (absent counters are ``(0, 0)``)."""

    def count_and_peek(keys, peek_keys, window_start, previous_start):
        """``count_hits(keys)`` and ``peek_hits(peek_keys)`` at once: a Deferred
        ``(counted, peeked)`` (one round trip and one transaction in PostgreSQL)."""

    def refund_hits(keys, window_start):
        """Take back one hit of each ``(kind, key)`` counter of the window."""

    def prune_counters(before):
        """Forget windows that started before ``before``."""

    def admit(keys, peek_keys, window_start, previous_start, elapsed, caps, claim=None):
        """``count_and_peek``, then ``take_slot(claim)`` only if no cap in ``caps`` refuses
        (``sliding_count`` at ``elapsed`` seconds into the window): a Deferred
        ``(counted, peeked, refused, taken)``, ``taken`` None when no slot was tried. One
        round trip and one transaction in PostgreSQL."""

    def take_slot(slot_id, account, cap, start_timeout, callback_id=None):
        """A Deferred ``(taken, in_use)``; takes a slot only while fewer than ``cap`` are live.

        A slot is live for ``start_timeout`` seconds while its callback is not yet written,
        or while bound to a callback in progress. ``callback_id`` binds it at once. Slot
        times are the store's own clock (PostgreSQL's ``now()``), one for every node."""

    def count_slots(account, start_timeout):
        """A Deferred count of the account's live slots."""

    def bind_slot(slot_id, callback_id):
        """Record which callback holds a slot."""

    def release_slot(slot_id):
        """Free a slot by its id."""

    def release_callback(callback_id):
        """Free a callback's slot; a Deferred account id or None."""

    def prune_slots(older_than):
        """Forget slots taken more than ``older_than`` seconds ago."""

    def shared_secret(name, candidate):
        """A Deferred secret stored under ``name`` (``candidate`` becomes it if none is)."""


@implementer(ILimitStore)
class PostgresLimitStore:
    """``ILimitStore`` over an ``IDatabase``: the functions above bound to one pool."""

    def __init__(self, db):
        self.db = db

    def count_hits(self, keys, window_start, previous_start):
        """See ``ILimitStore``."""
        return count_hits(self.db, keys, window_start, previous_start)

    def peek_hits(self, keys, window_start, previous_start):
        """See ``ILimitStore``."""
        return peek_hits(self.db, keys, window_start, previous_start)

    def count_and_peek(self, keys, peek_keys, window_start, previous_start):
        """See ``ILimitStore``."""
        return count_and_peek(self.db, keys, peek_keys, window_start, previous_start)

    def refund_hits(self, keys, window_start):
        """See ``ILimitStore``."""
        return refund_hits(self.db, keys, window_start)

    def prune_counters(self, before):
        """See ``ILimitStore``."""
        return prune_counters(self.db, before)

    def admit(self, keys, peek_keys, window_start, previous_start, elapsed, caps, claim=None):
        """See ``ILimitStore``."""
        return admit(self.db, keys, peek_keys, window_start, previous_start, elapsed, caps, claim)

    def take_slot(self, slot_id, account, cap, start_timeout, callback_id=None):
        """See ``ILimitStore``."""
        return take_slot(self.db, slot_id, account, cap, start_timeout, callback_id=callback_id)

    def count_slots(self, account, start_timeout):
        """See ``ILimitStore``."""
        return count_slots(self.db, account, start_timeout)

    def bind_slot(self, slot_id, callback_id):
        """See ``ILimitStore``."""
        return bind_slot(self.db, slot_id, callback_id)

    def release_slot(self, slot_id):
        """See ``ILimitStore``."""
        return release_slot(self.db, slot_id)

    def release_callback(self, callback_id):
        """See ``ILimitStore``."""
        return release_callback(self.db, callback_id)

    def prune_slots(self, before):
        """See ``ILimitStore``."""
        return prune_slots(self.db, before)

    def shared_secret(self, name, candidate):
        """See ``ILimitStore``."""
        return shared_secret(self.db, name, candidate)
