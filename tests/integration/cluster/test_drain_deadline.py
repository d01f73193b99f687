"""Draining the in-process server tree (``CallbackServer``, as ``twistd`` builds it) with a
deadline: a connected call the trunk would hold for a minute is ended at the deadline with
cause ``drain_deadline`` and both legs billed; meanwhile new callbacks get 503 ``draining``
and ``/readyz`` says ``draining``; undrain puts the node back."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, task

from cbserver.billing.audit import Actor
from cbserver.callback.api import CallbackRequest
from cbserver.db import nodes_store
from tests.support.world import DEMO_PASSWORD, World, ensure

# The audit log's actor of the drains these tests make directly on the store.
TESTER = Actor("pytest", "cli")

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path, pg_dsn):
    w = World(tmp_path, pg_dsn, hold_ms=60000)
    w.server.node_monitor.interval = 0.5
    pytest_twisted.blockon(ensure(w.start()))
    yield w
    pytest_twisted.blockon(ensure(w.stop()))


async def _get(world, path):
    resp = await treq.get(world.base_url + path, timeout=10)
    return resp.code, json.loads(await resp.content())


async def _post(world, body):
    resp = await treq.post(world.base_url + "/api/v1/callbacks", json=body, timeout=10)
    return resp.code, resp.headers.getRawHeaders("retry-after"), json.loads(await resp.content())


async def _until(what, check, timeout=30.0):
    deadline = reactor.seconds() + timeout
    while reactor.seconds() < deadline:
        got = await check()
        if got:
            return got
        await task.deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"timed out waiting for {what}")


BODY = {"application": "Web callback", "mode": "extended", "account": "cb1818000002",
        "password": "48151623", "phone": "5511987654399", "destination": "18185550123"}


@pytest_twisted.ensureDeferred
async def test_the_deadline_ends_and_bills_the_calls_left(world):
    async def ready():
        code, body = await _get(world, "/readyz")
        return body if code == 200 else None
    body = await _until("ready", ready)
    assert body["node"] == "node1"
    # The server tree reports its admission load (issue 17 item 4): gate open, nothing queued.
    load = body["admission"]
    assert load["gate"]["enabled"] and load["gate"]["open"] and load["gate"]["reason"] is None
    assert load["db_queue"] == {"running": 0, "admission": 0} and load["starting"] == 0
    before = world.balance("cb1818000001")
    cid = await world.server.callbacks.request_callback(CallbackRequest(
        application="Web callback", mode="extended", phone="5511987654321",
        account="cb1818000001", password=DEMO_PASSWORD, destination="18185550123",
        client_address="127.0.0.1"))
    await world.wait_status(cid, "connected")
    await nodes_store.drain(world.server.db, "node1", 3.0, TESTER)

    async def draining():
        code, body = await _get(world, "/readyz")
        return body if code == 503 and body["reason"] == "draining" else None
    await _until("draining", draining, 10)
    code, retry, body = await _post(world, BODY)
    assert (code, retry, body["error"]["code"]) == (503, ["2"], "draining")
    assert world.server.callbacks.active == 1  # the call goes on...
    status = await world.wait_end(cid, timeout=30)  # ...until the deadline
    assert status["cause"]["code"] == "drain_deadline"
    assert "taken out of service" in status["cause"]["description"]
    x = world.xdrs(cid)
    assert set(x) == {"A", "B"} and x["A"]["amount"] > 0 and x["B"]["amount"] > 0
    assert before - world.balance("cb1818000001") == x["A"]["amount"] + x["B"]["amount"]
    assert x["A"]["amount"] + x["B"]["amount"] == Decimal(status["charges"]["total"])
    metrics = (await (await treq.get(world.base_url + "/metrics", timeout=10)).content()).decode()
    assert "cbserver_node_draining 1.0" in metrics

    await nodes_store.undrain(world.server.db, "node1", TESTER)
    await _until("ready again", ready, 10)
    code, _retry, body = await _post(world, BODY)
    assert code == 202, body
