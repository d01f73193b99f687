"""cb_reserve and cb_account_for_call on real PostgreSQL after session 9 (issue 17, item 1).

The holds are read once with each holding process judged once (cb_node_alive), and a
session's holds are updated in place: these tests pin the decisions that must not move
(a dead node's hold and an expired hold are purged and not counted, a live other node's hold
is counted by both functions alike) and the rows left (amounts exact, a leg no longer asked
for gone, a HOT update), and that the functions keep their index-scan settings.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg2
import pytest

from tests.integration.xdr.helpers import query

pytestmark = pytest.mark.integration

CODES = ["WEBCALLBACK", "", "CALLBACK_FAIL"]
RESERVE = ("SELECT done, balance, credit_limit, reserved, open_calls FROM cb_reserve("
           "%s, 'cb1001', 1, false, 'account:cb1001', 60, 10.00, NULL, %s, %s, NULL, 'balance', "
           "%s::text[], %s::numeric[], 'USD', %s, 600)")


def node(dsn: str, alive: bool = True) -> str:
    """A server_nodes row, seen now (alive) or ten minutes ago (dead); its instance id."""
    instance = str(uuid.uuid4())
    query(dsn, "INSERT INTO server_nodes (instance_id, node, hostname, pid, version, last_seen) "
               "VALUES (%s, 'node1', 'test', 1, 'test', now() - %s * interval '1 minute')",
          (instance, 0 if alive else 10))
    return instance


def hold(dsn: str, session: str, amount: str, instance: str, expires: str = "10 minutes") -> None:
    """A leg-A hold of ``amount`` on cb1001 for ``session`` by ``instance``."""
    query(dsn, "INSERT INTO balance_reservations (session_id, leg, account_id, owner_key, amount, "
               "currency, instance_id, expires_at) VALUES (%s, 'A', 'cb1001', 'account:cb1001', "
               "%s, 'USD', %s, now() + %s::interval)", (session, amount, instance, expires))


def held_by_account_for_call(dsn: str, session: str) -> tuple[Decimal, int]:
    """(reserved, open_calls) as cb_account_for_call reports them to ``session``."""
    row = query(dsn, "SELECT reserved, open_calls FROM cb_account_for_call('cb1001', %s, 60, "
                     "'node1', %s)", (session, CODES))[0]
    return row[0], row[1]


def holds(dsn: str) -> list:
    """Every hold: (session, leg, amount)."""
    return query(dsn, "SELECT session_id, leg, amount FROM balance_reservations "
                      "ORDER BY session_id, leg")


def test_a_dead_nodes_hold_is_neither_counted_nor_kept(cat_dsn):
    me, other, dead = node(cat_dsn), node(cat_dsn), node(cat_dsn, alive=False)
    hold(cat_dsn, "live-other", "1.50", other)
    hold(cat_dsn, "dead-one", "2.25", dead)
    assert held_by_account_for_call(cat_dsn, "s1") == (Decimal("1.50000"), 1)
    # The caller expected what cb_account_for_call said: the decision stands.
    row = query(cat_dsn, RESERVE, ("s1", Decimal("1.50"), 1, ["A"], [Decimal("0.5")], me))[0]
    assert row[0] is True and row[3:] == (Decimal("1.50000"), 1)
    assert holds(cat_dsn) == [("live-other", "A", Decimal("1.50000")),
                              ("s1", "A", Decimal("0.50000"))]


def test_an_expired_hold_is_neither_counted_nor_kept(cat_dsn):
    me = node(cat_dsn)
    hold(cat_dsn, "old", "3.00", me, expires="-1 second")
    hold(cat_dsn, "young", "0.25", me)
    assert held_by_account_for_call(cat_dsn, "s1") == (Decimal("0.25000"), 1)
    row = query(cat_dsn, RESERVE, ("s1", Decimal("0.25"), 1, ["A"], [Decimal("0.5")], me))[0]
    assert row[0] is True and row[3:] == (Decimal("0.25000"), 1)
    assert [h[0] for h in holds(cat_dsn)] == ["s1", "young"]


def test_a_refused_reservation_still_purges_and_reports_fresh_figures(cat_dsn):
    me, dead = node(cat_dsn), node(cat_dsn, alive=False)
    hold(cat_dsn, "dead-one", "2.25", dead)
    hold(cat_dsn, "live", "1.00", me)
    # The caller expected nothing held: refused, fresh figures back, the dead hold gone anyway.
    row = query(cat_dsn, RESERVE, ("s1", Decimal("0"), 0, ["A"], [Decimal("0.5")], me))[0]
    assert row == (False, Decimal("10.00"), None, Decimal("1.00000"), 1)
    assert [h[0] for h in holds(cat_dsn)] == ["live"]


def test_holds_of_a_live_node_stay_and_count_the_same_in_both_functions(cat_dsn):
    me, other = node(cat_dsn), node(cat_dsn)
    for i, instance in enumerate([me, other, other, me]):
        hold(cat_dsn, f"s{i}", f"0.{i + 1}", instance)
    assert held_by_account_for_call(cat_dsn, "mine") == (Decimal("1.00000"), 4)
    row = query(cat_dsn, RESERVE, ("mine", Decimal("1.0"), 4, ["A"], [Decimal("0.1")], me))[0]
    assert row[0] is True and row[3:] == (Decimal("1.00000"), 4)
    assert len(holds(cat_dsn)) == 5


def test_a_reservation_again_updates_the_legs_in_place_exactly(cat_dsn):
    me = node(cat_dsn)
    assert query(cat_dsn, RESERVE, ("s1", 0, 0, ["A"], [Decimal("0.12345")], me))[0][0]
    first = query(cat_dsn, "SELECT ctid, created_at FROM balance_reservations")[0]
    # legB's reservation: A again with a new amount, B new; both exact, A's row rewritten.
    conn = psycopg2.connect(cat_dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(RESERVE, ("s1", 0, 0, ["A", "B"], [Decimal("0.98765"), Decimal("4.5")], me))
            assert cur.fetchone()[0] is True
            # This transaction's own counts: one update, a HOT one (no index entry written).
            cur.execute("SELECT n_tup_upd, n_tup_hot_upd, n_tup_ins, n_tup_del "
                        "FROM pg_stat_xact_user_tables WHERE relname = 'balance_reservations'")
            assert cur.fetchone() == (1, 1, 1, 0)
    finally:
        conn.close()
    assert holds(cat_dsn) == [("s1", "A", Decimal("0.98765")), ("s1", "B", Decimal("4.50000"))]
    rows = query(cat_dsn, "SELECT leg, created_at > %s, expires_at - created_at, instance_id::text "
                          "FROM balance_reservations ORDER BY leg", (first[1],))
    assert [r[1] for r in rows] == [True, True]  # created_at is the latest reservation's now()
    assert all(r[2].total_seconds() == 600 and r[3] == me for r in rows)
    # A later reservation asking for leg B only drops leg A's hold.
    assert query(cat_dsn, RESERVE, ("s1", 0, 0, ["B"], [Decimal("0.01")], me))[0][0]
    assert holds(cat_dsn) == [("s1", "B", Decimal("0.01000"))]


def test_the_callback_path_functions_keep_to_index_scans(cat_dsn):
    rows = dict(query(cat_dsn, "SELECT proname, proconfig FROM pg_proc WHERE proname = ANY(%s)",
                      (["cb_reserve", "cb_account_for_call", "cb_take_slot", "cb_count_hits",
                        "cb_count_peek_hits", "cb_admit"],)))
    assert len(rows) == 6
    for name, config in rows.items():
        # cb_count_hits also forces its generic plan (test_count_hits_plan_pg.py).
        extra = ["plan_cache_mode=force_generic_plan"] if name == "cb_count_hits" else []
        assert sorted(config) == ["enable_bitmapscan=off", "enable_seqscan=off", *extra], name
    # 049: the holds have no index on expires_at or instance_id (they would stop HOT updates).
    indexes = {r[0] for r in query(cat_dsn, "SELECT indexname FROM pg_indexes "
                                            "WHERE tablename = 'balance_reservations'")}
    assert indexes == {"balance_reservations_pkey", "balance_reservations_owner"}
