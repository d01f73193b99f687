"""cb_take_slot judges each holding process once and still decides as cb_slot_live (session 9).

cb_take_slot states cb_slot_live's rule again in its loop so that ``cb_node_alive`` is asked
once per process rather than once per slot (issue 17, item 1). On real PostgreSQL, an account
with slots in every state (unbound young and old, bound to a session not written yet young
and old, to an ended or refused session, to open sessions of a live, a dead and a stopped
process, several per process) is counted by both: the live slots are the same, the dead ones
are deleted, and ``cb_node_alive`` runs once per process.
"""

from __future__ import annotations

import time
import uuid

import psycopg2
import pytest

from tests.integration.xdr.helpers import query

pytestmark = pytest.mark.integration

TAKE = "SELECT taken, in_use FROM cb_take_slot(%s, 'cb1001', %s, 60, 60, %s)"
COUNT = "SELECT cb_count_slots('cb1001', 60, 60)"


def node(dsn: str, minutes_ago: int, stopped: bool = False) -> str:
    """A server_nodes row seen ``minutes_ago``; its instance id."""
    instance = str(uuid.uuid4())
    query(dsn, "INSERT INTO server_nodes (instance_id, node, hostname, pid, version, last_seen, "
               "stopped_at) VALUES (%s, 'node1', 'test', 1, 'test', "
               "now() - %s * interval '1 minute', CASE WHEN %s THEN now() END)",
          (instance, minutes_ago, stopped))
    return instance


def slot(dsn: str, callback: str | None, age: int, status: str | None = None,
         instance: str | None = None) -> str:
    """A slot taken ``age`` seconds ago, bound to ``callback`` (its session row if status)."""
    if status is not None:
        query(dsn, "INSERT INTO callback_sessions (id, application, mode, account_id, phone, "
                   "status, state, node, instance_id) VALUES (%s, 'web', 'simple', 'cb1001', "
                   "'1555', %s, '{}', 'node1', %s)", (callback, status, instance))
    slot_id = str(uuid.uuid4())
    query(dsn, "INSERT INTO callback_slots (slot_id, account_id, taken_at, callback_id) "
               "VALUES (%s, 'cb1001', %s, %s)", (slot_id, int(time.time()) - age, callback))
    return slot_id


def test_take_slot_counts_as_the_slot_rule_and_asks_each_process_once(cat_dsn):
    live, dead, stopped = node(cat_dsn, 0), node(cat_dsn, 10), node(cat_dsn, 0, stopped=True)
    keep = {slot(cat_dsn, None, 5), slot(cat_dsn, "young-unwritten", 5)}
    keep |= {slot(cat_dsn, f"open{i}", 300, "calling_destination", live) for i in range(4)}
    gone = {slot(cat_dsn, None, 600), slot(cat_dsn, "old-unwritten", 600),
            slot(cat_dsn, "ended", 5, "ended", live), slot(cat_dsn, "refused", 5, "refused", live)}
    gone |= {slot(cat_dsn, f"dead{i}", 5, "calling_destination", dead) for i in range(3)}
    gone |= {slot(cat_dsn, f"stopped{i}", 5, "calling_destination", stopped) for i in range(2)}
    # The rule's own statement (cb_slot_live) counts the live slots first.
    assert query(cat_dsn, COUNT) == [(len(keep),)]
    conn = psycopg2.connect(cat_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT set_config('track_functions', 'pl', false)")
            cur.execute(TAKE, (str(uuid.uuid4()), len(keep), "new"))
            assert cur.fetchall() == [(False, len(keep))]  # at the cap: refused
            # In this transaction: cb_node_alive once per process of an open session (3),
            # where cb_slot_live asked it once per such slot (9).
            cur.execute("SELECT calls FROM pg_stat_xact_user_functions "
                        "WHERE funcname = 'cb_node_alive'")
            assert cur.fetchall() == [(3,)]
    finally:
        conn.close()
    # The dead slots are gone, the live ones stay; below the cap a slot is taken.
    rows = {r[0] for r in query(cat_dsn, "SELECT slot_id::text FROM callback_slots")}
    assert rows == keep and not rows & gone
    new = str(uuid.uuid4())
    assert query(cat_dsn, TAKE, (new, len(keep) + 1, "new")) == [(True, len(keep) + 1)]
    rows = {r[0] for r in query(cat_dsn, "SELECT slot_id::text FROM callback_slots")}
    assert rows == keep | {new}
    assert not rows & gone
    assert query(cat_dsn, COUNT) == [(len(keep) + 1,)]
