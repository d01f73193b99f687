"""The crash-recovery store on the real PostgreSQL: which rows are orphans, once-only
recovery under a lock (SKIP LOCKED), and what a status read and a late status write see."""

from __future__ import annotations

import json
import uuid

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from zope.interface.verify import verifyObject

from cbserver.callback.recovery import IRecoveryStore
from cbserver.db import callbacks_store
from cbserver.db.pool import Database
from cbserver.db.recovery_store import PostgresRecoveryStore

pytestmark = pytest.mark.integration


@pytest_twisted.async_yield_fixture
async def pools(pg_dsn):
    """Three nodes: node1 (to die), node2 and node3."""
    out = [Database(pg_dsn, reactor, size=2, node=f"node{i}") for i in (1, 2, 3)]
    for p in out:
        p.startService()
    await defer.gatherResults([p.when_ready() for p in out])
    yield out
    await defer.gatherResults([defer.maybeDeferred(p.stopService) for p in out])


def sql(dsn, statement, params=()):
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def session_row(dead, sid="s1", status="connected"):
    state = {"id": sid, "status": status, "legs": {"A": {"state": "answered"}, "B": {"state": "answered"}}}
    return (sid, "Web callback", "extended", "acc1", "5511", "1818", status, json.dumps(state),
            dead.node, dead.instance_id)


def kill(dsn, pool, seconds_ago=60):
    """The process stops heartbeating (as after kill -9): its last_seen goes back."""
    pool._ping_call and pool._ping_call.cancel()
    pool._ping_call = None
    sql(dsn, "UPDATE server_nodes SET last_seen = now() - make_interval(secs => %s) "
             "WHERE instance_id = %s", (seconds_ago, pool.instance_id))


@pytest_twisted.ensureDeferred
async def test_orphans_once_only_under_skip_locked_and_the_session_closed(pools, pg_dsn):
    dead, two, three = pools
    stores = [PostgresRecoveryStore(p) for p in pools]
    assert verifyObject(IRecoveryStore, stores[0])
    await callbacks_store.upsert(dead, [session_row(dead)])
    await stores[0].save("s1", "node1", dead.instance_id, {"session_id": "s1", "legs": []})
    sql(pg_dsn, "INSERT INTO callback_slots (slot_id, account_id, callback_id, taken_at) "
                "VALUES (gen_random_uuid(), 'acc1', 's1', 0)")
    # Alive: nobody's orphan.
    assert await stores[1].orphans("node2", two.instance_id, 15) == []
    kill(pg_dsn, dead, 20)
    # Not yet stale for a 30 s rule, stale for 15 s; never this process's own.
    assert await stores[1].orphans("node2", two.instance_id, 30) == []
    assert await stores[1].orphans("node2", two.instance_id, 15) == ["s1"]
    assert await stores[0].orphans("node1", dead.instance_id, 15) == []
    # GET from another node: the node is lost, the status what it last wrote.
    state = await callbacks_store.fetch(two, "s1")
    assert state["status"] == "connected" and state["node_lost"] is True

    calls = []

    def settle(data, last_seen, state):
        calls.append((data, last_seen, state))
        return [], dict(state, status="ended", cause={"code": "node_lost"})

    # Another survivor holds the row: this one skips it instead of waiting.
    holder = psycopg2.connect(pg_dsn)
    cur = holder.cursor()
    cur.execute("SELECT 1 FROM callback_recovery WHERE session_id = 's1' FOR UPDATE")
    assert await stores[2].settle("s1", "node3", three.instance_id, 15, settle) is None
    holder.rollback()
    holder.close()
    assert calls == []
    # Two survivors at once: one recovers it, the other finds nothing.
    results = await defer.gatherResults([
        stores[1].settle("s1", "node2", two.instance_id, 15, settle),
        stores[2].settle("s1", "node3", three.instance_id, 15, settle)])
    assert sorted(r is None for r in results) == [False, True]
    assert len(calls) == 1
    data, last_seen, state = calls[0]
    assert data == {"session_id": "s1", "legs": []} and state["status"] == "connected"
    expected = sql(pg_dsn, "SELECT extract(epoch FROM last_seen)::float8 FROM server_nodes "
                           "WHERE instance_id = %s", (dead.instance_id,))[0][0]
    assert last_seen == pytest.approx(expected)
    closed = sql(pg_dsn, "SELECT status, state->'cause'->>'code' FROM callback_sessions")
    assert closed == [("ended", "node_lost")]
    assert sql(pg_dsn, "SELECT count(*) FROM callback_slots")[0][0] == 0
    assert sql(pg_dsn, "SELECT count(*) FROM callback_recovery")[0][0] == 0
    state = await callbacks_store.fetch(two, "s1")
    assert "node_lost" not in state
    # The dead node coming back cannot bring the callback back to life.
    await callbacks_store.upsert(dead, [session_row(dead)])
    assert sql(pg_dsn, "SELECT status FROM callback_sessions") == [("ended",)]


@pytest_twisted.ensureDeferred
async def test_a_dead_nodes_callbacks_with_no_leg_answered_are_closed_with_their_holds(pools, pg_dsn):
    dead, two, three = pools
    store = PostgresRecoveryStore(two)
    await callbacks_store.upsert(dead, [session_row(dead, "u1", "calling_you"),
                                        session_row(dead, "u2", "connected"),
                                        session_row(two, "u3", "calling_you")])
    await store.save("u2", "node1", dead.instance_id, {"session_id": "u2", "legs": []})
    sql(pg_dsn, "INSERT INTO callback_slots (slot_id, account_id, callback_id, taken_at) "
                "VALUES (gen_random_uuid(), 'acc1', 'u1', 0)")
    sql(pg_dsn, "INSERT INTO balance_reservations (session_id, leg, account_id, owner_key, amount, "
                "currency, instance_id) VALUES ('u1', 'A', 'acc1', 'account:acc1', 1, 'USD', %s)",
        (dead.instance_id,))
    assert await store.close_unanswered("node2", two.instance_id, 15, "why") == []  # alive
    kill(pg_dsn, dead, 20)
    # u2 has a recovery row (settle's job), u3 is this live node's own.
    assert await store.close_unanswered("node2", two.instance_id, 15, "why") == ["u1"]
    rows = sql(pg_dsn, "SELECT id, status, state->'cause'->>'code', state->>'status' "
                       "FROM callback_sessions ORDER BY id")
    assert rows == [("u1", "ended", "node_lost", "ended"), ("u2", "connected", None, "connected"),
                    ("u3", "calling_you", None, "calling_you")]
    assert sql(pg_dsn, "SELECT count(*) FROM callback_slots")[0][0] == 0
    assert sql(pg_dsn, "SELECT count(*) FROM balance_reservations")[0][0] == 0
    assert await PostgresRecoveryStore(three).close_unanswered("node3", three.instance_id, 15, "x") == []


@pytest_twisted.ensureDeferred
async def test_a_restarted_node_recognises_its_earlier_process_at_once(pools, pg_dsn):
    dead, two, _ = pools
    store = PostgresRecoveryStore(two)
    await store.save("s2", "node1", dead.instance_id, {"session_id": "s2", "legs": []})
    restarted = str(uuid.uuid4())  # node1's next process; node1's old heartbeat is still fresh
    assert await store.orphans("node2", two.instance_id, 15) == []
    assert await store.orphans("node1", restarted, 15) == ["s2"]
    await store.remove("s2")
    assert await store.orphans("node1", restarted, 15) == []


@pytest_twisted.ensureDeferred
async def test_a_row_of_an_ended_callback_is_removed_and_never_billed(pools, pg_dsn):
    """The delete of a recovery row did not reach PostgreSQL (down when the callback ended),
    or the node was killed between the end and the delete: once the final status is stored,
    the row is stale. ``remove_ended`` drops it; a restarted node settling it writes no xDR
    (its own xDRs are stored or in its spool: billing it again would bill twice or, up to a
    later heartbeat, too much)."""
    dead, two, _ = pools
    store = PostgresRecoveryStore(two)
    legs = {"session_id": "e1", "legs": [{"leg": "A"}, {"leg": "B"}]}
    await callbacks_store.upsert(dead, [session_row(dead, "e1", "ended"), session_row(dead, "e2", "ended"),
                                        session_row(dead, "e3", "connected")])
    for sid in ("e1", "e2", "e3"):
        await store.save(sid, "node1", dead.instance_id, dict(legs, session_id=sid))

    def settle(data, last_seen, state):
        raise AssertionError(f"{data['session_id']} billed again")

    # The node was killed after e1 ended: its next process finds e1 final and only deletes it.
    restarted = str(uuid.uuid4())
    assert await store.settle("e1", "node1", restarted, 15, settle) is None
    assert sql(pg_dsn, "SELECT session_id FROM callback_recovery ORDER BY 1") == [("e2",), ("e3",)]
    # Any node's sweep removes the rows of ended callbacks, never one of a callback in progress.
    assert await store.remove_ended() == ["e2"]
    assert await store.remove_ended() == []
    assert sql(pg_dsn, "SELECT session_id FROM callback_recovery") == [("e3",)]
    assert sql(pg_dsn, "SELECT count(*) FROM xdrs")[0][0] == 0
    assert sql(pg_dsn, "SELECT status FROM callback_sessions WHERE id = 'e3'") == [("connected",)]


@pytest_twisted.ensureDeferred
async def test_recovery_rows_saved_and_deleted_in_the_status_statement(pools, pg_dsn):
    """``upsert_with_recovery`` (the status writer's batch): the rows of callbacks whose leg
    answered are inserted or replaced, and the row of a callback whose final status the batch
    stores goes, in one statement: one commit, both or neither."""
    node, two, _ = pools
    me = node.instance_id

    def rec(sid, legs):
        return (sid, "node1", me, json.dumps({"session_id": sid, "legs": legs}))

    await callbacks_store.upsert_with_recovery(
        node, [session_row(node, "r1"), session_row(node, "r2")], [rec("r1", ["A"]), rec("r2", ["A"])], [])
    await callbacks_store.upsert_with_recovery(
        node, [session_row(node, "r1"), session_row(node, "r2", "ended")], [rec("r1", ["A", "B"])], ["r2"])
    assert sql(pg_dsn, "SELECT session_id, data->'legs', node, instance_id::text FROM callback_recovery") == [
        ("r1", ["A", "B"], "node1", me)]
    assert sql(pg_dsn, "SELECT id, status FROM callback_sessions ORDER BY id") == [
        ("r1", "connected"), ("r2", "ended")]
    # Both or neither: a batch PostgreSQL refuses (a second r1 in the status rows) changes no row.
    with pytest.raises(psycopg2.Error):
        await callbacks_store.upsert_with_recovery(
            node, [session_row(node, "r1", "ended"), session_row(node, "r1", "ended")], [], ["r1"])
    assert sql(pg_dsn, "SELECT session_id FROM callback_recovery") == [("r1",)]
    assert sql(pg_dsn, "SELECT status FROM callback_sessions WHERE id = 'r1'") == [("connected",)]
    # Without recovery rows it is the plain upsert.
    await callbacks_store.upsert_with_recovery(node, [session_row(node, "r3")], [], [])
    assert sql(pg_dsn, "SELECT count(*) FROM callback_sessions")[0][0] == 3
    # Recovered by a survivor (final), then the node's late snapshot: the sweep drops it unbilled.
    await callbacks_store.upsert_with_recovery(
        node, [session_row(node, "r1", "ended")], [], ["r1"])
    await callbacks_store.upsert_with_recovery(node, [session_row(node, "r1")], [rec("r1", ["A"])], [])
    assert sql(pg_dsn, "SELECT status FROM callback_sessions WHERE id = 'r1'") == [("ended",)]
    assert await PostgresRecoveryStore(two).remove_ended() == ["r1"]
