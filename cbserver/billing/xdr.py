"""Call detail records: the ``LegRecord`` of one finished leg and how it is built from a call.

``leg_record(auth, ...)`` prices a finished leg with the tariff its authorization selected
(legA by the ``CALLBACK_FAIL`` tariff when legB failed and the instance charges specially)
and returns the ``LegRecord`` that ``ICallRecorder.record`` stores. Times are UTC with
millisecond precision (truncated); money is ``Decimal`` with 5 places.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import uuid
from dataclasses import dataclass, fields
from decimal import Decimal

from twisted.application import service
from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from cbserver.billing.model import NoRateError
from cbserver.billing.rating import price_leg
from cbserver.billing.spool import Spool
from cbserver.errors import ConcurrentWrite, DatabaseUnavailable, TransactionAborted
from cbserver.logs import Logger

TRIGGER_MODES = ("simple", "extended", "hosted")


class InvalidLegRecord(ValueError):
    """A leg record with an impossible field (``field`` names it)."""

    def __init__(self, field_name: str, reason: str):
        self.field = field_name
        super().__init__(f"{field_name}: {reason}")


class ICallRecorder(Interface):
    """Stores finished legs: durably (PostgreSQL, or the local spool while it is away)."""

    def record(leg):
        """Fire once ``leg`` (a ``LegRecord``) is durably stored; idempotent on (session, leg)."""


def to_ms(value: dt.datetime | None) -> dt.datetime | None:
    """``value`` in UTC, truncated to whole milliseconds."""
    if value is None:
        return None
    value = value.astimezone(dt.UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class LegRecord:
    """One leg of one callback, as stored in ``xdrs``."""

    session_id: str
    leg: str
    account_id: str
    cli: str
    cld: str
    node: str
    disconnect_time: dt.datetime
    currency: str
    trigger_mode: str
    duration: int = 0
    charged_seconds: int = 0
    amount: Decimal = Decimal("0.00000")
    connect_time: dt.datetime | None = None
    customer_id: str | None = None
    access_code: str = ""
    tariff_id: int | None = None
    tariff_name: str | None = None
    prefix: str | None = None
    rate_id: int | None = None
    rate_version: int | None = None
    peak: bool | None = None
    sip_code: int | None = None
    sip_reason: str = ""
    # For matching the carrier's CDR and a SIP trace: the leg's SIP Call-ID (None: never
    # placed) and the id of the process that ran it (``server_nodes.instance_id``). Last and
    # defaulted, so spool lines written before they existed still replay (as None).
    call_id: str | None = None
    instance_id: str | None = None

    def __post_init__(self) -> None:
        if self.leg not in ("A", "B"):
            raise InvalidLegRecord("leg", f"must be 'A' or 'B', got {self.leg!r}")
        if self.trigger_mode not in TRIGGER_MODES:
            raise InvalidLegRecord("trigger_mode", f"must be one of {TRIGGER_MODES}")
        if not self.session_id or not self.account_id:
            raise InvalidLegRecord("session_id", "session_id and account_id are required")
        for name in ("disconnect_time", "connect_time"):
            value = getattr(self, name)
            if value is None and name == "connect_time":
                continue
            if not isinstance(value, dt.datetime) or value.utcoffset() is None:
                raise InvalidLegRecord(name, "must be a timezone-aware datetime")
            object.__setattr__(self, name, to_ms(value))
        if isinstance(self.amount, float) or not isinstance(self.amount, Decimal | int):
            raise InvalidLegRecord("amount", f"must be a Decimal, got {self.amount!r}")
        object.__setattr__(self, "amount", Decimal(self.amount))
        if self.amount < 0 or self.duration < 0 or self.charged_seconds < 0:
            raise InvalidLegRecord("amount", "amount, duration and charged seconds must be >= 0")
        if self.duration > 0 and self.connect_time is None:
            raise InvalidLegRecord("connect_time", "a connected leg needs its connect time")
        if self.call_id is not None and not (isinstance(self.call_id, str) and self.call_id):
            raise InvalidLegRecord("call_id", f"must be a non-empty string or None, got {self.call_id!r}")
        if self.instance_id is not None:
            try:
                object.__setattr__(self, "instance_id", str(uuid.UUID(str(self.instance_id))))
            except ValueError:
                raise InvalidLegRecord("instance_id", f"must be a UUID, got {self.instance_id!r}") from None

    @property
    def key(self) -> tuple[str, str]:
        """The idempotency key: (session id, leg)."""
        return (self.session_id, self.leg)

    def to_dict(self) -> dict:
        """A JSON-ready dict (times ISO 8601, money as text): the spool's line format."""
        # Every field holds an immutable scalar (text, number, Decimal, datetime, None), so
        # a shallow copy is what ``dataclasses.asdict``'s deep copy gives, at a fraction of
        # its cost (two records per callback, plus the crash-recovery snapshot's).
        out = {name: getattr(self, name) for name in _FIELD_NAMES}
        for name in ("disconnect_time", "connect_time"):
            if out[name] is not None:
                out[name] = out[name].isoformat(timespec="milliseconds")
        out["amount"] = format(self.amount, "f")
        return out

    @classmethod
    def from_dict(cls, data: dict) -> LegRecord:
        """The inverse of ``to_dict``."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for name in ("disconnect_time", "connect_time"):
            if values.get(name) is not None:
                values[name] = dt.datetime.fromisoformat(values[name])
        values["amount"] = Decimal(values["amount"])
        return cls(**values)


_FIELD_NAMES = tuple(f.name for f in fields(LegRecord))


def leg_pricer(auth, leg: str, connect_time: dt.datetime | None, legb_failed: bool = False):
    """``(tariff, pricer, by_callback_fail)``: what prices leg ``leg`` of ``auth`` in its xDR.

    legA by the ``CALLBACK_FAIL`` tariff when ``legb_failed`` and the authorization carries
    one; the rate selected at the leg's real ``connect_time`` (the authorized one if that
    rate has vanished since, or the leg never connected). The session's cut prices the legs
    up with this same pricer, so what it lets through is what the xDRs charge.
    """
    tariff = auth.tariff
    pricer = auth.leg_a if leg == "A" else auth.leg_b
    failed_a = leg == "A" and legb_failed and auth.fail_leg_a is not None
    if failed_a:
        tariff, pricer = auth.fail_tariff, auth.fail_leg_a
    number = auth.request.cli if leg == "A" else auth.request.cld
    if connect_time is not None:
        try:
            pricer = price_leg(tariff.rates, number, connect_time)
        except NoRateError:
            pass  # the rate vanished since authorization: keep the authorized one
    return tariff, pricer, failed_a


def leg_record(auth, leg: str, *, trigger_mode: str, node: str, disconnect_time: dt.datetime,
               connect_time: dt.datetime | None = None, duration: int = 0, sip_code: int | None = None,
               sip_reason: str = "", legb_failed: bool = False, call_id: str | None = None,
               instance_id: str | None = None, priced: tuple | None = None) -> LegRecord:
    """Price one finished leg of an authorized call and return its ``LegRecord``.

    legA is priced by the ``CALLBACK_FAIL`` tariff when ``legb_failed`` and the authorization
    carries one (the instance's ``special_charge_if_legb_fails``). The rate is selected at the
    leg's real connect time; a leg that never connected costs nothing. ``call_id`` (the leg's
    SIP Call-ID) and ``instance_id`` (the process that ran it) are recorded as given.
    ``priced``: ``leg_pricer(auth, leg, connect_time, legb_failed)`` when the caller has it
    already (the crash-recovery snapshot stores the pricer too), so the rate is selected once.
    """
    tariff, pricer, failed_a = priced or leg_pricer(auth, leg, connect_time, legb_failed)
    charge = pricer.charge(duration if connect_time is not None else 0)
    return LegRecord(
        session_id=auth.request.session_id, leg=leg, account_id=auth.account.id,
        customer_id=str(auth.account.customer_id), cli=auth.request.cli, cld=auth.request.cld,
        node=node, access_code="CALLBACK_FAIL" if failed_a else auth.request.access_code,
        tariff_id=tariff.tariff_id, tariff_name=tariff.name, prefix=pricer.rate.prefix,
        rate_id=pricer.rate.rate_id, rate_version=pricer.rate.version, peak=charge.peak,
        connect_time=connect_time, disconnect_time=disconnect_time, duration=charge.duration,
        charged_seconds=charge.charged_seconds, amount=charge.amount, currency=tariff.rates.currency,
        sip_code=sip_code, sip_reason=sip_reason, trigger_mode=trigger_mode, call_id=call_id,
        instance_id=instance_id)


class XdrRejected(Exception):
    """PostgreSQL refused a leg for a reason a retry cannot fix; it was kept in the reject file."""


def _unavailable(failure) -> bool:
    """True when a failure means PostgreSQL is away (spool), not that the data is wrong.

    The store (``IXdrStore``) turns the driver's lost connections, and transactions whose
    rollback failed, into ``DatabaseUnavailable``. A batch PostgreSQL still aborts (deadlock,
    serialization failure) after ``_transaction``'s retries is spooled too, to be replayed.
    """
    return failure.check(DatabaseUnavailable, TransactionAborted) is not None


def _retryable(failure) -> bool:
    """True for a deadlock, a serialization failure, or another writer storing the same legs."""
    return failure.check(ConcurrentWrite) is not None


@implementer(ICallRecorder)
class XdrWriter(service.Service):
    """The asynchronous xDR writer: group commit to PostgreSQL, spool while it is away.

    ``record`` queues a leg; at the end of the reactor turn, whenever fewer than
    ``max_in_flight`` transactions are in flight, everything queued (up to ``batch_max``) goes
    in one transaction (``IXdrStore.write_batch``).
    If PostgreSQL is unreachable the batch, and every leg after it, is appended to the spool;
    when the pool is ready again the spool is replayed in order, and only once it is empty do
    legs go straight to PostgreSQL again. ``record``'s Deferred fires when the leg is in PostgreSQL or fsync'd
    in the spool.
    """

    log = Logger()
    name = "xdr-writer"

    def __init__(self, store, clock, spool: Spool, batch_max: int = 500, retry_delay: float = 1.0,
                 max_in_flight: int = 2):
        self.store = store  # IXdrStore
        self.clock = clock
        self.spool = spool
        self.batch_max = batch_max
        self.retry_delay = retry_delay
        self._queue: collections.deque = collections.deque()
        self.max_in_flight = max_in_flight
        self._busy = 0  # transactions (or the replay) in flight
        self._idle_waiters: list[defer.Deferred] = []
        self._spooling = False
        self._replay_pending = False
        self._retry_call = None
        self._pump_call = None
        self.written = 0
        self.rejected = 0

    # -- life cycle ---------------------------------------------------------------------

    def startService(self) -> None:
        """Open the spool; replay what a previous run left behind once the pool is ready."""
        super().startService()
        if self.spool.open():
            self.log.warn("xDR spool holds {n} leg(s) from an earlier run; replaying when the "
                          "database is ready", n=self.spool.depth)
            self._spooling = True
            self._schedule_replay()

    @defer.inlineCallbacks
    def stopService(self):
        """Finish the transaction in flight; anything still queued goes to the spool."""
        super().stopService()
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        if self._pump_call is not None and self._pump_call.active():
            self._pump_call.cancel()
        self._pump_call = None
        yield self._wait_idle()
        if self._queue:
            self._spool_out([self._queue.popleft() for _ in range(len(self._queue))])
        self.spool.close()

    def health(self) -> dict:
        """The spool's state for ``/healthz``."""
        return {"depth": self.spool.depth, "mode": "spooling" if self._spooling else "direct",
                "written": self.written, "rejected": self.rejected}

    # -- recording ----------------------------------------------------------------------

    def record(self, leg: LegRecord) -> defer.Deferred:
        """Queue ``leg``; fire once it is durably stored.

        The queue is pumped at the end of the reactor turn, so the legs recorded together
        (a callback's two legs, the calls that ended on one tick) share one transaction.
        """
        d = defer.Deferred()
        self._queue.append((leg, d))
        if self._pump_call is None:
            self._pump_call = self.clock.callLater(0, self._turn_pump)
        return d

    def _turn_pump(self) -> None:
        self._pump_call = None
        self._pump()

    def _pump(self) -> None:
        """Spool the queue, or start a transaction with it if none is in flight."""
        if not self._queue:
            return
        if self._spooling or not self.store.ready:
            self._spool_out([self._queue.popleft() for _ in range(len(self._queue))])
            return
        while self._queue and self._busy < self.max_in_flight:
            self._busy += 1
            batch = [self._queue.popleft() for _ in range(min(self.batch_max, len(self._queue)))]
            self._write(batch).addErrback(lambda f: self.log.failure("xDR writer failed", failure=f))

    def _wait_idle(self) -> defer.Deferred:
        """A Deferred firing once no transaction is in flight."""
        if not self._busy:
            return defer.succeed(None)
        d = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    def _set_idle(self) -> None:
        """One transaction ended; once none is in flight, wake whoever waits for that."""
        self._busy -= 1
        if self._busy:
            return
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)

    def _spool_out(self, batch) -> None:
        """Append ``batch`` to the spool (one fsync), acknowledge it, arrange the replay."""
        try:
            self.spool.append([leg.to_dict() for leg, _ in batch])
        except OSError as e:
            # Nowhere else holds these legs now: the log line carries them in full.
            self.log.critical("xDR spool append failed: {err}; {n} leg(s) NOT stored: {legs}",
                              err=str(e), n=len(batch),
                              legs=json.dumps([leg.to_dict() for leg, _ in batch], sort_keys=True,
                                              default=str))
            for _, d in batch:
                d.errback(e)
            return
        self._spooling = True
        for _, d in batch:
            d.callback(None)
        self._schedule_replay()

    @defer.inlineCallbacks
    def _write(self, batch):
        """One group-commit transaction for ``batch``; the outcome decides what follows."""
        unique: dict = {}
        for leg, _ in batch:
            unique.setdefault(leg.key, leg)
        try:
            yield self._transaction(list(unique.values()))
        except Exception:  # noqa: BLE001 - classified below, never swallowed
            failure = Failure()
            if _unavailable(failure):
                self.log.warn("database unavailable ({why}); spooling {n} leg(s)",
                              why=failure.getErrorMessage(), n=len(batch))
                self._spool_out(batch)
            elif len(batch) > 1:
                self.log.warn("xDR batch failed ({why}); writing its legs one by one",
                              why=failure.getErrorMessage())
                self._queue.extendleft(reversed(batch[1:]))
                yield self._write(batch[:1])
                return
            else:
                self._reject(batch[0], failure)
        else:
            self.written += len(unique)
            for _, d in batch:
                d.callback(None)
        self._set_idle()
        self._pump()

    @defer.inlineCallbacks
    def _transaction(self, legs, attempts: int = 5):
        """Run ``write_batch``, retrying deadlocks and serialization failures."""
        for attempt in range(attempts):
            try:
                result = yield self.store.write_batch(legs)
                return result
            except Exception:  # noqa: BLE001 - re-raised unless retryable
                failure = Failure()
                if not _retryable(failure) or attempt == attempts - 1:
                    failure.raiseException()
                self.log.info("xDR batch retry after {why}", why=failure.getErrorMessage())

    def _reject(self, item, failure) -> None:
        """Keep a leg PostgreSQL refuses in ``<spool>.rejected`` and fail its Deferred (if any)."""
        leg, d = item
        self._keep_rejected(leg.to_dict(), failure.getErrorMessage())
        if d is not None:
            d.errback(XdrRejected(failure.getErrorMessage()))

    def _keep_rejected(self, data: dict, why: str) -> None:
        """Append a refused or unreadable leg to ``<spool>.rejected`` (fsync'd) and log it.

        The log line carries the leg in full too. If the reject file cannot be written
        either, that line is the only copy left (critical), and the writer carries on: a
        failure here must not leave the leg's Deferred, or the writer, waiting for ever.
        """
        self.rejected += 1
        path = self.spool.path.with_name(self.spool.path.name + ".rejected")
        line = json.dumps({"error": why, "leg": data}, sort_keys=True, default=str)
        try:
            with path.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            self.log.critical("xDR rejected session_id={session_id} leg={leg}: {why}; NOT kept "
                              "({err}): {record}", session_id=data.get("session_id"),
                              leg=data.get("leg"), why=why, err=str(e), record=line)
            return
        self.log.error("xDR rejected session_id={session_id} leg={leg}: {why}; kept in {path}: "
                       "{record}", session_id=data.get("session_id"), leg=data.get("leg"), why=why,
                       path=str(path), record=line)

    # -- replay -------------------------------------------------------------------------

    def _schedule_replay(self) -> None:
        """Replay once the pool is ready (one replay at a time)."""
        if self._replay_pending or not self.running:
            return
        self._replay_pending = True
        d = self.store.when_ready()
        d.addCallback(lambda _: self._replay())
        d.addErrback(lambda f: self.log.failure("xDR spool replay failed", failure=f))

    @defer.inlineCallbacks
    def _replay(self):
        """Write the spool to PostgreSQL in order, snapshot by snapshot, until it is empty."""
        if not self.running:
            self._replay_pending = False
            return
        yield self._wait_idle()
        self._busy += 1
        try:
            while True:
                records = self.spool.begin_replay()
                if not records:
                    break
                self.log.info("replaying {n} spooled xDR leg(s)", n=len(records))
                for i in range(0, len(records), self.batch_max):
                    chunk = []
                    for data in records[i:i + self.batch_max]:
                        try:
                            chunk.append(LegRecord.from_dict(data))
                        except (InvalidLegRecord, KeyError, TypeError, ValueError) as e:
                            self._keep_rejected(data, f"unreadable spooled leg: {e}")
                    yield self._replay_chunk(list({leg.key: leg for leg in chunk}.values()))
                self.spool.finish_replay()
        except Exception:  # noqa: BLE001 - any failure: try again after a pause
            failure = Failure()
            self.log.warn("xDR spool replay interrupted ({why}); retrying in {delay}s",
                          why=failure.getErrorMessage(), delay=self.retry_delay)
            self._replay_pending = False
            self._set_idle()
            if self.running:
                self._retry_call = self.clock.callLater(self.retry_delay, self._retry_replay)
            return
        self._replay_pending = False
        self._spooling = False
        self._set_idle()
        self.log.info("xDR spool empty; writing directly again")
        self._pump()

    @defer.inlineCallbacks
    def _replay_chunk(self, legs):
        """Write spooled ``legs``; set aside any PostgreSQL refuses, so none blocks the rest."""
        if not legs:
            return
        try:
            yield self._transaction(legs)
        except Exception:  # noqa: BLE001 - unavailable: re-raised; refused: narrowed down
            failure = Failure()
            if _unavailable(failure):
                failure.raiseException()
            if len(legs) == 1:
                self._reject((legs[0], None), failure)
                return
            for leg in legs:
                yield self._replay_chunk([leg])
            return
        self.written += len(legs)

    def _retry_replay(self) -> None:
        """The delayed retry of an interrupted replay."""
        self._retry_call = None
        self._schedule_replay()
