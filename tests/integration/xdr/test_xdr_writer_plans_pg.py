"""The xDR writer's functions on real PostgreSQL keep to index scans (issue 17, item 1, session 9).

``cb_xdr_read_and_lock`` and ``cb_xdr_apply`` keep their plans per connection. A plan made
while ``xdrs`` (or ``accounts``, ``balance_reservations``) was nearly empty read them by
sequential scans for the connection's life, so every batch scanned every xDR ever stored.
These tests make the plans on a young database, then store many legs on the same connection,
and check with ``auto_explain`` that no table is scanned sequentially, and that the answers
are still exact: the stored legs of the batch and none other, the account locked and read,
the legs inserted once, the balance moved by exactly its delta, the holds released.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import psycopg2
import pytest

from tests.integration.xdr.helpers import balance, query

pytestmark = pytest.mark.integration

READ_AND_LOCK = "SELECT * FROM cb_xdr_read_and_lock(%s::text[], %s::text[])"
APPLY = ("SELECT * FROM cb_xdr_apply(%s::jsonb, ARRAY['cb1001']::text[], %s::numeric[], "
         "ARRAY[now()]::timestamptz[], '{}'::integer[], '{}'::numeric[], %s::text[], "
         "%s::char(1)[])")
OLD_LEGS = ("INSERT INTO xdrs (session_id, leg, account_id, cli, cld, node, disconnect_time, "
            "duration, charged_seconds, amount, currency, trigger_mode) SELECT 'old' || g, l, "
            "'cb1001', '1555', '1666', 'node1', now(), 0, 0, 0, 'USD', 'simple' "
            "FROM generate_series(1, %s) g, (VALUES ('A'), ('B')) v(l)")
HOLD = ("INSERT INTO balance_reservations (session_id, leg, account_id, owner_key, amount, "
        "currency, instance_id, expires_at) VALUES (%s, %s, 'cb1001', 'account:cb1001', 0.01, "
        "'USD', %s, now() + interval '10 minutes')")


def leg(session: str, name: str) -> list:
    """One xDR row in cbserver.db.xdr_store.COLUMNS order."""
    return [session, name, "cb1001", "1", "1555", "1666", "", "node1", None, None, None, None,
            None, None, "2026-01-01T00:00:00+00", "2026-01-01T00:01:00+00", 60, 60, "0.00150",
            "USD", 200, "", "simple", uuid.uuid4().hex, str(uuid.uuid4()), "9.5"]


class Writer:
    """One connection, as the xDR writer's: each batch is one transaction of the two calls."""

    def __init__(self, dsn: str):
        self.conn = psycopg2.connect(dsn)
        self.cur = self.conn.cursor()

    def batch(self, sessions: list[str], delta: str) -> tuple[list, list]:
        """Read and lock, then store both legs of each session not stored; both answers."""
        self.cur.execute(READ_AND_LOCK, (sessions, ["cb1001"]))
        read = self.cur.fetchall()
        stored = {r[1] for r in read if r[0] == "x"}
        fresh = [s for s in sessions if s not in stored]
        rows = [leg(s, x) for s in fresh for x in "AB"]
        self.cur.execute(APPLY, (json.dumps(rows), [Decimal(delta)],
                                 [s for s in fresh for _ in "AB"], ["A", "B"] * len(fresh)))
        applied = self.cur.fetchall()
        self.conn.commit()
        return read, applied

    def plans(self, sessions: list[str], delta: str) -> str:
        """The nested statements' plans of one batch (auto_explain, sent to this client)."""
        self.cur.execute("LOAD 'auto_explain'")
        for setting in ("log_min_duration = 0", "log_nested_statements = on",
                        "log_level = 'notice'"):
            self.cur.execute(f"SET auto_explain.{setting}")
        self.conn.commit()
        del self.conn.notices[:]
        self.batch(sessions, delta)
        return "".join(self.conn.notices)


def test_plans_made_on_a_young_database_stay_index_scans(cat_dsn):
    me = str(uuid.uuid4())
    query(cat_dsn, "INSERT INTO server_nodes (instance_id, node, hostname, pid, version, "
                   "last_seen) VALUES (%s, 'node1', 'test', 1, 'test', now())", (me,))
    w = Writer(cat_dsn)
    # Ten batches on an empty xdrs: PostgreSQL settles on the connection's generic plans.
    for i in range(10):
        w.batch([f"young{i}"], "-0.003")
    query(cat_dsn, OLD_LEGS, (20000,))
    for s in ("new1", "new2"):
        for x in "AB":
            query(cat_dsn, HOLD, (s, x, me))
    before = balance(cat_dsn, "cb1001")
    plans = w.plans(["old7", "young3", "new1", "new2", "old19999"], "-0.004")
    assert "cb_xdr_read_and_lock" in plans and "INSERT INTO xdrs" in plans, plans
    assert "Seq Scan" not in plans, plans
    assert "Index Only Scan using xdrs_session_leg on xdrs" in plans, plans
    # Exactly the batch's stored legs were seen, and only the two new sessions were stored.
    read, applied = w.batch(["old7", "young3", "new3", "old20001"], "-0.002")
    assert sorted(r[1:3] for r in read if r[0] == "x") == [
        ("old7", "A"), ("old7", "B"), ("young3", "A"), ("young3", "B")]
    assert [r[:2] + r[3:5] for r in read if r[0] == "a"] == [("a", "cb1001", 1, "debit")]
    assert sorted(applied) == [("new3", "A"), ("new3", "B"), ("old20001", "A"), ("old20001", "B")]
    assert balance(cat_dsn, "cb1001") == before - Decimal("0.006")
    n = query(cat_dsn, "SELECT count(*), count(DISTINCT (session_id, leg)) FROM xdrs")[0]
    assert n == (2 * 20000 + 2 * 10 + 4 + 4,) * 2
    assert query(cat_dsn, "SELECT count(*) FROM balance_reservations "
                          "WHERE session_id IN ('new1', 'new2')") == [(0,)]
    w.conn.close()


def test_a_leg_stored_twice_still_fails_the_batch(cat_dsn):
    w = Writer(cat_dsn)
    for i in range(8):
        w.batch([f"s{i}"], "-0.001")
    before = balance(cat_dsn, "cb1001")
    # The writer's retry rule: a leg it did not see stored raises unique_violation, and the
    # whole batch (balance included) rolls back.
    with pytest.raises(psycopg2.errors.UniqueViolation):
        w.cur.execute(APPLY, (json.dumps([leg("s2", "A")]), [Decimal("-0.5")], [], []))
    w.conn.rollback()
    assert balance(cat_dsn, "cb1001") == before
    w.conn.close()


def test_the_writer_functions_keep_to_index_scans(cat_dsn):
    rows = dict(query(cat_dsn, "SELECT proname, proconfig FROM pg_proc WHERE proname = ANY(%s)",
                      (["cb_xdr_read_and_lock", "cb_xdr_apply"],)))
    assert len(rows) == 2
    for name, config in rows.items():
        # force_generic_plan: the index-scan plan is made once per connection, not at every
        # call (a custom plan looked cheaper than the generic one for its one-element arrays).
        assert sorted(config) == ["enable_bitmapscan=off", "enable_seqscan=off",
                                  "plan_cache_mode=force_generic_plan"], name
