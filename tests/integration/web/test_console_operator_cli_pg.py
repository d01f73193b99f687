"""``cbserver operator`` against PostgreSQL: add, list, password, role, disable, enable.

The real CLI in a subprocess (``--dsn``, the password on stdin); the rows it leaves are read
back with SQL, and a session row stands for a logged-in browser that a password change or a
disable must log out.
"""

from __future__ import annotations

import subprocess

import psycopg2
import pytest

from tests.support.console import CLI

pytestmark = pytest.mark.integration

GOOD = "Sup3r-secret-pw"


def cli(dsn: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """``cbserver operator ARGS --dsn DSN``."""
    return subprocess.run([CLI, "operator", *args, "--dsn", dsn], input=stdin, text=True,
                          capture_output=True, timeout=60)


def query(dsn: str, sql: str, *params):
    """Rows of one statement."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
    conn.close()
    return rows


def open_session(dsn: str, name: str, tag: str) -> None:
    """A session row, as a login leaves one."""
    query(dsn, "INSERT INTO operator_sessions (id_hash, operator, csrf_token) VALUES (%s, %s, 't')",
          tag, name)


def test_operator_lifecycle(pg_dsn):
    add = cli(pg_dsn, "add", "bob", "--role", "admin", "--password-stdin", stdin=GOOD + "\n")
    assert add.returncode == 0 and "operator bob added (admin)" in add.stdout
    ((stored,),) = query(pg_dsn, "SELECT password_hash FROM operators WHERE name = 'bob'")
    assert stored.startswith("scrypt$32768$8$1$") and GOOD not in stored
    again = cli(pg_dsn, "add", "bob", "--role", "readonly", "--password-stdin", stdin=GOOD + "\n")
    assert again.returncode == 1 and "already exists" in again.stderr

    listed = cli(pg_dsn, "list")
    assert listed.returncode == 0 and listed.stdout.startswith("bob\tadmin\tenabled\t")

    open_session(pg_dsn, "bob", "s1")
    pw = cli(pg_dsn, "password", "bob", "--password-stdin", stdin="N3w-secret-pw!\n")
    assert pw.returncode == 0
    ((changed,),) = query(pg_dsn, "SELECT password_hash FROM operators WHERE name = 'bob'")
    assert changed != stored
    assert query(pg_dsn, "SELECT count(*) FROM operator_sessions") == [(0,)]

    assert cli(pg_dsn, "role", "bob", "readonly").returncode == 0
    open_session(pg_dsn, "bob", "s2")
    assert cli(pg_dsn, "disable", "bob").returncode == 0
    assert query(pg_dsn, "SELECT role, disabled FROM operators") == [("readonly", True)]
    assert query(pg_dsn, "SELECT count(*) FROM operator_sessions") == [(0,)]
    assert cli(pg_dsn, "enable", "bob").returncode == 0
    assert "bob\treadonly\tenabled" in cli(pg_dsn, "list").stdout


@pytest.mark.parametrize("args,stdin,why", [
    (("add", "Bad Name", "--role", "admin"), GOOD, "not a valid operator name"),
    (("add", "carol", "--role", "admin"), "short", "not strong enough"),
    (("add", "carol", "--role", "admin"), "alllowercaseletters", "not strong enough"),
    (("password", "nobody"), GOOD, "no operator named 'nobody'"),
    (("disable", "nobody"), "", "no operator named 'nobody'"),
])
def test_refusals_are_one_line_and_change_nothing(pg_dsn, args, stdin, why):
    extra = ("--password-stdin",) if args[0] in ("add", "password") else ()
    done = cli(pg_dsn, *args, *extra, stdin=stdin + "\n")
    assert done.returncode == 1 and why in done.stderr and "Traceback" not in done.stderr
    assert query(pg_dsn, "SELECT count(*) FROM operators") == [(0,)]
