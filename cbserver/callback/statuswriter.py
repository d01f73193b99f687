"""Callback status rows in PostgreSQL, written in batches: one upsert per round trip.

Every status change of every callback on this node goes through one ``StatusWriter``. A
change marks the session dirty; the writer sends one ``INSERT ... ON CONFLICT DO UPDATE``
for all dirty sessions (``callbacks_store.upsert``) and, while it is in flight, collects the
next changes for the following one. A status change waits up to ``linger`` seconds (0.2) for
others to share its batch: other nodes see a callback's progress that much later (this
node answers from memory), and the database sees a few statements a second instead of
several per callback. Each batch holds the newest status of each session, and batches are
written one after the other, so no row is ever overwritten by an older status.

The crash-recovery rows (``cbserver.callback.recovery``) ride the same batches when a
``RecoveryKeeper`` is given this writer: ``save_recovery`` queues a callback's newest
snapshot (a leg answered) and ``drop_recovery`` has its row deleted by the batch that stores
its final status, in the same statement (``callbacks_store.upsert_with_recovery``): no
statement nor commit of their own. A snapshot waits at most ``linger`` for its batch, like a
status; one whose batch failed is retried with the batch (never given up while the callback
runs), and the delete is retried with the final status it rides with.

A new callback's first row does not linger: ``store(..., new=True)`` has it written at the
end of the reactor turn (with whatever else is queued) and returns a Deferred that fires
once it is committed (the web layer answers only then, so any node can report the callback
at once). A failed batch is retried after ``retry_delay`` seconds, up to
``max_attempts`` times per status, except that a new callback's first row is not retried:
its request is refused instead, and a final status (``ended``/``refused``) is retried until
it is stored: it is what every node reports once this node forgets the callback, and what
frees the account's concurrency slot (``cb_slot_live``), so an outage longer than a few
retries must not leave the row saying ``connected`` for ever. While the pool is down the
retry waits for it to be ready again instead of failing once a second.
"""

from __future__ import annotations

import json

from twisted.internet import defer

from cbserver.callback.api import FINAL_STATUSES, CallbackSnapshot
from cbserver.db import callbacks_store
from cbserver.logs import Logger


class StatusWriter:
    """Batches callback status rows; see the module docstring.

    ``store`` takes anything with an ``id`` and a ``snapshot()`` returning a
    ``CallbackSnapshot`` (a ``CallbackSession``); the snapshot is taken when the batch is
    sent, so each row holds the newest status.
    """

    log = Logger()

    def __init__(self, db, clock, node: str, linger: float = 0.2, retry_delay: float = 1.0,
                 max_attempts: int = 5):
        self.db = db
        self.clock = clock
        self.node = node
        self.linger = linger
        self.retry_delay = retry_delay
        self.max_attempts = max_attempts
        self._dirty: dict[str, tuple] = {}  # session id -> (session, attempts so far)
        self._confirm: dict[str, list[defer.Deferred]] = {}  # first rows awaited by a request
        self._inflight: frozenset[str] | None = None
        self._call = None
        self._waiters: dict[str, list[defer.Deferred]] = {}
        self._awaiting_db = False  # a retry waits for the pool's when_ready()
        self._recovery: dict[str, dict] = {}  # session id -> newest recovery snapshot to save
        self._drop: set[str] = set()  # recovery rows to delete with the final status

    def save_recovery(self, session, data: dict) -> None:
        """Queue the crash-recovery snapshot ``data`` of ``session`` (a leg answered); it is
        saved with the next batch, which also carries the session's current status."""
        self._recovery[session.id] = data
        self._drop.discard(session.id)
        self._dirty.setdefault(session.id, (session, 0))
        self._kick(self.linger)

    def drop_recovery(self, session) -> None:
        """The callback ended (its final status queued): delete its recovery row in the batch
        that stores the final status (a snapshot not saved yet is never saved)."""
        self._recovery.pop(session.id, None)
        self._drop.add(session.id)
        self._dirty.setdefault(session.id, (session, 0))
        self._kick(self.linger)

    def store(self, session, new: bool = False) -> defer.Deferred | None:
        """Queue the session's current status; with ``new``, a Deferred for its first row."""
        self._dirty[session.id] = (session, 0)
        d = None
        if new:
            d = defer.Deferred()
            self._confirm.setdefault(session.id, []).append(d)
        self._kick(0 if new else self.linger)
        return d

    def settled(self, session_id: str) -> defer.Deferred:
        """Fires once no status of the session is queued or in flight."""
        if not self._pending(session_id):
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._waiters.setdefault(session_id, []).append(waiter)
        return waiter

    def pending(self) -> list[str]:
        """Ids of the sessions with a status queued or in flight."""
        return sorted(set(self._dirty) | set(self._inflight or ()))

    def _pending(self, session_id: str) -> bool:
        return session_id in self._dirty or (self._inflight is not None and session_id in self._inflight)

    def _kick(self, delay: float) -> None:
        """Have a batch start within ``delay`` (unless one is in flight: it kicks when done)."""
        if self._inflight is not None or not self._dirty:
            return
        if self._awaiting_db and not self._confirm:
            return  # the pool's return kicks; a new callback's first row is tried at once
        if self._call is None:
            self._call = self.clock.callLater(delay, self._flush)
        elif self._call.getTime() > self.clock.seconds() + delay:
            # A new call rather than reset(): the reactor moves a call made sooner by finding
            # it in its heap with list.index, a scan of every pending timer (thousands under
            # load: RTP, SIP and session timers); cancel and push are O(log n).
            self._call.cancel()
            self._call = self.clock.callLater(delay, self._flush)

    def _row(self, snap: CallbackSnapshot) -> tuple:
        return (snap.id, snap.application, snap.mode, snap.account_id, snap.phone,
                snap.destination, snap.status, json.dumps(snap.state), self.node,
                self.db.instance_id)

    def _flush(self) -> None:
        self._call = None
        batch, self._dirty = self._dirty, {}
        confirms = {sid: self._confirm.pop(sid) for sid in batch if sid in self._confirm}
        self._inflight = frozenset(batch)
        # Each session's status as it is now: an immutable snapshot per row.
        snaps = {sid: session.snapshot() for sid, (session, _) in batch.items()}
        rows = [self._row(snap) for snap in snaps.values()]
        saves = {sid: self._recovery.pop(sid) for sid in batch if sid in self._recovery}
        drops = [sid for sid in batch if sid in self._drop and snaps[sid].status in FINAL_STATUSES]
        self._drop.difference_update(drops)
        retry = [False]

        def stored(_):
            for waiters in confirms.values():
                for w in waiters:
                    w.callback(None)

        def failed(f):
            for waiters in confirms.values():
                for w in waiters:
                    w.errback(f)
            # The recovery writes go again with the next batch, unless overtaken meanwhile (a
            # newer snapshot queued, or the callback ended: its delete is queued instead).
            for sid, data in saves.items():
                if sid not in self._drop:
                    self._recovery.setdefault(sid, data)
            self._drop.update(drops)
            again = 0
            for sid, (session, attempts) in batch.items():
                if sid in confirms or sid in self._dirty:
                    continue  # refused instead, or a newer status is queued already
                # A final status is never given up (see the module docstring), nor a recovery
                # row while its callback runs.
                if (snaps[sid].status in FINAL_STATUSES or sid in self._recovery
                        or attempts + 1 < self.max_attempts):
                    self._dirty[sid] = (session, attempts + 1)
                    again += 1
            retry[0] = bool(again)
            self.log.warn("{n} callback status rows not stored ({again} to retry): {err}",
                          n=len(rows), again=again, err=f.getErrorMessage())

        def done(_):
            self._inflight = None
            for sid in list(self._waiters):
                if not self._pending(sid):
                    for w in self._waiters.pop(sid):
                        w.callback(None)
            if retry[0] and not self.db.ready:
                self._await_db()
                return
            self._kick(self.retry_delay if retry[0] else 0 if self._confirm else self.linger)

        saved = [(sid, self.node, self.db.instance_id, json.dumps(data)) for sid, data in saves.items()]
        callbacks_store.upsert_with_recovery(self.db, rows, saved, drops).addCallbacks(
            stored, failed).addBoth(done)

    def _await_db(self) -> None:
        """Retry once the pool is ready again (one wait at a time; new rows queue meanwhile)."""
        if self._awaiting_db:
            return
        self._awaiting_db = True

        def back(_):
            self._awaiting_db = False
            self._kick(0)

        self.db.when_ready().addCallback(back).addErrback(
            lambda f: self.log.failure("status writer: waiting for the database", failure=f))
