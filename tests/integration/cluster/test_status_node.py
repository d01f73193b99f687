"""A callback's status names its node: read back from PostgreSQL by any node, including rows
stored before the status carried the field (the session row's ``node`` column answers)."""

from __future__ import annotations

import json
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor

from cbserver.db import callbacks_store
from cbserver.db.pool import Database

pytestmark = pytest.mark.integration


@pytest_twisted.async_yield_fixture
async def db(pg_dsn):
    pool = Database(pg_dsn, reactor, size=1, node="reader")
    pool.startService()
    await pool.when_ready()
    yield pool
    await pool.stopService()


def _row(cb_id, state, node, instance):
    return (cb_id, "Web callback", "extended", "cb1", "15550100", "18185550123", state["status"],
            json.dumps(state), node, instance)


@pytest_twisted.ensureDeferred
async def test_the_stored_status_names_the_node_that_ran_it(db):
    new, old = uuid.uuid4().hex, uuid.uuid4().hex
    await callbacks_store.upsert(db, [
        _row(new, {"id": new, "status": "connected", "node": "edge2"}, "edge2", db.instance_id),
        _row(old, {"id": old, "status": "ended"}, "edge3", db.instance_id)])
    assert (await callbacks_store.fetch(db, new))["node"] == "edge2"
    # Written by an older node (no "node" in the state): the row's column says it.
    assert (await callbacks_store.fetch(db, old))["node"] == "edge3"
