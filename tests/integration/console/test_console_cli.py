"""``cbserver xdrs`` and ``cbserver callbacks``: the console's calls from the shell, on seeded
PostgreSQL (``seed.py``), run as the real console script."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from cbserver.db.calls_store import XDR_COLUMNS
from tests.integration.console.seed import api_value, seed

pytestmark = pytest.mark.integration

CBS = str(Path(sys.executable).parent / "cbserver")


def cbs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CBS, *args], capture_output=True, text=True, timeout=120)


def test_xdrs_csv_is_every_row_of_the_filter(pg_dsn):
    expected = seed(pg_dsn)
    out = cbs("xdrs", "--csv", "--account", "acc3", "--from", "2026-06-02", "--dsn", pg_dsn)
    assert out.returncode == 0, out.stderr
    lines = list(csv.reader(io.StringIO(out.stdout, newline="")))
    assert lines[0] == list(XDR_COLUMNS)
    want = [r for r in expected
            if r["account_id"] == "acc3" and api_value(r["disconnect_time"]) >= "2026-06-02"]
    assert [int(line[0]) for line in lines[1:]] == [r["id"] for r in want]
    assert [line[-1] for line in lines[1:]] == [r["cause"] for r in want]
    table = cbs("xdrs", "--limit", "3", "--dsn", pg_dsn)
    assert table.returncode == 0 and "(3 rows)" in table.stdout and "more: --after " in table.stdout


def test_callbacks_list_hangup_and_report(pg_dsn):
    seed(pg_dsn)
    out = cbs("callbacks", "list", "--dsn", pg_dsn)
    assert out.returncode == 0, out.stderr
    assert "live001" in out.stdout and "live002" in out.stdout and "(2 rows)" in out.stdout
    out = cbs("callbacks", "hangup", "live001", "--dsn", pg_dsn)
    assert out.returncode == 0 and "hang-up requested for callback live001 on node node1" in out.stdout
    out = cbs("callbacks", "hangup", "past001", "--dsn", pg_dsn)
    assert out.returncode == 1 and "has ended already" in out.stderr
    out = cbs("callbacks", "hangup", "nosuch", "--dsn", pg_dsn)
    assert out.returncode == 1 and "no callback 'nosuch'" in out.stderr
    conn = psycopg2.connect(pg_dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT session_id, requested_by LIKE 'cli %' FROM callback_hangups")
        assert cur.fetchall() == [("live001", True)]
    conn.close()
    out = cbs("callbacks", "report", "causes", "--from", "2026-06-01", "--to", "2026-07-01", "--csv",
              "--dsn", pg_dsn)
    rows = list(csv.DictReader(io.StringIO(out.stdout, newline="")))
    assert sum(int(r["callbacks"]) for r in rows) == 40


def test_bad_filters_are_one_line_naming_the_option(pg_dsn):
    for args, option in ((("--limit", "5000"), "--limit"), (("--prefix", "1' OR 1=1"), "--prefix"),
                         (("--from", "soon"), "--from")):
        out = cbs("xdrs", *args, "--dsn", pg_dsn)
        assert out.returncode == 1 and out.stderr.startswith(f"cbserver xdrs: {option}:"), out.stderr
        assert "Traceback" not in out.stderr
