"""Fixtures for the rating/authorization/xDR integration tests on the real PostgreSQL."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from cbserver.billing.authorize import Authorizer
from cbserver.db.pool import Database
from cbserver.db.tariff_loader import TariffCache
from tests.integration.xdr.helpers import load_fixture


@pytest.fixture
def cat_dsn(pg_dsn):
    """A fresh database holding the fixture catalog."""
    load_fixture(pg_dsn)
    return pg_dsn


@pytest_twisted.async_yield_fixture
async def db(cat_dsn):
    """A ready pool of three connections to the fixture database."""
    pool = Database(cat_dsn, reactor, size=3)
    pool.startService()
    await pool.when_ready()
    yield pool
    await pool.stopService()


@pytest.fixture
def authorizer(db):
    """The real authorizer on node1, real reactor clock."""
    return Authorizer(db, TariffCache(db, reactor, ttl=0), reactor, node="node1",
                      special_charge=True)
