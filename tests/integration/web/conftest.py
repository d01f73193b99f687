"""Fixtures shared by the web tests that run against the real PostgreSQL."""

import pytest_twisted
from twisted.internet import defer, reactor

from cbserver.db.pool import Database


@pytest_twisted.async_yield_fixture
async def pools(pg_dsn):
    """Two ready pools on one fresh database: two cbserver nodes, ``node-a`` and ``node-b``."""
    a = Database(pg_dsn, reactor, size=3, node="node-a")
    b = Database(pg_dsn, reactor, size=3, node="node-b")
    for p in (a, b):
        p.startService()
    await defer.gatherResults([a.when_ready(), b.when_ready()])
    yield a, b
    await defer.gatherResults([defer.maybeDeferred(a.stopService), defer.maybeDeferred(b.stopService)])
