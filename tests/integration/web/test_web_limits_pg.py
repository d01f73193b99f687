"""Abuse protection on the real PostgreSQL: two nodes (two pools) on one database agree."""

from __future__ import annotations

import json

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from cbserver.callback.admission import ConcurrencyGauge, RateLimited, RateLimiter
from cbserver.callback.api import CallbackRequest
from cbserver.config import LimitsConfig
from cbserver.db.limits_store import PostgresLimitStore

pytestmark = pytest.mark.integration


def clock_at(t: float = 1_800_000_000.0) -> Clock:
    c = Clock()
    c.advance(t)
    return c


def two_gauges(pools, cap: int):
    """A concurrency gauge on each node, one cap: (gauge a, gauge b)."""
    limits = LimitsConfig(concurrent_per_account=cap)
    a, b = pools
    return (ConcurrencyGauge(PostgresLimitStore(a), limits),
            ConcurrencyGauge(PostgresLimitStore(b), limits))


def age_slots(dsn, seconds: int) -> None:
    """Let ``seconds`` pass for every slot: slots are timed by the database's clock, one for
    every node, so a test moves their times back instead of a node's clock forward."""
    sql(dsn, "UPDATE callback_slots SET taken_at = taken_at - %s", (seconds,))


async def outcomes(ds):
    """('ok' or the RateLimited kind) for each Deferred, in order."""
    results = await defer.DeferredList(ds, consumeErrors=True)
    out = []
    for ok, value in results:
        if ok:
            out.append("ok")
        else:
            value.trap(RateLimited)
            out.append(value.value.kind)
    return out


@pytest_twisted.ensureDeferred
async def test_two_nodes_share_the_per_client_counter(pools):
    a, b = pools
    limits = LimitsConfig(per_client=5, per_phone=1000, window=3600)
    clock = clock_at()
    la = RateLimiter(PostgresLimitStore(a), limits, clock)
    lb = RateLimiter(PostgresLimitStore(b), limits, clock)
    reqs = [CallbackRequest(application="A", mode="hosted", phone=f"1555010{i}",
                            client_address="198.51.100.7") for i in range(12)]
    got = await outcomes([(la if i % 2 else lb).check(r) for i, r in enumerate(reqs)])
    assert got.count("ok") == 5 and got.count("client") == 7
    # 12 hits slide out of the window: one more fits once 12 * (1 - f) + 1 <= 5
    clock.advance(3600 + 2400)
    assert await outcomes([la.check(reqs[0])]) == ["ok"]
    assert await outcomes([lb.check(reqs[1])]) == ["client"]


@pytest_twisted.ensureDeferred
async def test_counts_per_kind_are_returned_atomically(pools, pg_dsn):
    a, b = pools
    sa, sb = PostgresLimitStore(a), PostgresLimitStore(b)
    keys = [("client", "192.0.2.1"), ("phone", "15550100"), ("account", "cb1001")]
    got = await defer.gatherResults([(sa if i % 2 else sb).count_hits(keys, 600, 0)
                                     for i in range(20)])
    assert sorted(g["client"][0] for g in got) == list(range(1, 21))
    assert all(g["client"] == g["phone"] == g["account"] for g in got)
    assert all(g["client"][1] == 0 for g in got)  # nothing in the window before
    nxt = await sa.count_hits([("phone", "15550100"), ("client", "192.0.2.9")], 1200, 600)
    assert nxt == {"phone": (1, 20), "client": (1, 0)}
    await sb.prune_counters(1200)
    conn = psycopg2.connect(pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT kind, key, window_start, hits FROM rate_limit_counters")
            assert sorted(cur.fetchall()) == [("client", "192.0.2.9", 1200, 1),
                                              ("phone", "15550100", 1200, 1)]
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_count_and_peek_is_both_in_one_statement_and_agrees_with_each(pools):
    a, b = pools
    sa, sb = PostgresLimitStore(a), PostgresLimitStore(b)
    fails = [("auth_client", "192.0.2.1"), ("auth_account", "cb1001 192.0.2.1")]
    await sa.count_hits([("auth_client", "192.0.2.1")], 0, -600)
    await sb.count_hits([("auth_client", "192.0.2.1")], 600, 0)
    await sb.count_hits([("auth_client", "192.0.2.1")], 600, 0)
    keys = [("client", "192.0.2.1"), ("phone", "15550100")]
    got = await defer.gatherResults([(sa if i % 2 else sb).count_and_peek(keys, fails, 600, 0)
                                     for i in range(10)])
    # Counted like count_hits, across both nodes, each count seen once.
    assert sorted(c["client"][0] for c, _ in got) == list(range(1, 11))
    assert all(c["client"] == c["phone"] for c, _ in got)
    # Peeked like peek_hits: nothing counted, an absent counter is (0, 0).
    assert all(p == {"auth_client": (2, 1), "auth_account": (0, 0)} for _, p in got)
    assert await sa.peek_hits(fails, 600, 0) == {"auth_client": (2, 1), "auth_account": (0, 0)}


@pytest_twisted.ensureDeferred
async def test_two_nodes_never_take_more_slots_than_the_cap(pools):
    a, b = pools
    ga, gb = two_gauges(pools, cap=2)
    got = await outcomes([(ga if i % 2 else gb).acquire("cb1001") for i in range(8)])
    assert got.count("ok") == 2 and got.count("concurrent") == 6
    assert await ga.in_use("cb1001") == 2 and await gb.in_use("cb1001") == 2
    assert await outcomes([gb.acquire("cb2002")]) == ["ok"]


def insert_session(dsn, cb_id, account, instance_id, status="calling_you"):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO callback_sessions (id, application, mode, account_id, phone, status,"
                        " state, node, instance_id) VALUES (%s, 'A', 'simple', %s, '15550100', %s, %s,"
                        " 'node-a', %s)", (cb_id, account, status, json.dumps({"status": status}),
                                           instance_id))
    finally:
        conn.close()


def sql(dsn, statement, params=()):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_a_bound_slot_lives_as_long_as_its_callback_session(pools, pg_dsn):
    a, b = pools
    ga, gb = two_gauges(pools, cap=1)
    slot = await ga.acquire("cb1001")
    insert_session(pg_dsn, "sess-1", "cb1001", a.instance_id)
    await ga.bind(slot, "sess-1")
    age_slots(pg_dsn, 3600)  # long after the start: the session keeps the slot
    assert await outcomes([gb.acquire("cb1001")]) == ["concurrent"]
    sql(pg_dsn, "UPDATE callback_sessions SET status = 'ended' WHERE id = 'sess-1'")
    assert await gb.in_use("cb1001") == 0
    assert await outcomes([gb.acquire("cb1001")]) == ["ok"]


@pytest_twisted.ensureDeferred
async def test_a_slot_of_a_dead_node_is_not_counted(pools, pg_dsn):
    a, b = pools
    ga, gb = two_gauges(pools, cap=1)
    slot = await ga.acquire("cb1001")
    insert_session(pg_dsn, "sess-2", "cb1001", a.instance_id)
    await ga.bind(slot, "sess-2")
    sql(pg_dsn, "UPDATE server_nodes SET stopped_at = now() WHERE instance_id = %s", (a.instance_id,))
    assert await outcomes([gb.acquire("cb1001")]) == ["ok"]


@pytest_twisted.ensureDeferred
async def test_cancel_release_and_prune_on_postgresql(pools, pg_dsn):
    a, _ = pools
    g = ConcurrencyGauge(PostgresLimitStore(a), LimitsConfig(concurrent_per_account=3))
    s1 = await g.acquire("cb1001")
    await g.cancel(s1)
    s2 = await g.acquire("cb1001")
    insert_session(pg_dsn, "sess-3", "cb1001", a.instance_id)
    await g.bind(s2, "sess-3")
    assert await g.release("sess-3") == "cb1001"
    assert await g.release("sess-3") is None
    await g.acquire("cb1001")
    age_slots(pg_dsn, 25 * 3600)
    await g.prune()
    assert await g.in_use("cb1001") == 0


@pytest_twisted.ensureDeferred
async def test_every_node_gets_the_same_shared_secret(pools):
    a, b = pools
    sa, sb = PostgresLimitStore(a), PostgresLimitStore(b)
    got = await defer.gatherResults([(sa if i % 2 else sb).shared_secret("csrf", bytes([i]) * 32)
                                     for i in range(6)])
    assert len(set(got)) == 1 and len(got[0]) == 32
    assert await sa.shared_secret("csrf", b"x" * 32) == got[0]
    assert await sb.shared_secret("other", b"y" * 32) == b"y" * 32


@pytest_twisted.ensureDeferred
async def test_a_slot_bound_when_taken_is_live_before_its_session_row_and_while_it_runs(pools, pg_dsn):
    a, b = pools
    ga, gb = two_gauges(pools, cap=1)
    await ga.acquire("cb1001", "sess-4")  # bound in the same round trip
    assert await outcomes([gb.acquire("cb1001")]) == ["concurrent"]  # no session row yet: young
    age_slots(pg_dsn, 120)  # past start_timeout with no session row: the request died
    assert await outcomes([gb.acquire("cb1001", "sess-5")]) == ["ok"]
    insert_session(pg_dsn, "sess-5", "cb1001", b.instance_id)
    age_slots(pg_dsn, 3600)  # the running session keeps its slot however old
    assert await outcomes([ga.acquire("cb1001")]) == ["concurrent"]
    sql(pg_dsn, "UPDATE callback_sessions SET status = 'ended' WHERE id = 'sess-5'")
    assert await outcomes([ga.acquire("cb1001")]) == ["ok"]


@pytest_twisted.ensureDeferred
async def test_slots_are_timed_by_the_database_clock_not_a_nodes(pools, pg_dsn):
    ga, gb = two_gauges(pools, cap=1)
    await ga.acquire("cb1001")  # unbound: live for start_timeout of the database's clock
    rows = sql_rows(pg_dsn, "SELECT taken_at - floor(extract(epoch FROM now())) FROM callback_slots")
    assert len(rows) == 1 and abs(rows[0][0]) <= 5
    assert await outcomes([gb.acquire("cb1001")]) == ["concurrent"]
    age_slots(pg_dsn, 59)
    assert await outcomes([gb.acquire("cb1001")]) == ["concurrent"]
    age_slots(pg_dsn, 2)
    assert await outcomes([gb.acquire("cb1001")]) == ["ok"]


def sql_rows(dsn, statement, params=()):
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()
