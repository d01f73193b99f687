"""Tariffs from PostgreSQL into the rating core's values, with a small change-aware cache.

``tariff_from_rows`` turns a ``tariffs`` row and its ``rates`` rows into a ``TariffRates``
(pure, so the synchronous CLI and the asynchronous server share it). ``TariffCache`` keeps
loaded tariffs in memory; at most every ``ttl`` seconds it reads the catalog change counter
(``catalog_changes``, bumped by a trigger on every write to ``tariffs`` or ``rates``, see
``sql/012_catalog_changes.sql``) and forgets everything when it moved. A rate change is
therefore seen by every node within ``ttl`` seconds. Concurrent requests for a tariff that
is not cached share one load.
"""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface import implementer

from cbserver.billing.domain import LoadedTariff, TariffNotFound
from cbserver.billing.model import OffPeakPeriod, OffPeakWindow, Rate, RateDefinitionError, TariffRates
from cbserver.billing.stores import ITariffSource

_TARIFF_COLUMNS = "id, name, currency, offpeak_timezone, offpeak_periods, split_at_boundary"
TARIFF_BY_ID = f"SELECT {_TARIFF_COLUMNS} FROM tariffs WHERE id = %s"
TARIFF_BY_NAME = f"SELECT {_TARIFF_COLUMNS} FROM tariffs WHERE name = %s"
RATES_OF_TARIFF = (
    "SELECT id, prefix, rating_mode, first_interval, next_interval, first_price, next_price, "
    "offpeak_first_interval, offpeak_next_interval, offpeak_first_price, offpeak_next_price, "
    "formula, effective_from FROM rates WHERE tariff_id = %s ORDER BY prefix, effective_from, id")
CHANGE_COUNTER = "SELECT counter FROM catalog_changes WHERE id = 1"


def _window(item) -> OffPeakWindow:
    """One off-peak window from its JSON form: ``"mon-fri 18:00-23:59"``."""
    if isinstance(item, str):
        return OffPeakWindow.parse(item)
    raise RateDefinitionError("offpeak_periods", f"expected text such as 'mon-fri 18:00-23:59', got {item!r}")


def tariff_from_rows(tariff_row, rate_rows) -> LoadedTariff:
    """Build a ``LoadedTariff`` from a ``TARIFF_BY_*`` row and ``RATES_OF_TARIFF`` rows."""
    tariff_id, name, currency, tz, periods, split = tariff_row
    offpeak = None
    if tz is not None:
        if isinstance(periods, str):
            periods = json.loads(periods)
        offpeak = OffPeakPeriod(tz, tuple(_window(p) for p in periods or ()))
    rates = []
    for row in rate_rows:
        (rate_id, prefix, mode, f, n, p1, p2, of, on, op1, op2, formula, since) = row
        rates.append(Rate(prefix, f, n, p1, p2, since, mode=mode, offpeak_first_interval=of,
                          offpeak_next_interval=on, offpeak_first_price=op1, offpeak_next_price=op2,
                          formula=formula, rate_id=rate_id))
    return LoadedTariff(tariff_id, TariffRates(currency=currency.strip(), rates=tuple(rates),
                                               offpeak=offpeak, split_at_boundary=bool(split),
                                               name=name))


def load_tariff_sync(cursor, *, tariff_id: int | None = None, name: str | None = None) -> LoadedTariff:
    """Load a tariff by id or name through a psycopg2 cursor (the CLI's path)."""
    if name is not None:
        cursor.execute(TARIFF_BY_NAME, (name,))
    else:
        cursor.execute(TARIFF_BY_ID, (tariff_id,))
    row = cursor.fetchone()
    if row is None:
        raise TariffNotFound(f"no tariff {name!r}" if name is not None else f"no tariff id {tariff_id}")
    cursor.execute(RATES_OF_TARIFF, (row[0],))
    return tariff_from_rows(row, cursor.fetchall())


@defer.inlineCallbacks
def load_tariff(db, tariff_id: int):
    """Load a tariff by id through the txpostgres pool ``db``; fires with a ``LoadedTariff``."""
    rows = yield db.runQuery(TARIFF_BY_ID, (tariff_id,))
    if not rows:
        raise TariffNotFound(f"no tariff id {tariff_id}")
    rates = yield db.runQuery(RATES_OF_TARIFF, (tariff_id,))
    return tariff_from_rows(rows[0], rates)


@implementer(ITariffSource)
class TariffCache:
    """Loaded tariffs kept in memory, dropped when the catalog change counter moves."""

    def __init__(self, db, clock, ttl: float = 2.0):
        self.db = db
        self.clock = clock
        self.ttl = ttl
        self._tariffs: dict[int, LoadedTariff] = {}
        self._loading: dict[int, list[defer.Deferred]] = {}
        self._counter = None
        self._checked_at: float | None = None
        self.loads = 0

    def invalidate(self) -> None:
        """Forget every cached tariff."""
        self._tariffs.clear()
        self._checked_at = None

    @defer.inlineCallbacks
    def _check_counter(self):
        """Re-read the change counter if ``ttl`` has passed; clear the cache when it moved."""
        now = self.clock.seconds()
        if self._checked_at is not None and now - self._checked_at < self.ttl:
            return
        rows = yield self.db.runQuery(CHANGE_COUNTER)
        counter = rows[0][0] if rows else None
        if counter != self._counter:
            self._tariffs.clear()
            self._counter = counter
        self._checked_at = now

    @defer.inlineCallbacks
    def get(self, tariff_id: int):
        """Fire with the ``LoadedTariff`` for ``tariff_id`` (``TariffNotFound`` if absent)."""
        yield self._check_counter()
        tariff = self._tariffs.get(tariff_id)
        if tariff is not None:
            return tariff
        waiters = self._loading.get(tariff_id)
        if waiters is not None:  # already being loaded: share that load
            d = defer.Deferred()
            waiters.append(d)
            tariff = yield d
            return tariff
        self._loading[tariff_id] = waiters = []
        try:
            tariff = yield load_tariff(self.db, tariff_id)
        except Exception:  # noqa: BLE001 - handed to every waiter, then re-raised
            failure = Failure()
            del self._loading[tariff_id]
            for d in waiters:
                d.errback(failure)
            failure.raiseException()
        del self._loading[tariff_id]
        self.loads += 1
        self._tariffs[tariff_id] = tariff
        for d in waiters:
            d.callback(tariff)
        return tariff
