"""PostgreSQL time of the callback path's SQL functions, each alone (issue 17, item 1, session 9).

On a scratch database of the checkout's cluster (``cbserver pg start`` first; the schema, the
functions and the test catalog of ``tests/integration/xdr/fixture.sql``), one psycopg2
connection in autocommit replays a callback's function calls ``--n`` times: ``cb_admit``,
``cb_account_for_call``, legA's ``cb_reserve``, legB's ``cb_reserve_again``, and the release of
the holds of the session ``--open`` callbacks earlier (as the xDR writer does), so that the
account always has about ``--open`` other sessions' holds, as under load. It prints the
backend's CPU per callback (``/proc``) and, from ``pg_stat_user_functions``
(``track_functions = 'pl'`` for this connection), each function's calls, total and self time
per call. The signatures are those of a326b3d, so the same script times an older checkout.

With ``--writer`` the holds are released as the xDR writer does it (cbserver/db/xdr_store.py):
``cb_xdr_read_and_lock`` then ``cb_xdr_apply`` (the session's two legs stored, the balance
moved) in one transaction, so ``xdrs`` grows by two legs per callback as in service;
``--xdrs N`` stores N older legs first (after the plans are made, as on a node started on a
young database).

Usage: ``.venv/bin/python bench/bench_pg_functions.py [--n 3000] [--open 8] [--rounds 2]
[--writer [--xdrs 100000]] [--reset cb_xdr_read_and_lock,cb_xdr_apply]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid

from bench_pg_merges import CODES, Backend, base_dsn, scratch

ADMIT = ("SELECT * FROM cb_admit(%s::text[], %s::text[], %s::float8[], %s::text[], %s::text[], "
         "%s::float8[], 600, 0, 12.5::float8, 600, %s, %s, 1000, 60, 60, %s)")
ACCOUNT = "SELECT * FROM cb_account_for_call('cb1001', %s, 60, 'node1', %s)"
RESERVE = ("SELECT done FROM cb_reserve(%s, 'cb1001', 1, false, 'account:cb1001', 60, %s, NULL, "
           "0, 0, 0.0001, 'balance', %s::text[], %s::numeric[], 'USD', %s, 600)")
AGAIN = ("SELECT done FROM cb_reserve_again(%s, 'cb1001', 'node1', %s::text[], %s, 1, false, "
         "'account:cb1001', 60, %s, NULL, 0, 0, 0.0001, 'balance', ARRAY['A','B']::text[], "
         "ARRAY[0.001,0.002]::numeric[], 'USD', %s, 600)")
RELEASE = "DELETE FROM balance_reservations WHERE session_id = %s"
READ_AND_LOCK = "SELECT * FROM cb_xdr_read_and_lock(%s::text[], ARRAY['cb1001']::text[])"
APPLY = ("SELECT * FROM cb_xdr_apply(%s::jsonb, ARRAY['cb1001']::text[], ARRAY[-0.003]::numeric[], "
         "ARRAY[now()]::timestamptz[], '{}'::integer[], '{}'::numeric[], %s::text[], "
         "%s::char(1)[])")
OLD_XDRS = ("INSERT INTO xdrs (session_id, leg, account_id, cli, cld, node, disconnect_time, "
            "duration, charged_seconds, amount, currency, trigger_mode) SELECT 'old' || g, l, "
            "'cb1001', '1555', '1666', 'node1', now(), 0, 0, 0, 'USD', 'simple' "
            "FROM generate_series(1, %s) g, (VALUES ('A'), ('B')) v(l)")
FUNCTIONS = ("SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions "
             "WHERE schemaname = 'public'")


def leg(session: str, name: str, instance: str) -> list:
    """One xDR row in xdr_store.COLUMNS order, as the writer sends it."""
    return [session, name, "cb1001", "1", "1555", "1666", "", "node1", None, None, None, None,
            None, None, "2026-01-01T00:00:00+00", "2026-01-01T00:01:00+00", 60, 60, "0.0015",
            "USD", 200, "", "simple", uuid.uuid4().hex, instance, "9.5"]


def write(b: Backend, session: str) -> None:
    """The xDR writer's batch for one callback's two legs: read and lock, then apply."""
    b.conn.autocommit = False
    try:
        stored = b.rows(READ_AND_LOCK, ([session],))
        assert not [r for r in stored if r[0] == "x"], "leg stored twice"
        rows = json.dumps([leg(session, "A", b.instance), leg(session, "B", b.instance)])
        assert len(b.rows(APPLY, (rows, [session, session], ["A", "B"]))) == 2
        b.conn.commit()
    finally:
        b.conn.autocommit = True


def callback(b: Backend, i: int, sessions: list[str], keep: int, writer: bool = False) -> None:
    """One callback's calls, in the order the server makes them."""
    if i % 200 == 0:  # the node's heartbeat (cbserver/db/pool.py): its holds stay live
        b.cur.execute("UPDATE server_nodes SET last_seen = now() WHERE instance_id = %s",
                      (b.instance,))
    s = uuid.uuid4().hex
    b.rows(ADMIT, (["client", "phone", "account"], ["192.0.2.1", f"1555{i}", "cb1001"],
                   [1e9] * 3, ["auth_client", "auth_account"], ["192.0.2.1", "cb1001 192.0.2.1"],
                   [1e9] * 2, str(uuid.uuid4()), "cb1001", s))
    row = b.rows(ACCOUNT, (s, CODES))[0]
    balance, fingerprint = row[5], row[-1]
    assert b.rows(RESERVE, (s, balance, ["A"], [0.001], b.instance))[0][0]
    assert b.rows(AGAIN, (s, CODES, fingerprint, balance, b.instance))[0][0]
    sessions.append(s)
    if len(sessions) > keep:
        if writer:
            write(b, sessions.pop(0))
        else:
            b.cur.execute(RELEASE, (sessions.pop(0),))
        # The slot of that callback as well, so cb_take_slot's scan stays as short as in service.
        b.cur.execute("DELETE FROM callback_slots WHERE account_id = 'cb1001' AND callback_id NOT IN "
               "(SELECT unnest(%s::text[]))", (sessions,))


def main() -> None:
    """Run the rounds and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=3000, help="callbacks per round")
    p.add_argument("--open", type=int, default=8, help="other sessions holding on the account")
    p.add_argument("--rounds", type=int, default=2, help="rounds")
    p.add_argument("--writer", action="store_true",
                   help="release the holds with the xDR writer's functions (xdrs grows)")
    p.add_argument("--xdrs", type=int, default=0,
                   help="with --writer: callbacks' worth of older legs stored after the warm-up")
    p.add_argument("--reset", default="",
                   help="comma-separated functions whose SET clauses are dropped first "
                        "(ALTER FUNCTION ... RESET ALL): times them as before session 9")
    args = p.parse_args()
    b = Backend(scratch(base_dsn()))
    for name in filter(None, args.reset.split(",")):
        b.cur.execute(f"ALTER FUNCTION {name} RESET ALL")
    b.rows("SELECT set_config('track_functions', 'pl', false)")
    print(f"load average {os.getloadavg()[0]:.1f}; {args.n} callbacks per round, "
          f"{args.open} other sessions' holds", file=sys.stderr)
    sessions: list[str] = []
    for i in range(300):  # warm the plans and fill the holds
        callback(b, i, sessions, args.open, args.writer)
    if args.xdrs:
        # No ANALYZE: it would make the connection plan again; autovacuum's comes later.
        b.cur.execute(OLD_XDRS, (args.xdrs,))
    def counters() -> dict:
        """The functions' counters as they stand (this backend's pending ones flushed)."""
        b.rows("SELECT pg_stat_force_next_flush()")
        b.rows("SELECT pg_stat_clear_snapshot()")
        return {r[0]: r[1:] for r in b.rows(FUNCTIONS)}

    for r in range(args.rounds):
        before = counters()
        c0 = b.cpu()
        for i in range(args.n):
            callback(b, i, sessions, args.open, args.writer)
        cpu = (b.cpu() - c0) * 1000 / args.n
        stats = [(name, calls - before.get(name, (0, 0, 0))[0],
                  total - before.get(name, (0, 0, 0))[1], own - before.get(name, (0, 0, 0))[2])
                 for name, (calls, total, own) in counters().items()]
        stats = [s for s in stats if s[1] > 0]
        print(f"\nround {r + 1}: backend CPU {cpu:.3f} ms per callback")
        print("| function | calls/cb | total ms/call | self ms/call | total ms/cb |")
        print("| --- | --- | --- | --- | --- |")
        for name, calls, total, own in sorted(stats, key=lambda x: -x[2]):
            print(f"| `{name}` | {calls / args.n:.2f} | {total / calls:.4f} | {own / calls:.4f} "
                  f"| {total / args.n:.4f} |")


if __name__ == "__main__":
    main()
