"""The catalog CLI run as a subprocess against the real PostgreSQL."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

pytestmark = pytest.mark.integration

CBSERVER = str(Path(sys.executable).parent / "cbserver")


def cbs(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``cbserver ARGS`` and return the finished process."""
    proc = subprocess.run([CBSERVER, *args], capture_output=True, text=True,
                          timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"cbserver {' '.join(args)} failed: {proc.stderr}")
    return proc


def _query(dsn, sql, params=()):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def _setup(dsn):
    for prefix, country in (("55", "Brazil"), ("1", "USA/Canada"), ("1818", "USA")):
        cbs("catalog", "create", "destination", "--json",
            json.dumps({"prefix": prefix, "country": country}), "--dsn", dsn)
    cbs("catalog", "create", "tariff", "--json", '{"name": "Callback", "currency": "USD"}', "--dsn", dsn)
    cbs("catalog", "create", "product", "--json", json.dumps(
        {"name": "Callback Services", "currency": "USD",
         "rating_list": [{"node": "node1", "access_code": "WEBCALLBACK", "tariff": "Callback"}]}),
        "--dsn", dsn)
    cbs("catalog", "create", "customer", "--json", '{"name": "Retail", "currency": "USD"}', "--dsn", dsn)


HEADER = "prefix,first_interval,next_interval,first_price,next_price,effective_from\n"


def test_rates_import_then_export_round_trips(pg_dsn, tmp_path):
    _setup(pg_dsn)
    f = tmp_path / "rates.csv"
    f.write_text(HEADER + "55,60,6,0.05,0.05,2026-01-01T00:00:00+00:00\n"
                          "1818,30,6,0.02,0.01,2026-01-01T00:00:00-08:00\n")
    out = cbs("rates", "import", "--tariff", "Callback", str(f), "--dsn", pg_dsn).stdout
    assert "2 created" in out
    exported = cbs("rates", "export", "--tariff", "Callback", "--dsn", pg_dsn).stdout
    rows = list(csv.DictReader(exported.splitlines()))
    assert [(r["prefix"], r["first_price"], r["effective_from"]) for r in rows] == [
        ("1818", "0.02", "2026-01-01T08:00:00+00:00"), ("55", "0.05", "2026-01-01T00:00:00+00:00")]
    again = tmp_path / "again.csv"
    again.write_text(exported)
    assert "2 unchanged" in cbs("rates", "import", "--tariff", "Callback", str(again), "--dsn", pg_dsn).stdout


def test_rates_import_reports_every_bad_row_and_writes_nothing(pg_dsn, tmp_path):
    _setup(pg_dsn)
    f = tmp_path / "rates.csv"
    f.write_text(HEADER + "55,60,6,0.05,0.05,2026-01-01T00:00:00Z\n"   # line 2: good
                          "44,60,6,0.05,0.05,2026-01-01T00:00:00Z\n"   # 3: not in the register
                          "1,60,6,abc,0.05,2026-01-01T00:00:00Z\n"     # 4: bad number
                          "1,60,6,0.05\n"                              # 5: wrong number of fields
                          "1818,60,-6,0.05,0.05,2026-01-01T00:00:00Z\n"  # 6: negative interval
                          "1,60,6,0.05,0.05,2026-01-01T00:00:00\n")    # 7: no time zone
    proc = cbs("rates", "import", "--tariff", "Callback", str(f), "--dsn", pg_dsn, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[:5] == [
        "line 3: prefix: '44' is not in the destination register",
        "line 4: first_price: 'abc' is not a number",
        "line 5: columns: 4 fields, the header has 6",
        "line 6: next_interval: must be from 1 to 86400, got -6",
        "line 7: effective_from: must carry a time zone (e.g. 2026-01-01T00:00:00+00:00)"]
    assert "5 bad row(s): nothing was written" in lines[-1]
    assert _query(pg_dsn, "SELECT count(*) FROM rates") == [(0,)]


def test_rates_import_refuses_wrong_columns_and_bad_encoding(pg_dsn, tmp_path):
    _setup(pg_dsn)
    f = tmp_path / "cols.csv"
    f.write_text("prefix,price\n55,0.05\n")
    proc = cbs("rates", "import", "--tariff", "Callback", str(f), "--dsn", pg_dsn, check=False)
    assert proc.returncode == 1 and "line 1: header: unknown column(s) price" in proc.stderr
    assert "missing column(s) first_interval" in proc.stderr
    f = tmp_path / "latin1.csv"
    body = "55,60,6,0.05,0.05,2026-01-01T00:00:00Z\n# S\xe3o Paulo\n"
    f.write_bytes(HEADER.encode() + body.encode("latin-1"))
    proc = cbs("rates", "import", "--tariff", "Callback", str(f), "--dsn", pg_dsn, check=False)
    assert proc.returncode == 1 and "line 3: encoding: not UTF-8" in proc.stderr
    assert _query(pg_dsn, "SELECT count(*) FROM rates") == [(0,)]


def test_unknown_tariff_is_one_clear_line(pg_dsn, tmp_path):
    f = tmp_path / "rates.csv"
    f.write_text(HEADER + "55,60,6,0.05,0.05,2026-01-01T00:00:00Z\n")
    proc = cbs("rates", "import", "--tariff", "Nope", str(f), "--dsn", pg_dsn, check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == "cbserver rates: no tariff 'Nope'"


def test_accounts_generate_activate_and_show(pg_dsn, tmp_path):
    _setup(pg_dsn)
    proc = cbs("accounts", "generate", "--customer", "Retail", "--product", "Callback Services",
               "--quantity", "250", "--batch", "cards-1", "--prefix", "cb1818", "--length", "9",
               "--opening-balance", "20", "--web-credentials", "auto", "--time-zone", "America/Sao_Paulo",
               "--language", "pt-BR", "--distributor", "Kiosk 7", "--expiration-date",
               "2027-01-01T00:00:00+00:00", "--avail-after-first-use", "90", "--avail-after-last-use", "30",
               "--csv-dir", str(tmp_path / "cards"), "--progress", "always", "--dsn", pg_dsn)
    path = proc.stdout.strip()
    assert os.path.dirname(path) == str(tmp_path / "cards")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert "writing" in proc.stderr and "100%" in proc.stderr
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 250 and all(r["id"].startswith("cb1818") and len(r["id"]) == 11 for r in rows)
    shown = json.loads(cbs("accounts", "show", rows[0]["id"], "--dsn", pg_dsn).stdout)
    assert (shown["status"], shown["balance"], shown["batch"], shown["language"], shown["distributor"]) == \
        ("inactive", "20", "cards-1", "pt-BR", "Kiosk 7")
    assert "password_hash" not in shown and shown["has_password"] is True
    activated = cbs("accounts", "activate", "--batch", "cards-1", "--dsn", pg_dsn).stdout
    assert "250 account(s) activated" in activated
    assert _query(pg_dsn, "SELECT DISTINCT status FROM accounts") == [("active",)]


def test_accounts_generate_infeasible_is_refused_with_the_number_possible(pg_dsn, tmp_path):
    _setup(pg_dsn)
    proc = cbs("accounts", "generate", "--customer", "Retail", "--product", "Callback Services",
               "--quantity", "1000", "--batch", "b", "--prefix", "55", "--length", "4",
               "--csv-dir", str(tmp_path), "--dsn", pg_dsn, check=False)
    assert proc.returncode == 1
    assert "only 100 IDs are possible" in proc.stderr and "Traceback" not in proc.stderr
    assert _query(pg_dsn, "SELECT count(*) FROM batches") == [(0,)]


def test_activate_single_account_and_unknown_account(pg_dsn):
    _setup(pg_dsn)
    cbs("catalog", "create", "account", "--json", json.dumps(
        {"id": "cb1818000001", "customer": "Retail", "product": "Callback Services", "status": "inactive"}),
        "--dsn", pg_dsn)
    assert "1 account(s)" in cbs("accounts", "activate", "--account", "cb1818000001", "--dsn", pg_dsn).stdout
    proc = cbs("accounts", "show", "nobody", "--dsn", pg_dsn, check=False)
    assert proc.returncode == 1 and "no account 'nobody'" in proc.stderr


def test_catalog_validation_error_names_the_field(pg_dsn):
    proc = cbs("catalog", "create", "tariff", "--json", '{"name": "T", "currency": "XYZ"}', "--dsn", pg_dsn,
               check=False)
    assert proc.returncode == 1 and "currency: unknown currency 'XYZ'" in proc.stderr
    cbs("catalog", "create", "tariff", "--json", '{"name": "T", "currency": "USD"}', "--dsn", pg_dsn)
    proc = cbs("catalog", "update", "tariff", "T", "--json", '{"currency": "EUR"}', "--dsn", pg_dsn,
               check=False)
    assert proc.returncode == 1 and "currency cannot be changed" in proc.stderr


def test_unreachable_database_is_one_line_not_a_hang(tmp_path):
    proc = cbs("accounts", "show", "x", "--dsn", f"host={tmp_path}/nowhere port=5432 user=cbserver dbname=x",
               check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("cbserver accounts: cannot use the database:")
    assert "Traceback" not in proc.stderr
