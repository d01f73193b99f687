"""Tariffs from PostgreSQL into the rating core's values, with a per-tariff change-aware cache.

``tariff_from_rows`` turns a ``tariffs`` row and its ``rates`` rows into a ``TariffRates``
(pure, so the synchronous CLI and the asynchronous server share it). ``TariffCache`` keeps
loaded tariffs in memory; at most every ``ttl`` seconds it reads the catalog change counter
(``catalog_changes``), and when it moved, which tariffs changed since (``tariff_versions``,
stamped by triggers on every write to ``tariffs`` or ``rates``, see
``sql/046_tariff_versions.sql``): only those are dropped. A rate change is therefore seen by
every node within ``ttl`` seconds and reloads that tariff alone.

A load never holds the reactor for long: the rates are fetched a batch at a time from a
server-side cursor (one query, so one consistent snapshot of the tariff) and turned into the
rating core's values in slices of at most ``SLICE`` seconds (``cooperative_tariff``), so the
media clock and SIP timers keep running while a 100,000-rate tariff loads. A request for a
tariff being (re)loaded waits for that one shared load: once a node knows a tariff changed it
never prices with the old version, and each price comes from one whole, immutable version.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections import deque

from twisted.internet import defer, task
from twisted.python.failure import Failure
from zope.interface import implementer

from cbserver.billing.domain import LoadedTariff, TariffNotFound
from cbserver.billing.model import (
    WILDCARD,
    OffPeakPeriod,
    OffPeakWindow,
    Rate,
    RateDefinitionError,
    RateIndexBuilder,
    TariffRates,
)
from cbserver.billing.numbers import normalise_number
from cbserver.billing.stores import ITariffSource

_TARIFF_COLUMNS = "id, name, currency, offpeak_timezone, offpeak_periods, split_at_boundary"
TARIFF_BY_ID = f"SELECT {_TARIFF_COLUMNS} FROM tariffs WHERE id = %s"
TARIFF_BY_NAME = f"SELECT {_TARIFF_COLUMNS} FROM tariffs WHERE name = %s"
RATES_OF_TARIFF = (
    "SELECT id, prefix, rating_mode, first_interval, next_interval, first_price, next_price, "
    "offpeak_first_interval, offpeak_next_interval, offpeak_first_price, offpeak_next_price, "
    "formula, effective_from FROM rates WHERE tariff_id = %s ORDER BY prefix, effective_from, id")
RATES_FOR_PREFIXES = RATES_OF_TARIFF.replace(
    "WHERE tariff_id = %s", "WHERE tariff_id = %s AND prefix = ANY(%s)")
CHANGE_COUNTER = "SELECT counter FROM catalog_changes WHERE id = 1"


def _window(item) -> OffPeakWindow:
    """One off-peak window from its JSON form: ``"mon-fri 18:00-23:59"``."""
    if isinstance(item, str):
        return OffPeakWindow.parse(item)
    raise RateDefinitionError("offpeak_periods", f"expected text such as 'mon-fri 18:00-23:59', got {item!r}")


def _offpeak(tz, periods) -> OffPeakPeriod | None:
    """A tariff row's off-peak definition (None without a time zone); ``periods`` is the
    JSON column, as text or already decoded."""
    if tz is None:
        return None
    if isinstance(periods, str):
        periods = json.loads(periods)
    return OffPeakPeriod(tz, tuple(_window(p) for p in periods or ()))


def tariff_from_rows(tariff_row, rate_rows) -> LoadedTariff:
    """Build a ``LoadedTariff`` from a ``TARIFF_BY_*`` row and ``RATES_OF_TARIFF`` rows."""
    tariff_id, name, currency, tz, periods, split = tariff_row
    offpeak = _offpeak(tz, periods)
    rates = []
    for row in rate_rows:
        (rate_id, prefix, mode, f, n, p1, p2, of, on, op1, op2, formula, since) = row
        rates.append(Rate(prefix, f, n, p1, p2, since, mode=mode, offpeak_first_interval=of,
                          offpeak_next_interval=on, offpeak_first_price=op1, offpeak_next_price=op2,
                          formula=formula, rate_id=rate_id))
    return LoadedTariff(tariff_id, TariffRates(currency=currency.strip(), rates=tuple(rates),
                                               offpeak=offpeak, split_at_boundary=bool(split),
                                               name=name))


def candidate_prefixes(number: str) -> list[str]:
    """Every prefix a rate for ``number`` could have: each leading part of its digits, and ``|``."""
    digits = normalise_number(number)
    return [digits[:n] for n in range(1, min(len(digits), 20) + 1)] + [WILDCARD]


def load_tariff_sync(cursor, *, tariff_id: int | None = None, name: str | None = None,
                     number: str | None = None) -> LoadedTariff:
    """Load a tariff by id or name through a psycopg2 cursor (the CLI's path).

    With ``number``, only the rates that could match it are loaded (its prefixes and the
    wildcard, through the (tariff_id, prefix) index): the same quote for that number, at a
    cost that does not grow with the size of the tariff.
    """
    if name is not None:
        cursor.execute(TARIFF_BY_NAME, (name,))
    else:
        cursor.execute(TARIFF_BY_ID, (tariff_id,))
    row = cursor.fetchone()
    if row is None:
        raise TariffNotFound(f"no tariff {name!r}" if name is not None else f"no tariff id {tariff_id}")
    if number is None:
        cursor.execute(RATES_OF_TARIFF, (row[0],))
    else:
        cursor.execute(RATES_FOR_PREFIXES, (row[0], candidate_prefixes(number)))
    return tariff_from_rows(row, cursor.fetchall())


@defer.inlineCallbacks
def load_tariff(db, tariff_id: int):
    """Load a tariff by id through the txpostgres pool ``db``; fires with a ``LoadedTariff``."""
    rows = yield db.runQuery(TARIFF_BY_ID, (tariff_id,))
    if not rows:
        raise TariffNotFound(f"no tariff id {tariff_id}")
    rates = yield db.runQuery(RATES_OF_TARIFF, (tariff_id,))
    return tariff_from_rows(rows[0], rates)


#: Rates fetched per round trip of a cooperative load.
BATCH = 500
#: Longest stretch of CPU work between two returns to the reactor (seconds).
SLICE = 0.003

CHANGED_SINCE = ("SELECT c.counter, v.tariff_id, v.version FROM catalog_changes c "
                 "LEFT JOIN tariff_versions v ON v.version > %s WHERE c.id = 1")


def _rate(row) -> Rate:
    (rate_id, prefix, mode, f, n, p1, p2, of, on, op1, op2, formula, since) = row
    return Rate(prefix, f, n, p1, p2, since, mode=mode, offpeak_first_interval=of,
                offpeak_next_interval=on, offpeak_first_price=op1, offpeak_next_price=op2,
                formula=formula, rate_id=rate_id)


def _global_reactor():
    from twisted.internet import reactor  # noqa: PLC0415

    return reactor


async def _yield(scheduler) -> None:
    await task.deferLater(scheduler, 0, lambda: None)


async def cooperative_tariff(db, tariff_id: int, scheduler, batch: int = BATCH,
                             freeze: bool = False) -> LoadedTariff:
    """Load a tariff like ``load_tariff``, returning to ``scheduler`` (the reactor) often.

    One transaction: the tariff row, then its rates through a cursor ``batch`` rows at a time;
    each batch is turned into ``Rate`` values, and the prefix index built, in slices of at most
    ``SLICE`` seconds. Holds one pooled connection for the load's duration.

    ``freeze``: after each batch, move what was built into the collector's permanent
    generation (``gc.freeze()``, constant time), as the server does with everything built at
    start-up. A 100,000-rate tariff is about half a million objects the collector would
    otherwise walk in every full collection for as long as it is cached (a few hundred ms each
    on a busy machine, bench/bench_rate_deck.py); a tariff holds no reference cycle, so a
    dropped one is still freed by reference counting. Only for a process whose code leaves
    no cycles behind (the server's rule, ``tap.py``): frozen cyclic garbage is never freed.
    """

    async def run(cur):
        await cur.execute(TARIFF_BY_ID, (tariff_id,))
        rows = cur.fetchall()
        if not rows:
            raise TariffNotFound(f"no tariff id {tariff_id}")
        builder = RateIndexBuilder()
        await cur.execute(f"DECLARE tariff_rates NO SCROLL CURSOR FOR {RATES_OF_TARIFF}",
                          (tariff_id,))
        deadline = time.perf_counter() + SLICE
        while True:
            await cur.execute(f"FETCH {int(batch)} FROM tariff_rates")
            fetched = cur.fetchall()
            for row in fetched:
                builder.add(_rate(row))
                if time.perf_counter() >= deadline:
                    await _yield(scheduler)
                    deadline = time.perf_counter() + SLICE
            if freeze:
                gc.freeze()
            if len(fetched) < batch:
                break
            await _yield(scheduler)
            deadline = time.perf_counter() + SLICE
        await cur.execute("CLOSE tariff_rates")
        for _ in builder.steps():
            if time.perf_counter() >= deadline:
                await _yield(scheduler)
                deadline = time.perf_counter() + SLICE
        tariff = _assemble(rows[0], builder)
        if freeze:
            gc.freeze()
        return tariff

    return await db.runInteraction(lambda cur: defer.ensureDeferred(run(cur)))


def _assemble(tariff_row, builder: RateIndexBuilder) -> LoadedTariff:
    tariff_id, name, currency, tz, periods, split = tariff_row
    offpeak = _offpeak(tz, periods)
    return LoadedTariff(tariff_id, TariffRates.assemble(builder, currency.strip(), offpeak,
                                                        bool(split), name))


class Reaper:
    """Frees dropped tariffs a slice at a time instead of all at once.

    Letting go of the last reference to a 100,000-rate tariff frees half a million objects in
    one go (20-30 ms on this machine, ``bench/bench_rate_deck.py``), a stall of its own right
    after a reload. A dropped tariff is buried here instead; once nothing else holds it (no
    call in progress still prices with it: its reference count says so) its index and its
    rates are released ``SLICE`` seconds at a time, back to the reactor between slices. A
    tariff still in use is looked at again a second later; after ``patience`` looks it is let
    go as is (whoever holds it then frees it).
    """

    def __init__(self, scheduler, patience: int = 120):
        self.scheduler = scheduler
        self.patience = patience
        self.graveyard: list[list] = []  # [LoadedTariff, looks so far]
        self.running = False
        self.freed = 0

    def bury(self, loaded: LoadedTariff) -> None:
        """Take over the cache's reference to a dropped tariff and free it gradually."""
        self.graveyard.append([loaded, 0])
        if not self.running:
            self.running = True
            defer.ensureDeferred(self._run())

    async def _run(self) -> None:
        try:
            while self.graveyard:
                grave = self.graveyard.pop(0)
                if not self._alone(grave):
                    grave[1] += 1
                    if grave[1] < self.patience:
                        self.graveyard.append(grave)
                    del grave
                    await task.deferLater(self.scheduler, 1.0, lambda: None)
                    continue
                rates = grave[0].rates
                del grave
                await self._dismantle(rates)
                self.freed += 1
        finally:
            self.running = False

    @staticmethod
    def _alone(grave: list) -> bool:
        # References: the grave's list, and getrefcount's argument; the TariffRates: the
        # LoadedTariff's attribute and the argument. Anything more is a call still using it.
        loaded = grave[0]
        return sys.getrefcount(loaded) <= 3 and sys.getrefcount(loaded.rates) <= 2

    async def _dismantle(self, rates: TariffRates) -> None:
        index = rates.index
        deadline = time.perf_counter() + SLICE
        while index:
            index.popitem()
            if time.perf_counter() >= deadline:
                await _yield(self.scheduler)
                deadline = time.perf_counter() + SLICE
        step = 2000
        while rates.rates:
            # A frozen value, but unreachable from anywhere else now (``_alone``).
            object.__setattr__(rates, "rates", rates.rates[step:])
            if time.perf_counter() >= deadline:
                await _yield(self.scheduler)
                deadline = time.perf_counter() + SLICE


@implementer(ITariffSource)
class TariffCache:
    """Loaded tariffs kept in memory; a tariff is dropped when a change to it is seen.

    ``clock`` measures the ``ttl``; ``scheduler`` (the reactor, by default the global one) is
    where loads return between slices; ``freeze``: see ``cooperative_tariff``. ``loaded``
    lists the last 1,000 tariff ids loaded, in order.
    """

    def __init__(self, db, clock, ttl: float = 2.0, scheduler=None, freeze: bool = False):
        self.db = db
        self.freeze = freeze  # see cooperative_tariff
        self.clock = clock
        self.ttl = ttl
        self.scheduler = scheduler if scheduler is not None else _global_reactor()
        self.reaper = Reaper(self.scheduler)  # frees dropped tariffs gradually
        # tariff id -> (tariff, the counter read before its load began)
        self._tariffs: dict[int, tuple[LoadedTariff, int]] = {}
        self._loading: dict[int, list[defer.Deferred]] = {}
        self._counter: int | None = None
        self._checked_at: float | None = None
        self.loads = 0
        self.loaded: deque[int] = deque(maxlen=1000)

    def invalidate(self) -> None:
        """Forget every cached tariff."""
        self._tariffs.clear()
        self._checked_at = None

    @defer.inlineCallbacks
    def _check_counter(self):
        """Every ``ttl``: drop the cached tariffs changed since they were loaded."""
        now = self.clock.seconds()
        if self._checked_at is not None and now - self._checked_at < self.ttl:
            return
        if self._counter is None:
            rows = yield self.db.runQuery(CHANGE_COUNTER)
            self._counter = rows[0][0] if rows else 0
            self._checked_at = now
            return
        oldest = min((tag for _, tag in self._tariffs.values()), default=self._counter)
        rows = yield self.db.runQuery(CHANGED_SINCE, (min(oldest, self._counter),))
        for counter, tariff_id, version in rows:
            entry = self._tariffs.get(tariff_id)
            # Dropped only if stamped after its load began (an older stamp is already in it).
            if entry is not None and version > entry[1]:
                del self._tariffs[tariff_id]
                self.reaper.bury(entry[0])
                del entry
            self._counter = counter
        self._checked_at = now

    @defer.inlineCallbacks
    def get(self, tariff_id: int):
        """Fire with the ``LoadedTariff`` for ``tariff_id`` (``TariffNotFound`` if absent)."""
        yield self._check_counter()
        entry = self._tariffs.get(tariff_id)
        if entry is not None:
            return entry[0]
        waiters = self._loading.get(tariff_id)
        if waiters is not None:  # already being loaded: share that load
            d = defer.Deferred()
            waiters.append(d)
            tariff = yield d
            return tariff
        self._loading[tariff_id] = waiters = []
        tag = self._counter if self._counter is not None else 0
        try:
            tariff = yield defer.ensureDeferred(cooperative_tariff(self.db, tariff_id, self.scheduler,
                                                                  freeze=self.freeze))
        except Exception:  # noqa: BLE001 - handed to every waiter, then re-raised
            failure = Failure()
            del self._loading[tariff_id]
            for d in waiters:
                d.errback(failure)
            failure.raiseException()
        del self._loading[tariff_id]
        self.loads += 1
        self.loaded.append(tariff_id)
        self._tariffs[tariff_id] = (tariff, tag)
        for d in waiters:
            d.callback(tariff)
        return tariff
