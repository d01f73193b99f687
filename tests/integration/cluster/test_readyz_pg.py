"""``/livez`` and ``/readyz`` over a real socket and a real PostgreSQL (a private cluster the
test stalls and stops): the reasons, the catalog check per node name, draining, and their cost
(one query per poll interval whatever the request rate, none piled up on a hung database).

The callback service is a stand-in with the four attributes the monitor reads (``active``,
``running``, ``draining``, ``end_all``): the real one, its drain and its calls are exercised by
``test_haproxy_cluster.py`` with ``twistd`` nodes.
"""

from __future__ import annotations

import json
import time

import psycopg2
import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor, task
from twisted.web.server import Site

from cbserver.billing.audit import Actor
from cbserver.callback.nodestate import NodeMonitor
from cbserver.config import parse_config
from cbserver.db import nodes_store
from cbserver.db.migrations import upgrade
from cbserver.db.pool import Database
from cbserver.web.app import WebApp
from cbserver.web.metrics import Metrics
from tests.support.pgprivate import private_cluster
from tests.support.world import config_text, provision_manual_example

# The audit log's actor of the drains these tests make directly on the store.
TESTER = Actor("pytest", "cli")

pytestmark = pytest.mark.integration


class Calls:
    """The callback service as the monitor sees it."""

    def __init__(self):
        self.active = 0
        self.running = True
        self.draining = False
        self.ended = []

    def end_all(self, cause, reason):
        self.ended.append(cause)
        return defer.succeed(None)


def _sql(dsn, statement, params=()):
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


async def _sleep(seconds):
    await task.deferLater(reactor, seconds, lambda: None)


async def _wait(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await check()
        if got:
            return got
        await _sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class Node:
    """A pool, the monitor and the health app on a real port, as ``tap.py`` wires them."""

    def __init__(self, dsn, tmp_path, node="node1"):
        text = config_text(dsn, tmp_path / "state", 5060, 5070, 8901, 30000).replace(
            'node = "node1"', f'node = "{node}"')
        self.cfg = parse_config(text, "test.toml")
        self.db = Database(dsn, reactor, size=2, retry_max=0.5, node=node)
        self.calls = Calls()
        self.metrics = Metrics()
        self.monitor = NodeMonitor(self.cfg, self.db, self.calls, reactor, self.metrics)
        self.monitor.interval = 0.3
        self.monitor.catalog_interval = 0.5
        self.web = WebApp(self.db, reactor)
        self.web.node_state = self.monitor
        self.port = None

    async def start(self):
        self.db.startService()
        await self.db.when_ready()
        self.monitor.startService()
        self.port = reactor.listenTCP(0, Site(self.web.resource()), interface="127.0.0.1")

    async def stop(self):
        self.monitor.stopService()
        await self.port.stopListening()
        await self.db.stopService()

    def url(self, path):
        return f"http://127.0.0.1:{self.port.getHost().port}{path}"

    async def get(self, path, headers=None):
        started = time.monotonic()
        resp = await treq.get(self.url(path), headers=headers, timeout=10)
        body = await resp.content()
        return resp.code, json.loads(body), time.monotonic() - started

    async def readyz(self):
        code, body, _ = await self.get("/readyz")
        return code, body


@pytest.fixture
def cluster():
    """A private PostgreSQL cluster with the schema and the manual's catalog (node1)."""
    with private_cluster("cbs_readyz_") as c:
        upgrade(c.dsn(), report=lambda _line: None)
        yield c


@pytest_twisted.async_yield_fixture
async def provisioned(cluster):
    db = Database(cluster.dsn(), reactor, size=1)
    db.startService()
    await db.when_ready()
    await provision_manual_example(db, reactor)
    await db.stopService()
    yield cluster


@pytest_twisted.async_yield_fixture
async def node1(provisioned, tmp_path):
    n = Node(provisioned.dsn(), tmp_path)
    await n.start()
    yield n
    await n.stop()


@pytest_twisted.ensureDeferred
async def test_ready_node_answers_200_with_every_check(node1):
    code, body = await _wait("ready", lambda: _ready(node1))
    assert code == 200 and body["status"] == "ready" and body["node"] == "node1"
    assert body["reason"] is None
    assert set(body["checks"]) == {"database", "schema", "catalog", "callbacks", "draining", "busy"}
    assert all(c["ok"] for c in body["checks"].values())
    code, live, _ = await node1.get("/livez")
    assert (code, live) == (200, {"node": "node1", "status": "ok"})
    assert b"cbserver_node_ready 1.0" in node1.metrics.render()


async def _ready(node):
    code, body = await node.readyz()
    return (code, body) if code == 200 else None


@pytest_twisted.ensureDeferred
async def test_busy_caps_and_stopped_call_handling_make_it_unready(node1):
    await _wait("ready", lambda: _ready(node1))
    node1.calls.active = node1.cfg.limits.node_max_active
    code, body = await node1.readyz()
    assert (code, body["reason"]) == (503, "busy") and "callbacks in progress" in \
        body["checks"]["busy"]["reason"]
    node1.calls.active, node1.calls.running = 0, False
    code, body = await node1.readyz()
    assert (code, body["reason"]) == (503, "callbacks")


@pytest_twisted.ensureDeferred
async def test_a_node_without_a_rating_entry_is_not_ready_until_one_applies(provisioned, tmp_path):
    edge = Node(provisioned.dsn(), tmp_path, node="edge9")
    await edge.start()
    try:
        async def catalog_said():
            code, body = await edge.readyz()
            return (code, body) if body["checks"]["catalog"].get("reason") != "not checked yet" \
                else None
        code, body = await _wait("the catalog check", catalog_said)
        assert (code, body["reason"]) == (503, "catalog")
        # The instance's Hosted internal account cannot be rated here: an error finding.
        reason = body["checks"]["catalog"]["reason"]
        assert "internal_account_unrated" in reason and "cbserver check" in reason
        assert "Callback" not in reason  # codes, never product names (the answer is public)
        # An entry for any node makes it ready, without an entry naming it.
        _sql(provisioned.dsn(), "UPDATE rating_entries SET node = '*'")
        code, body = await _wait("ready with '*'", lambda: _ready(edge))
        assert code == 200
    finally:
        await edge.stop()


@pytest_twisted.ensureDeferred
async def test_drain_is_noticed_within_a_poll_and_undrain_reverses_it(node1, provisioned):
    await _wait("ready", lambda: _ready(node1))
    await nodes_store.drain(node1.db, "node1", None, TESTER)

    async def draining():
        code, body = await node1.readyz()
        return (code, body) if code == 503 else None
    code, body = await _wait("draining", draining, 5)
    assert body["reason"] == "draining" and node1.calls.draining
    assert b"cbserver_node_draining 1.0" in node1.metrics.render()
    # Another node's drain is not ours.
    assert await nodes_store.undrain(node1.db, "node2", TESTER) is False
    assert await nodes_store.undrain(node1.db, "node1", TESTER) is True
    await _wait("ready again", lambda: _ready(node1), 5)
    assert not node1.calls.draining and node1.calls.ended == []


@pytest_twisted.ensureDeferred
async def test_a_drain_deadline_ends_the_calls_left(node1):
    await _wait("ready", lambda: _ready(node1))
    node1.calls.active = 2
    await nodes_store.drain(node1.db, "node1", 1.0, TESTER)
    await _wait("calls ended at the deadline", lambda: defer.succeed(node1.calls.ended), 10)
    assert node1.calls.ended == ["drain_deadline"]


@pytest_twisted.ensureDeferred
async def test_a_stalled_database_is_reported_fast_and_gets_no_pile_of_queries(node1, provisioned):
    await _wait("ready", lambda: _ready(node1))
    # Another session holds node_drains exclusively: the poll's query waits on the lock, as
    # it would on a hung server.
    locker = psycopg2.connect(provisioned.dsn())
    try:
        cur = locker.cursor()
        cur.execute("LOCK TABLE node_drains IN ACCESS EXCLUSIVE MODE")
        sent = node1.monitor.polls

        async def stale():
            code, body, took = await node1.get("/readyz")
            assert took < 2.0  # never waits for the database
            return (code, body) if code == 503 else None
        code, body = await _wait("the stall reported", stale, 20)
        assert body["reason"] == "database"
        assert "no answer from the database for" in body["checks"]["database"]["reason"]
        # A balancer (or anyone) polling hard meanwhile adds no query.
        for _ in range(100):
            code, _body, took = await node1.get("/readyz")
            assert code == 503 and took < 2.0
        assert node1.monitor.polls == sent + 1  # the one stuck query, nothing after it
        waiting = _sql(provisioned.dsn(), "SELECT count(*) FROM pg_stat_activity "
                                          "WHERE wait_event_type = 'Lock' AND query LIKE %s",
                       ("%node_drains%",))
        assert waiting == [(1,)]
        assert (await node1.get("/livez"))[0] == 200
    finally:
        locker.rollback()
        locker.close()
    await _wait("ready after the stall", lambda: _ready(node1), 10)


@pytest_twisted.ensureDeferred
async def test_a_stopped_database_is_reported_and_recovered(node1, provisioned):
    await _wait("ready", lambda: _ready(node1))
    provisioned.stop("fast")

    async def down():
        code, body = await node1.readyz()
        return (code, body) if code == 503 else None
    code, body = await _wait("the outage reported", down, 20)
    assert body["reason"] == "database"
    assert (await node1.get("/livez"))[0] == 200
    provisioned.start()
    await _wait("ready after the restart", lambda: _ready(node1), 60)


@pytest_twisted.ensureDeferred
async def test_a_stranger_flooding_the_probes_costs_no_query_and_no_quota(node1, provisioned):
    """/readyz and /livez are not rate-limited by address, so they must be worth nothing to
    abuse: answered from memory, they cost the database nothing and count in no limiter; a
    forged X-Forwarded-For changes nothing (they never look at the client's address)."""
    await _wait("ready", lambda: _ready(node1))
    counters = "SELECT count(*) FROM rate_limit_counters"
    before_counters = _sql(provisioned.dsn(), counters)
    started, sent = time.monotonic(), node1.monitor.polls
    forged = {"X-Forwarded-For": ["203.0.113.7, 10.0.0.1"], "Host": ["evil.example"]}
    codes = []
    for i in range(300):
        code, _body, _took = await node1.get("/readyz" if i % 2 else "/livez", forged)
        codes.append(code)
    elapsed = time.monotonic() - started
    assert set(codes) == {200}
    # Polls follow the clock (one per interval), not the 300 requests.
    assert node1.monitor.polls - sent <= elapsed / node1.monitor.interval + 2
    assert _sql(provisioned.dsn(), counters) == before_counters
    # Malformed requests get a clean answer.
    resp = await treq.request("POST", node1.url("/readyz"), timeout=10)
    assert resp.code == 405
    await resp.content()
    resp = await treq.get(node1.url("/readyz/../../etc/passwd"), timeout=10)
    assert resp.code == 404
    await resp.content()
