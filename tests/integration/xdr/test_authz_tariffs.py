"""Tariffs loaded from PostgreSQL into the rating core, and the change-aware cache."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from cbserver.billing.rating import quote
from cbserver.db.tariff_loader import TariffCache, TariffNotFound, load_tariff, load_tariff_sync
from tests.integration.xdr.helpers import query

pytestmark = pytest.mark.integration

NOON = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest_twisted.ensureDeferred
async def test_rates_load_into_the_rating_model(db):
    tariff = await load_tariff(db, 1)
    assert tariff.name == "Callback" and tariff.rates.currency == "USD"
    assert sorted(r.prefix for r in tariff.rates.rates) == ["1", "1818", "44", "49"]
    q = quote(tariff.rates, "+1 818 555 0100", 31, NOON)
    assert q.charge.rate.prefix == "1818" and q.charge.charged_seconds == 36
    assert q.amount == Decimal("0.01200")
    assert q.charge.rate.rate_id is not None


@pytest_twisted.ensureDeferred
async def test_offpeak_period_comes_from_the_json_windows(db):
    night = await load_tariff(db, 3)
    assert night.rates.offpeak.timezone == "Europe/Berlin"
    # 03:00 Berlin (01:00 UTC in summer) is off-peak: 0.30/min; noon is peak: 1.20/min.
    at_night = quote(night.rates, "44123", 60, dt.datetime(2026, 6, 1, 1, 0, tzinfo=dt.UTC))
    at_noon = quote(night.rates, "44123", 60, NOON)
    assert (at_night.amount, at_noon.amount) == (Decimal("0.30000"), Decimal("1.20000"))


def test_sync_loader_by_name_for_the_cli(cat_dsn):
    with psycopg2.connect(cat_dsn) as conn, conn.cursor() as cur:
        assert load_tariff_sync(cur, name="CallbackFail").tariff_id == 2
        with pytest.raises(TariffNotFound):
            load_tariff_sync(cur, name="Nope")
    conn.close()


@pytest_twisted.ensureDeferred
async def test_cache_reloads_after_a_rate_change_once_ttl_passes(db, cat_dsn):
    clock = task.Clock()
    cache = TariffCache(db, clock, ttl=2.0)
    first = await cache.get(1)
    assert await cache.get(1) is first and cache.loads == 1
    query(cat_dsn, "UPDATE rates SET first_price = 0.20 WHERE tariff_id = 1 AND prefix = '1'")
    assert await cache.get(1) is first  # within ttl: no query at all
    clock.advance(2.0)
    fresh = await cache.get(1)
    assert fresh is not first and cache.loads == 2
    rate = next(r for r in fresh.rates.rates if r.prefix == "1")
    assert rate.first_price == Decimal("0.20")
    clock.advance(2.0)
    assert await cache.get(1) is fresh  # counter unchanged: kept
    assert clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_unknown_tariff_id(db):
    cache = TariffCache(db, reactor)
    with pytest.raises(TariffNotFound):
        await cache.get(999)


@pytest_twisted.ensureDeferred
async def test_concurrent_requests_share_one_load(db):
    cache = TariffCache(db, reactor)
    got = await defer.gatherResults([cache.get(1) for _ in range(20)])
    assert cache.loads == 1 and all(t is got[0] for t in got)
    results = await defer.DeferredList([cache.get(999) for _ in range(3)], consumeErrors=True)
    assert [ok for ok, _ in results] == [False] * 3
    assert all(f.check(TariffNotFound) for _, f in results)


@pytest.mark.parametrize("number", ["+1 818 555 0100", "4412345", "49301234", "1", "0044123"])
def test_loading_only_a_numbers_prefixes_quotes_the_same(cat_dsn, number):
    with psycopg2.connect(cat_dsn) as conn, conn.cursor() as cur:
        whole = load_tariff_sync(cur, name="Callback")
        part = load_tariff_sync(cur, name="Callback", number=number)
    conn.close()
    assert len(part.rates.rates) < len(whole.rates.rates)
    try:
        expected = quote(whole.rates, number, 95, NOON)
    except Exception as e:  # noqa: BLE001 - the partial load must refuse the same way
        with pytest.raises(type(e)):
            quote(part.rates, number, 95, NOON)
        return
    got = quote(part.rates, number, 95, NOON)
    assert (got.amount, got.charge.rate.rate_id) == (expected.amount, expected.charge.rate.rate_id)
