"""Fixtures for the rating/authorization/xDR integration tests on the real PostgreSQL."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from cbserver.billing.authorize import Authorizer
from cbserver.db.migrations import upgrade
from cbserver.db.pool import Database
from cbserver.db.stores import PostgresAuthorizationStore
from cbserver.db.tariff_loader import TariffCache
from tests.integration.xdr.helpers import load_fixture
from tests.support.pgprivate import private_cluster


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
    return Authorizer(PostgresAuthorizationStore(db), TariffCache(db, reactor, ttl=0), reactor, node="node1",
                      special_charge=True)


@pytest.fixture
def own_cluster():
    """A private PostgreSQL cluster (under /var/tmp) that a test may stop and start at will.

    The shared cluster serves every other test run in this checkout, so the outage tests stop
    their own cluster rather than ``pg_cluster``; it has the schema and the fixture catalog.
    """
    with private_cluster("cbs_outage_") as cluster:
        upgrade(cluster.dsn(), report=lambda _line: None)
        load_fixture(cluster.dsn())
        yield cluster
