"""Fixtures for the catalog integration tests: a started ``Database`` pool on a fresh database."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from cbserver.billing.accounts import Accounts
from cbserver.billing.catalog import Catalog
from cbserver.db.pool import Database
from cbserver.db.stores import PostgresCatalogStore


@pytest_twisted.async_yield_fixture
async def db(pg_dsn):
    """A ready pool of two connections to a fresh database with every migration applied."""
    pool = Database(pg_dsn, reactor, size=2)
    pool.startService()
    await pool.when_ready()
    yield pool
    await pool.stopService()


@pytest_twisted.async_fixture
async def catalog(db):
    """The catalog service over the pool, on the real reactor's clock."""
    return Catalog(PostgresCatalogStore(db), reactor)


@pytest_twisted.async_fixture
async def accounts(db):
    """The accounts service over the pool, on the real reactor's clock."""
    return Accounts(PostgresCatalogStore(db), reactor)
