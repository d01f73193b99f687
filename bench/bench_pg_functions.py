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

Usage: ``.venv/bin/python bench/bench_pg_functions.py [--n 3000] [--open 8] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
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
FUNCTIONS = ("SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions "
             "WHERE schemaname = 'public'")


def callback(b: Backend, i: int, sessions: list[str], keep: int) -> None:
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
    args = p.parse_args()
    b = Backend(scratch(base_dsn()))
    b.rows("SELECT set_config('track_functions', 'pl', false)")
    print(f"load average {os.getloadavg()[0]:.1f}; {args.n} callbacks per round, "
          f"{args.open} other sessions' holds", file=sys.stderr)
    sessions: list[str] = []
    for i in range(300):  # warm the plans and fill the holds
        callback(b, i, sessions, args.open)
    def counters() -> dict:
        """The functions' counters as they stand (this backend's pending ones flushed)."""
        b.rows("SELECT pg_stat_force_next_flush()")
        b.rows("SELECT pg_stat_clear_snapshot()")
        return {r[0]: r[1:] for r in b.rows(FUNCTIONS)}

    for r in range(args.rounds):
        before = counters()
        c0 = b.cpu()
        for i in range(args.n):
            callback(b, i, sessions, args.open)
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
