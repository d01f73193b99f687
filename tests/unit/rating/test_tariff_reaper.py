"""A dropped tariff is freed a slice at a time, and never while a call still uses it."""

from __future__ import annotations

import datetime as dt
import weakref
from decimal import Decimal

from twisted.internet.task import Clock

from cbserver.billing.domain import LoadedTariff
from cbserver.billing.model import Rate, RateIndexBuilder, TariffRates
from cbserver.db import tariff_loader
from cbserver.db.tariff_loader import Reaper

SINCE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _tariff(n: int) -> LoadedTariff:
    builder = RateIndexBuilder()
    for i in range(n):
        builder.add(Rate(str(100000 + i), 60, 6, Decimal("0.05"), Decimal("0.05"), SINCE))
    for _ in builder.steps():
        pass
    return LoadedTariff(7, TariffRates.assemble(builder, "USD", name="Big"))


def test_assembled_equals_constructed():
    loaded = _tariff(50)
    assert loaded.rates == TariffRates("USD", loaded.rates.rates, name="Big")
    assert loaded.rates.prefix_lengths == (6,)


def _run_until_idle(clock: Clock, reaper: Reaper, limit: int = 100000) -> int:
    advances = 0
    while reaper.running and advances < limit:
        clock.advance(0)
        advances += 1
    return advances


class CountingClock(Clock):
    """A Clock that counts the calls scheduled with no delay (returns to the scheduler)."""

    returns = 0

    def callLater(self, delay, *args, **kwargs):  # noqa: N802 - Twisted's name
        if delay == 0:
            self.returns += 1
        return super().callLater(delay, *args, **kwargs)


def test_a_dropped_tariff_is_freed_in_slices(monkeypatch):
    monkeypatch.setattr(tariff_loader, "SLICE", 0.0)  # back to the scheduler after every item
    clock = CountingClock()
    reaper = Reaper(clock)
    loaded = _tariff(300)
    gone = weakref.ref(loaded.rates)
    index = loaded.rates.index
    reaper.bury(loaded)  # still held here: looked at again a second later
    del loaded
    assert len(index) == 300 and clock.returns == 0
    clock.advance(1.0)
    _run_until_idle(clock, reaper)
    assert reaper.freed == 1 and index == {} and gone() is None
    assert clock.returns >= 300  # one return per item of the index at least


def test_a_tariff_still_in_use_is_left_alone_until_released():
    clock = Clock()
    reaper = Reaper(clock)
    loaded = _tariff(100)
    in_use = loaded.rates  # a call in progress still prices with it
    gone = weakref.ref(in_use)
    reaper.bury(loaded)
    del loaded
    for _ in range(5):
        clock.advance(1.0)
    assert reaper.freed == 0 and len(in_use.index) == 100
    del in_use
    clock.advance(1.0)
    _run_until_idle(clock, reaper)
    assert reaper.freed == 1 and not reaper.running and gone() is None
