"""Crash recovery: the calls of a node that died are ended, billed and closed by a live node.

While a callback runs, ``RecoveryKeeper`` stores, each time a leg answers, what another
process needs to end and bill it (``snapshot``): each answered leg's dialog (RFC 3261 12),
the trunk target and transport it was reached through, its answer time, and the xDR it would
get, with the rate selected at its connect time. The write is asynchronous (the call never
waits for it) and the row is deleted when the callback ends normally (a delete that failed, in
a database outage or because the node was killed right after the end, is done by the next
sweep of any node once the callback's final status is stored: ``remove_ended``). On a node
the writes ride the status writer's batches (``StatusWriter.save_recovery``): a snapshot is
committed at most the writer's ``linger`` (0.2 s) plus one round trip after its leg answered,
in the statement that stores the callback's status, and the delete is in the statement that
stores its final status (so the row never outlives a stored final status).

``RecoveryService`` runs on every node: every ``interval`` seconds, and at start-up, it asks
the store for the callbacks left by a dead process: one whose heartbeat is older than
``stale_after`` seconds (both are settings, ``[recovery]``), or an earlier process of this
very node name (``server.node``, the identity that survives a restart: a node that restarts
knows its predecessor is dead). For each, in one transaction that locks the row (``FOR UPDATE
SKIP LOCKED``: several survivors racing recover it once), the store writes both legs' xDRs
billed up to the dead process's last heartbeat with the reason ``node_lost``
(``lost_records``), applies them to the balance, releases the holds and the concurrency slot,
closes the session row (status ``ended``, cause ``node_lost``: ``closed_state``) and deletes
the row. Then this node sends BYE on every leg that was up (``IUserAgent.end_recovered``). A
dead node's callbacks that had no leg answered (no row: nothing to end nor bill) are closed
the same way, without xDRs.

The money not billed per call is at most the time between the last heartbeat and the crash:
one heartbeat interval (the pool's ``ping_interval``, 5 s).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import fields
from decimal import Decimal

from twisted.application import service
from twisted.internet import defer, task
from zope.interface import Interface, classImplements

from cbserver.billing.model import OffPeakPeriod, OffPeakWindow, Rate, TariffRates
from cbserver.billing.rating import LegPricer
from cbserver.billing.xdr import LegRecord, leg_pricer, leg_record
from cbserver.callback.periodic import Periodic
from cbserver.config import RecoveryConfig
from cbserver.db.recovery_store import PostgresRecoveryStore
from cbserver.logs import Logger

log = Logger()

CAUSE = "node_lost"
# The [recovery] settings' defaults (cbserver.config.RecoveryConfig). Its stale_after is the
# cluster's one rule of whether a process runs, the node lists' too (config.NODE_STALE_AFTER),
# so no number of it is written here.
DEFAULTS = RecoveryConfig()
SNAPSHOT_VERSION = 1


class IRecoveryStore(Interface):
    """Where the recovery rows live (PostgreSQL: ``cbserver.db.recovery_store``)."""

    def save(session_id, node, instance_id, data):
        """Store (insert or replace) the recovery row of a callback; fire when stored."""

    def remove(session_id):
        """Delete the recovery row of a callback that ended normally."""

    def remove_ended():
        """Delete every row whose callback's final status is stored (a delete that did not
        reach the database, or a node killed between a callback's end and its delete); fire
        with their ids. Writes no xDR: a final status means the xDRs are stored or spooled."""

    def orphans(node, instance_id, stale_after):
        """Fire with the ids of the callbacks left by dead processes: every row of another
        process of ``node``, and every row whose process was not seen for ``stale_after``
        seconds (never this process's, ``instance_id``)."""

    def close_unanswered(node, instance_id, stale_after, reason):
        """Close the callbacks of dead processes (as ``orphans`` decides) that have no
        recovery row (no leg answered: nothing to end nor bill): status ``ended``, cause
        ``node_lost`` with ``reason``, holds and slots released; fire with their ids."""

    def settle(session_id, node, instance_id, stale_after, settle):
        """Recover one callback once, in one transaction.

        Lock its row if it is still an orphan and nobody else holds it (else fire with None);
        call ``settle(data, last_seen, state)`` (``last_seen``: the dead process's last
        heartbeat, epoch seconds; ``state``: the session row's status dict or None), which
        returns ``(records, new_state)``; write the ``LegRecord``s as the xDR writer does
        (balances, holds released), close the session row with ``new_state``, release the
        session's holds and slots, delete the row; fire with ``data``. A row whose session
        row is already final is only deleted (``settle`` not called); fire with None.
        """


classImplements(PostgresRecoveryStore, IRecoveryStore)  # db cannot import this layer


# -- what is stored --------------------------------------------------------------------------

def _plain(value):
    """A Rate/pricer field as a JSON value."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, str):
        return str(value)  # a StrEnum as its plain value
    return value


_DECIMALS = ("first_price", "next_price", "offpeak_first_price", "offpeak_next_price")
_RATE_FIELDS = tuple(f.name for f in fields(Rate) if f.init)  # what Rate(**values) takes back


def pricer_to_dict(pricer: LegPricer) -> dict:
    """A leg's bound rate as JSON: the rate, the period at connect, the tariff's rules."""
    tariff = pricer.tariff
    offpeak = None
    if tariff.offpeak is not None:
        offpeak = {"timezone": tariff.offpeak.timezone, "windows": [w.text for w in tariff.offpeak.windows]}
    return {"currency": tariff.currency, "name": tariff.name, "split": tariff.split_at_boundary,
            "offpeak": offpeak, "connect_time": pricer.connect_time.isoformat(), "peak": pricer.peak,
            "rate": {name: _plain(getattr(pricer.rate, name)) for name in _RATE_FIELDS}}


def pricer_from_dict(data: dict) -> LegPricer:
    """The inverse of ``pricer_to_dict``: prices any duration exactly as the original."""
    values = dict(data["rate"])
    for name in _DECIMALS:
        if values.get(name) is not None:
            values[name] = Decimal(values[name])
    values["effective_from"] = dt.datetime.fromisoformat(values["effective_from"])
    rate = Rate(**values)
    offpeak = None
    if data["offpeak"] is not None:
        offpeak = OffPeakPeriod(data["offpeak"]["timezone"],
                                tuple(OffPeakWindow.parse(w) for w in data["offpeak"]["windows"]))
    tariff = TariffRates(data["currency"], (rate,), offpeak, data["split"], data["name"])
    return LegPricer(tariff, rate, dt.datetime.fromisoformat(data["connect_time"]), data["peak"])


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def snapshot(session) -> dict | None:
    """What a live node needs to end and bill ``session``'s answered legs; None if none is.

    Both legs are priced under the session's current authorization (legB's re-authorization
    once it is placed), as the xDRs of a normal end would be. A node lost is not legB
    failing: legA is priced by its own tariff, never by ``CALLBACK_FAIL``.
    """
    auth = session.auth
    legs = []
    for leg in (session.a, session.b):
        state = getattr(leg.call, "dialog_state", lambda: None)() if leg.call is not None else None
        if leg.answered_at is None or state is None:
            continue
        connect = _utc(leg.answered_at)
        # The rate leg_record selects for the leg at its connect time, selected once for both
        # the template and the stored pricer.
        priced = leg_pricer(auth, leg.name, connect)
        template = leg_record(auth, leg.name, trigger_mode=session.request.mode, node=session.ctx.node,
                              disconnect_time=connect, connect_time=connect, duration=0,
                              sip_reason=CAUSE, call_id=leg.call.call_id,
                              instance_id=session.ctx.instance_id, priced=priced)
        legs.append(dict(state, leg=leg.name, answered_at=leg.answered_at, record=template.to_dict(),
                         pricer=pricer_to_dict(priced[1])))
    if not legs:
        return None
    return {"version": SNAPSHOT_VERSION, "session_id": session.id, "account_id": auth.account.id,
            "customer_id": str(auth.account.customer_id), "currency": auth.currency,
            "mode": session.request.mode, "phone": session.request.phone,
            "legb_number": session.b.number or "", "access_code": session.app.access_code,
            "node": session.ctx.node, "instance_id": session.ctx.instance_id, "legs": legs}


# -- what recovery writes --------------------------------------------------------------------

def lost_records(data: dict, last_seen: float) -> list[LegRecord]:
    """legA's and legB's xDRs of a callback whose node died, billed up to ``last_seen``.

    An answered leg is billed from its answer to the last heartbeat, rounded up to the whole
    second as ``Leg.duration`` does, by the rate stored with it; a leg never answered gets a
    zero record that says what happened.
    """
    answered = {leg["leg"]: leg for leg in data["legs"]}
    out = []
    for name in ("A", "B"):
        leg = answered.get(name)
        if leg is None:
            out.append(LegRecord(
                session_id=data["session_id"], leg=name, account_id=data["account_id"],
                cli=data["phone"], cld=data["legb_number"] if name == "B" else data["phone"],
                node=data["node"], disconnect_time=_utc(last_seen), currency=data["currency"],
                trigger_mode=data["mode"], customer_id=data["customer_id"],
                access_code=data["access_code"], sip_reason=f"not answered: {CAUSE}",
                instance_id=data["instance_id"]))
            continue
        end = max(last_seen, leg["answered_at"])
        duration = max(0, math.ceil(end - leg["answered_at"] - 1e-6))
        charge = pricer_from_dict(leg["pricer"]).charge(duration)
        values = dict(leg["record"], duration=charge.duration, charged_seconds=charge.charged_seconds,
                      amount=format(charge.amount, "f"), peak=charge.peak,
                      disconnect_time=_utc(end).isoformat(), sip_reason=CAUSE)
        out.append(LegRecord.from_dict(values))
    return out


def closed_state(state: dict | None, data: dict, records: list[LegRecord], now: float) -> dict:
    """The session row's status dict once recovered: ended, cause ``node_lost``, charges."""
    state = dict(state or {"id": data["session_id"], "mode": data["mode"], "legs": {}})
    total = sum((r.amount for r in records), Decimal(0))
    answered = {leg["leg"] for leg in data["legs"]}
    legs = {}
    for name in ("A", "B"):
        leg = dict((state.get("legs") or {}).get(name) or {})
        if name in answered:
            leg.update(state="ended", reason=CAUSE)
        elif leg.get("state") in ("calling", "ringing"):
            leg.update(state="failed", reason=CAUSE)
        legs[name] = leg
    state.update(status="ended", legs=legs,
                 cause={"code": CAUSE, "sip_status": None,
                        "reason": f"node {data['node']} lost; billed up to its last heartbeat"},
                 charges={"A": format(records[0].amount, "f"), "B": format(records[1].amount, "f"),
                          "total": format(total, "f"), "currency": records[0].currency},
                 updated_at=_utc(now).isoformat(timespec="milliseconds"))
    state.pop("node_lost", None)
    return state


# -- the session's side ----------------------------------------------------------------------

class RecoveryKeeper:
    """Writes and deletes a session's recovery row; the session calls it on answer and end.

    Writes of one session are chained, so a delete never overtakes the write it follows;
    none delays the call. A save that fails (PostgreSQL away) is tried again every
    ``retry_delay`` seconds with a fresh snapshot while the callback goes on (``clock``; none:
    not retried): a node killed after the database came back must still find its answered
    legs recoverable. A delete that fails is logged and leaves a stale row, which the next
    sweep of any node removes once the callback's final status is stored
    (``IRecoveryStore.remove_ended``). That is the path through ``store``; with a ``writer``
    (a ``StatusWriter``, as the server gives it) the rows ride its batches instead: a save is
    retried with them while the callback runs, and the delete goes in the statement that
    stores the final status, retried with it (``cbserver.callback.statuswriter``).
    """

    def __init__(self, store, node: str, instance_id: str, clock=None, retry_delay: float = 2.0,
                 writer=None):
        self.store = store
        # A StatusWriter: the rows ride its batches (saves retried by it) instead of a
        # statement and a commit each through ``store`` (issue 17 item 1).
        self.writer = writer
        self.node = node
        self.instance_id = instance_id
        self.clock = clock
        self.retry_delay = retry_delay
        self._chains: dict[str, defer.Deferred] = {}
        self._saved: set[str] = set()

    def answered(self, session) -> None:
        """A leg answered: store what ends and bills the answered legs."""
        try:
            data = snapshot(session)
        except Exception:  # noqa: BLE001 - recovery data must never break the call
            log.failure("recovery snapshot callback_id={callback_id}", callback_id=session.id)
            return
        if data is None:
            return
        self._saved.add(session.id)
        if self.writer is not None:
            self.writer.save_recovery(session, data)
            return
        self._then(session.id, "storing", lambda: self._save(session, data))

    def _save(self, session, data) -> defer.Deferred:
        d = self.store.save(session.id, self.node, self.instance_id, data)

        def again(f):
            if self.clock is None or session.id not in self._saved:
                return f  # not retried, or the callback ended meanwhile (its delete follows)
            log.warn("recovery row not stored callback_id={callback_id}: {err}; trying again in "
                     "{delay} s", callback_id=session.id, err=f.getErrorMessage(), delay=self.retry_delay)
            return task.deferLater(self.clock, self.retry_delay, self._fresh, session, data)

        return d.addErrback(again)

    def _fresh(self, session, data) -> defer.Deferred:
        """Save again, with what the session is now (a leg may have answered meanwhile)."""
        if session.id not in self._saved:
            return defer.succeed(None)
        try:
            data = snapshot(session) or data
        except Exception:  # noqa: BLE001 - keep the earlier snapshot
            log.failure("recovery snapshot callback_id={callback_id}", callback_id=session.id)
        return self._save(session, data)

    def ended(self, session) -> None:
        """The callback ended normally (its xDRs written or refused): drop its row."""
        if session.id in self._saved:
            self._saved.discard(session.id)
            if self.writer is not None:
                self.writer.drop_recovery(session)  # with its final status, queued just before
                return
            self._then(session.id, "deleting", lambda: self.store.remove(session.id))

    def pending(self) -> defer.Deferred:
        """Fires once every write queued so far is done (for tests and shutdown)."""
        chains = list(self._chains.values())
        if self.writer is not None:
            chains += [self.writer.settled(sid) for sid in self.writer.pending()]
        return defer.DeferredList(chains, consumeErrors=True)

    def _then(self, sid: str, what: str, op) -> None:
        previous = self._chains.get(sid, defer.succeed(None))
        d = previous.addCallback(lambda _: op())
        d.addErrback(lambda f: log.warn("recovery row not {what} callback_id={callback_id}: {err}",
                                        what=what, callback_id=sid, err=f.getErrorMessage()))
        self._chains[sid] = d

        def forget(_):
            if self._chains.get(sid) is d:
                del self._chains[sid]

        d.addCallback(forget)


# -- the survivor's side ---------------------------------------------------------------------

class RecoveryService(service.Service):
    """Looks for dead nodes' callbacks and recovers them; see the module docstring.

    ``sip`` has the UA as ``.ua`` once started (``IUserAgent.end_recovered`` sends the BYEs);
    ``ready`` says whether the database is usable now (no sweep while it is not).
    """

    name = "recovery"

    def __init__(self, store, sip, clock, node: str, instance_id: str,
                 interval: float = DEFAULTS.interval, stale_after: int = DEFAULTS.stale_after,
                 ready=lambda: True):
        self.store = store
        self.sip = sip
        self.clock = clock
        self.node = node
        self.instance_id = instance_id
        self.interval = interval
        self.stale_after = stale_after
        self.ready = ready
        self._poller: Periodic | None = None
        self._sweeping = False
        self.byes: list[defer.Deferred] = []  # the BYEs sent, each firing with its status

    def startService(self) -> None:
        """Sweep now (this node's own leftovers from before a restart) and then periodically."""
        super().startService()
        self._poller = Periodic("crash recovery", self.sweep, self.clock, self.interval)
        self._poller.startService()

    def stopService(self):
        """Stop looking (a sweep in flight finishes on its own)."""
        super().stopService()
        if self._poller is not None:
            self._poller.stopService()
            self._poller = None

    def sweep(self) -> defer.Deferred:
        """Recover every callback a dead process left; fires with how many were recovered."""
        if self._sweeping or not self.ready() or getattr(self.sip, "ua", None) is None:
            return defer.succeed(0)
        self._sweeping = True
        d = self._sweep()

        def done(result):
            self._sweeping = False
            return result

        d.addBoth(done)
        d.addErrback(lambda f: log.warn("crash recovery sweep failed: {err}", err=f.getErrorMessage()))
        return d

    @defer.inlineCallbacks
    def _sweep(self):
        stale = yield self.store.remove_ended()
        if stale:
            log.info("removed {n} recovery rows of callbacks that had ended: {ids}", n=len(stale),
                     ids=" ".join(stale))
        ids = yield self.store.orphans(self.node, self.instance_id, self.stale_after)
        recovered = 0
        for sid in ids:
            try:
                data = yield self.store.settle(sid, self.node, self.instance_id, self.stale_after,
                                               self._settle)
            except Exception as e:  # noqa: BLE001 - one callback must not stop the others
                log.warn("crash recovery of callback_id={callback_id} failed: {err}", callback_id=sid,
                         err=e)
                continue
            if data is None:
                continue  # recovered by another node meanwhile, or its node came back
            recovered += 1
            self._end_legs(data)
        closed = yield self.store.close_unanswered(self.node, self.instance_id, self.stale_after,
                                                   "its node was lost before any leg answered")
        if closed:
            log.info("closed {n} callbacks of lost nodes that had no leg answered: {ids}",
                     n=len(closed), ids=" ".join(closed))
        return recovered + len(closed)

    def _settle(self, data: dict, last_seen: float, state: dict | None):
        """The records and the closed status of one dead callback (run in the store's
        transaction)."""
        records = lost_records(data, last_seen)
        log.info("recovering callback_id={callback_id} of node {node}: billed up to its last "
                 "heartbeat, {legs} legs to end", callback_id=data["session_id"], node=data["node"],
                 legs=len(data["legs"]))
        return records, closed_state(state, data, records, self.clock.seconds())

    def _end_legs(self, data: dict) -> None:
        ua = self.sip.ua
        for leg in data["legs"]:
            d = ua.end_recovered(leg["dialog"], leg["destination"])
            self.byes.append(d)
            d.addBoth(lambda result, d=d: (self.byes.remove(d) if d in self.byes else None, result)[1])
