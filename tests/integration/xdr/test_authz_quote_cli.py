"""``cbserver quote`` as an operator runs it: a subprocess, one JSON object or one error line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cbserver.resources import checkout_dir

pytestmark = pytest.mark.integration

CLI = [str(Path(sys.executable).with_name("cbserver")), "quote"]


def run(dsn, *args):
    return subprocess.run([*CLI, "--dsn", dsn, *args], capture_output=True, text=True, timeout=60)


def test_quote_by_tariff_prints_one_stable_json_object(cat_dsn):
    out = run(cat_dsn, "--tariff", "Callback", "--number", "+1 (818) 555-0100", "--duration", "31",
              "--at", "2026-06-01T12:00:00Z")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1
    body = json.loads(out.stdout)
    assert body["matched_prefix"] == "1818" and body["number"] == "18185550100"
    assert body["charged_seconds"] == 36 and body["amount"] == "0.01200"
    assert body["currency"] == "USD" and body["period"] == "peak" and body["tariff"] == "Callback"
    assert body["rate"]["first_interval"] == 30 and body["rate"]["first_price"] == "0.02"
    assert list(body) == sorted(body)
    again = run(cat_dsn, "--tariff", "Callback", "--number", "18185550100", "--duration", "31",
                "--at", "2026-06-01T14:00:00+02:00")
    assert again.stdout == out.stdout


def test_quote_by_account_uses_its_rating_entry(cat_dsn):
    out = run(cat_dsn, "--account", "cb1008", "--number", "44 20 7123 4567", "--duration", "61",
              "--at", "2026-06-01T01:00:00Z")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["tariff"] == "Night" and body["period"] == "off-peak"
    assert body["charged_seconds"] == 120 and body["amount"] == "0.60000"
    fail = run(cat_dsn, "--account", "cb1001", "--access-code", "CALLBACK_FAIL", "--number", "1800",
               "--duration", "61", "--at", "2026-06-01T01:00:00Z")
    assert json.loads(fail.stdout)["tariff"] == "CallbackFail"


@pytest.mark.parametrize(("args", "message"), [
    (["--tariff", "Callback", "--number", "abc", "--duration", "10"], "contains 'a'"),
    (["--tariff", "Callback", "--number", "()", "--duration", "10"], "has no digits"),
    (["--tariff", "Callback", "--number", "1800", "--duration", "-5"], "--duration: must be from 0"),
    (["--tariff", "Callback", "--number", "1800", "--duration", "99999999"], "--duration: must be"),
    (["--tariff", "Callback", "--number", "1800", "--duration", "1.5"], "expected whole seconds"),
    (["--tariff", "Callback", "--number", "1800", "--duration", "9", "--at", "2026-06-01T12:00"],
     "has no time zone"),
    (["--tariff", "Nope", "--number", "1800", "--duration", "9"], "unknown tariff"),
    (["--account", "nobody", "--number", "1800", "--duration", "9"], "unknown account 'nobody'"),
    (["--tariff", "Callback", "--number", "3312", "--duration", "9"], "no rate in tariff"),
    (["--account", "cb1001", "--node", "node9", "--number", "1800", "--duration", "9"],
     "no voice rating entry"),
])
def test_bad_input_is_one_clear_line_and_exit_1(cat_dsn, args, message):
    out = run(cat_dsn, *args)
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cbserver quote: ") and message in lines[0], out.stderr


def test_database_without_the_schema_is_one_line_with_the_fix(empty_pg_dsn):
    out = run(empty_pg_dsn, "--tariff", "Callback", "--number", "1800", "--duration", "9")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        'cbserver quote: database error: relation "tariffs" does not exist '
        "(is the schema current? `cbserver db upgrade`)"]


def test_config_gives_the_dsn_and_the_node(cat_dsn, tmp_path):
    example = (checkout_dir() / "cbserver" / "data" / "cbserver.example.toml").read_text()
    config = tmp_path / "cbserver.toml"
    for node, expect in (("node1", 0), ("node9", 1)):
        text = example.replace('node = "node1"', f'node = "{node}"', 1)
        text = text.replace('dsn = "host=127.0.0.1 port=5432 dbname=cbserver user=cbserver"',
                            f'dsn = "{cat_dsn}"')
        config.write_text(text)
        out = subprocess.run([*CLI, "--config", str(config), "--account", "cb1001", "--number", "1800",
                              "--duration", "9"], capture_output=True, text=True, timeout=60)
        assert out.returncode == expect, out.stderr
        if expect:
            assert "node 'node9'" in out.stderr
        else:
            assert json.loads(out.stdout)["tariff"] == "Callback"
