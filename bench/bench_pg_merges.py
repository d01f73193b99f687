"""PostgreSQL CPU of the callback path's merged statements against the two each replaced
(issue 17, item 1; docs/bench-callbacks.md, "Fewer round trips (session 7)").

On a scratch database of the checkout's cluster (``cbserver pg start`` first), one psycopg2
connection in autocommit (one transaction per statement, as the pool runs them) repeats each
form ``--n`` times, in alternating rounds, and prints the backend's CPU time per repetition
(read from ``/proc/<backend pid>/stat``, so other processes' load moves it less than wall
time) and the wall time:

* admission: ``cb_count_peek_hits`` then ``cb_take_slot`` (two statements, two commits) against
  ``cb_admit`` (one);
* legB's re-authorization: ``cb_account_for_call`` then ``cb_reserve`` against
  ``cb_reserve_again`` (one, when nothing moved; the forms store the same holds).

Usage: ``.venv/bin/python bench/bench_pg_merges.py [--n 2000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "integration" / "xdr" / "fixture.sql"
CODES = ["WEBCALLBACK", "", "CALLBACK_FAIL"]
SCRATCH = "cbs_bench_merges"


def base_dsn() -> str:
    """The checkout's cluster, as ``cbserver pg`` runs it."""
    return f"host={ROOT / 'var' / 'pg' / 'run'} port=5432 user=cbserver"


def scratch(dsn: str) -> str:
    """A fresh database with the schema, the functions and the test catalog."""
    admin = psycopg2.connect(dsn + " dbname=postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {SCRATCH}")
        cur.execute(f"CREATE DATABASE {SCRATCH}")
    admin.close()
    target = f"{dsn} dbname={SCRATCH}"
    subprocess.run([str(ROOT / ".venv" / "bin" / "cbserver"), "db", "upgrade", "--dsn", target],
                   check=True, stdout=subprocess.DEVNULL)
    conn = psycopg2.connect(target)
    with conn, conn.cursor() as cur:
        cur.execute(FIXTURE.read_text())
    conn.close()
    return target


class Backend:
    """One connection and the CPU its server process has used."""

    def __init__(self, dsn: str):
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self.cur = self.conn.cursor()
        self.cur.execute("SELECT pg_backend_pid()")
        self.pid = self.cur.fetchone()[0]
        self.instance = str(uuid.uuid4())
        self.cur.execute("INSERT INTO server_nodes (instance_id, node, hostname, pid, version, "
                         "last_seen) VALUES (%s, 'node1', 'bench', %s, 'bench', now())",
                         (self.instance, os.getpid()))

    def cpu(self) -> float:
        """Seconds of CPU (user + system) of the backend so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rows(self, sql: str, params=()):
        """Run one statement (its own transaction) and return its rows."""
        self.cur.execute(sql, params)
        return self.cur.fetchall()


RESERVE = ("SELECT done FROM cb_reserve(%s, 'cb1001', 1, false, 'account:cb1001', 60, 0, NULL, 0, "
           "0, 0.01, 'balance', ARRAY['A','B']::text[], ARRAY[0.001,0.001]::numeric[], 'USD', "
           "%s, 600)")
AGAIN = ("SELECT done FROM cb_reserve_again(%s, 'cb1001', 'node1', %s::text[], %s, 1, false, "
         "'account:cb1001', 60, 0, NULL, 0, 0, 0.01, 'balance', ARRAY['A','B']::text[], "
         "ARRAY[0.001,0.001]::numeric[], 'USD', %s, 600)")


def forms(b: Backend):
    """{name: one repetition} of each form (i: the repetition's number)."""
    fingerprint = b.rows("SELECT fingerprint FROM cb_account_for_call('cb1001', 's', 60, "
                         "'node1', %s)", (CODES,))[0][0]
    kinds, peek = ["client", "phone", "account"], ["auth_client", "auth_account"]

    # One client address for every request (as bench_callbacks.py's client), a new number and
    # a new account each time: an account's slots are few, as in service (the slot rule scans
    # the account's slots).
    def admit_two(i):
        account = f"two{uuid.uuid4().hex}"
        b.rows("SELECT * FROM cb_count_peek_hits(%s, %s, %s, %s, 600, 0)",
               (kinds, ["192.0.2.1", f"1555{i}", account], peek,
                ["192.0.2.1", f"{account} 192.0.2.1"]))
        b.rows("SELECT * FROM cb_take_slot(%s, %s, 2, 60, 60, %s)",
               (str(uuid.uuid4()), account, uuid.uuid4().hex))

    def admit_one(i):
        account = f"one{uuid.uuid4().hex}"
        b.rows("SELECT * FROM cb_admit(%s::text[], %s::text[], %s::float8[], %s::text[], "
               "%s::text[], %s::float8[], 600, 0, 12.5::float8, 600, %s, %s, 2, 60, 60, %s)",
               (kinds, ["192.0.2.2", f"1556{i}", account], [1e9] * 3, peek,
                ["192.0.2.2", f"{account} 192.0.2.2"], [1e9] * 2, str(uuid.uuid4()), account,
                uuid.uuid4().hex))

    def legb_two(i):
        b.rows("SELECT * FROM cb_account_for_call('cb1001', 'legb', 60, 'node1', %s)", (CODES,))
        assert b.rows(RESERVE, ("legb", b.instance))[0][0]

    def legb_one(i):
        assert b.rows(AGAIN, ("legb", CODES, fingerprint, b.instance))[0][0]

    return {"admission: count_peek + take_slot": admit_two, "admission: cb_admit": admit_one,
            "legB: account_for_call + reserve": legb_two, "legB: cb_reserve_again": legb_one}


def main() -> None:
    """Run the rounds and print the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000, help="repetitions per form and round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    args = p.parse_args()
    b = Backend(scratch(base_dsn()))
    print(f"load average {os.getloadavg()[0]:.1f}; {args.n} repetitions per form and round",
          file=sys.stderr)
    results: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for name, form in forms(b).items():
            for i in range(100):  # warm the plans
                form(i)
            c0, t0 = b.cpu(), time.monotonic()
            for i in range(args.n):
                form(i)
            results.setdefault(name, []).append(((b.cpu() - c0) * 1000 / args.n,
                                                 (time.monotonic() - t0) * 1000 / args.n))
    print("| form | backend CPU ms per repetition (each round) | wall ms (each round) |")
    print("| --- | --- | --- |")
    for name, runs in results.items():
        cpu = " / ".join(f"{c:.3f}" for c, _ in runs)
        wall = " / ".join(f"{w:.2f}" for _, w in runs)
        print(f"| {name} | {cpu} | {wall} |")


if __name__ == "__main__":
    main()
