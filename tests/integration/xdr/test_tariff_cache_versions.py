"""Per-tariff cache invalidation (sql/046_tariff_versions.sql) and the cooperative tariff load."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from cbserver.db.tariff_loader import TariffCache, TariffNotFound, cooperative_tariff, load_tariff
from tests.integration.xdr.helpers import query

pytestmark = pytest.mark.integration


async def _warm(cache, *ids):
    return {i: await cache.get(i) for i in ids}


@pytest_twisted.ensureDeferred
async def test_a_rate_change_reloads_its_tariff_only(db, cat_dsn):
    clock = task.Clock()
    cache = TariffCache(db, clock, ttl=2.0)
    first = await _warm(cache, 1, 2, 3)
    query(cat_dsn, "UPDATE rates SET first_price = 0.20 WHERE tariff_id = 1 AND prefix = '1'")
    clock.advance(2.0)
    again = await _warm(cache, 1, 2, 3)
    assert again[1] is not first[1] and again[2] is first[2] and again[3] is first[3]
    assert list(cache.loaded) == [1, 2, 3, 1]
    query(cat_dsn, "INSERT INTO destinations (prefix, country) VALUES ('3399', 'Testland')")
    query(cat_dsn, "UPDATE destinations SET description = 'changed' WHERE prefix = '44'")
    clock.advance(2.0)
    await _warm(cache, 1, 2, 3)
    assert list(cache.loaded) == [1, 2, 3, 1]  # destinations are not part of a loaded tariff
    query(cat_dsn, "UPDATE tariffs SET name = 'Nightly' WHERE id = 3")
    clock.advance(2.0)
    third = await _warm(cache, 1, 2, 3)
    assert list(cache.loaded) == [1, 2, 3, 1, 3] and third[3].name == "Nightly"


@pytest_twisted.ensureDeferred
async def test_deleted_rates_and_tariffs_are_seen(db, cat_dsn):
    clock = task.Clock()
    cache = TariffCache(db, clock, ttl=1.0)
    before = await cache.get(3)
    query(cat_dsn, "DELETE FROM rates WHERE tariff_id = 3")
    clock.advance(1.0)
    after = await cache.get(3)
    assert before.rates.rates and after.rates.rates == ()
    query(cat_dsn, "DELETE FROM rating_entries WHERE tariff_id = 3")
    query(cat_dsn, "DELETE FROM tariffs WHERE id = 3")
    clock.advance(1.0)
    with pytest.raises(TariffNotFound):
        await cache.get(3)


@pytest_twisted.ensureDeferred
async def test_a_change_during_a_load_is_caught_at_the_next_check(db, cat_dsn):
    clock = task.Clock()
    cache = TariffCache(db, clock, ttl=1.0)
    await cache.get(2)  # reads the counter
    loading = cache.get(1)
    # Committed while tariff 1 loads: whether the load saw it or not, it must not stick.
    query(cat_dsn, "UPDATE rates SET next_price = 0.33 WHERE tariff_id = 1 AND prefix = '1'")
    await loading
    clock.advance(1.0)
    fresh = await cache.get(1)
    assert str(next(r for r in fresh.rates.rates if r.prefix == "1").next_price) == "0.33"


@pytest_twisted.ensureDeferred
async def test_cooperative_load_returns_to_the_scheduler_and_equals_the_plain_load(db):
    scheduler = task.Clock()
    d = defer.ensureDeferred(cooperative_tariff(db, 1, scheduler, batch=1))
    returns = 0
    for _ in range(2000):
        if d.called:
            break
        await task.deferLater(reactor, 0.005, lambda: None)
        if scheduler.getDelayedCalls():
            returns += 1
            scheduler.advance(0)
    loaded = await d
    plain = await load_tariff(db, 1)
    assert returns >= len(plain.rates.rates)  # one batch of one rate per return, at least
    assert loaded.rates == plain.rates and loaded.name == plain.name
    assert loaded.rates.index.keys() == plain.rates.index.keys()
    assert loaded.rates.prefix_lengths == plain.rates.prefix_lengths
