"""The rate import's fast path accepts exactly what the full checks accept, with the same values."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from twisted.internet.task import Clock

from cbserver.billing.catalog import Catalog
from cbserver.billing.imports import RATE_STAGE, fast_rate
from cbserver.billing.validation import ValidationError

WHEN = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
BASE = {"prefix": "4420", "first_interval": "60", "next_interval": "6", "first_price": "0.050",
        "next_price": "0.05"}
ROWS = [
    BASE,
    {**BASE, "prefix": "|"},
    {**BASE, "effective_from": "2026-01-01T00:00:00Z"},
    {**BASE, "effective_from": "2026-01-01T02:00:00+02:00"},
    {**BASE, "rating_mode": "Flat rate"},
    {**BASE, "first_interval": "0060", "first_price": "12345678901234"},
    {**BASE, "first_price": "0.0000000001"},
    # each of these must be refused by both ways, or left to the full checks
    {**BASE, "first_interval": "0"},
    {**BASE, "next_interval": "86401"},
    {**BASE, "first_price": "-1"},
    {**BASE, "first_price": "1e3"},
    {**BASE, "first_price": "0.00000000001"},
    {**BASE, "first_price": "123456789012345"},
    {**BASE, "prefix": "44a"},
    {**BASE, "prefix": "1" * 21},
    {**BASE, "effective_from": "2026-01-01T00:00:00"},
    {**BASE, "effective_from": "yesterday"},
    {**BASE, "rating_mode": "peak_offpeak"},
    {**BASE, "formula": "amount + 1"},
    {k: val for k, val in BASE.items() if k != "next_price"},
    {**BASE, "first_interval": 60},
]


def _full(row):
    return Catalog(None, Clock())._rate_row(row, WHEN)


@pytest.mark.parametrize("row", ROWS)
def test_fast_path_agrees_with_the_full_checks(row):
    fast = fast_rate(row, WHEN)
    try:
        full = _full(row)
    except ValidationError:
        assert fast is None  # refused by the full checks: never accepted by the fast path
        return
    if fast is None:
        return  # left to the full checks, which accept it
    key, text = fast
    assert key == (full["prefix"], full["effective_from"])
    cells = dict(zip(RATE_STAGE, text.split("\t"), strict=True))
    assert cells["prefix"] == full["prefix"] and cells["rating_mode"] == full["rating_mode"]
    for name in ("first_interval", "next_interval"):
        assert int(cells[name]) == full[name]
    for name in ("first_price", "next_price"):
        assert Decimal(cells[name]) == full[name]
    assert dt.datetime.fromisoformat(cells["effective_from"]) == full["effective_from"]
    assert all(cells[c] == "\\N" for c in RATE_STAGE if c.startswith("offpeak") or c == "formula")


def test_most_plain_rows_take_the_fast_path():
    assert sum(fast_rate(r, WHEN) is not None for r in ROWS[:7]) == 7


DESTS = [{"prefix": "55", "country": "Brazil", "description": "São Paulo"}, {"prefix": "|"},
         {"prefix": "55", "country": ""}, {"prefix": "55", "country": "x" * 101},
         {"prefix": "55", "description": "a\\tb"}, {"prefix": "5a"}, {"prefix": "55", "country": " UK"},
         {"prefix": "55", "other": "x"}, {"country": "UK"}, {"prefix": 55}]


@pytest.mark.parametrize("row", DESTS)
def test_destination_fast_path_agrees_with_the_full_checks(row):
    from cbserver.billing import validation as v
    from cbserver.billing.catalog import DESTINATION
    from cbserver.billing.imports import DESTINATION_COLUMNS, copy_fields, fast_destination

    fast = fast_destination(row, DESTINATION_COLUMNS)
    try:
        full = v.clean(DESTINATION, row)
    except ValidationError:
        assert fast is None
        return
    if fast is not None:
        assert fast == (full["prefix"], copy_fields(full, DESTINATION_COLUMNS))
