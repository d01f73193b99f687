"""The real server under twistd: start, /healthz, SIGTERM, and each start-up failure."""

import json
import subprocess

import psycopg2
import pytest

from tests.support.server import TWISTD, start, terminate, wait_health, write_config

pytestmark = pytest.mark.integration


def test_twistd_lists_the_plugin():
    out = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, check=True).stdout
    assert "cbserver" in out


def test_starts_answers_healthz_and_exits_zero_on_sigterm(tmp_path, pg_dsn):
    config, port = write_config(tmp_path, pg_dsn)
    proc = start(config)
    try:
        body = wait_health(port, 200, proc)
    finally:
        code, out = terminate(proc)
    assert body["status"] == "ok" and body["database"]["status"] == "ok"
    assert code == 0, out
    assert "Traceback" not in out
    # The node registered itself and marked its clean stop.
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), count(stopped_at) FROM server_nodes")
        assert cur.fetchone() == (1, 1)
    # The self-signed certificate was generated on first run, key owner-only.
    key = tmp_path / "state" / "tls" / "key.pem"
    assert key.exists() and (key.stat().st_mode & 0o077) == 0


def run_with_json_logs(tmp_path, dsn, **overrides) -> list[dict]:
    """Start twistd with JSON log lines, wait until healthy, stop it; its log events."""
    config, port = write_config(tmp_path, dsn, **overrides)
    proc = start(config, twistd_options=("--logger", "cbserver.logs.json_stdout"))
    try:
        wait_health(port, 200, proc)
    finally:
        code, out = terminate(proc)
    assert code == 0, out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_json_log_lines_for_log_shippers(tmp_path, pg_dsn):
    events = run_with_json_logs(tmp_path, pg_dsn)
    assert any(e.get("log_format", "").startswith("database ready") for e in events)
    ready = next(e for e in events if e.get("log_format", "").startswith("cbserver ready"))
    assert ready["node"] == "node1"
    # Each instance's page and the address users are given; the shipped example agrees.
    page = next(e for e in events if e.get("log_format", "").startswith("application {app}: page"))
    assert (page["path"], page["address"]) == ("/web-callback", "https://127.0.0.1:8901/web-callback")
    assert not [e for e in events if "callback_page_address" in str(e.get("mismatch", ""))]


def test_a_page_address_that_leads_elsewhere_is_warned_about(tmp_path, pg_dsn):
    events = run_with_json_logs(tmp_path, pg_dsn, **{
        'callback_page_address = "https://127.0.0.1:8901/web-callback"':
            'callback_page_address = "https://cb.example.net/callback"'})
    warned = [e for e in events if "mismatch" in e and e["log_level"]["name"] == "warn"]
    assert len(warned) == 1 and "has path '/callback'" in warned[0]["mismatch"]


def test_unreachable_database_keeps_retrying_and_healthz_says_why(tmp_path, pg_cluster):
    dsn = f"host={tmp_path}/nowhere port=5432 user=cbserver dbname=cbserver"
    config, port = write_config(tmp_path, dsn)
    proc = start(config)
    try:
        body = wait_health(port, 503, proc)
    finally:
        code, out = terminate(proc)
    assert body["status"] == "unavailable"
    assert body["database"]["status"] == "down"
    assert "No such file" in body["database"]["reason"] or "connect" in body["database"]["reason"]
    assert code == 0, out
    assert "retrying in" in out


def test_old_schema_refuses_to_start_with_the_upgrade_command(tmp_path, empty_pg_dsn):
    config, _port = write_config(tmp_path, empty_pg_dsn)
    proc = start(config)
    code, out = terminate(proc, timeout=30) if proc.wait(timeout=30) is None else (
        proc.returncode, proc.stdout.read())
    assert code == 1
    assert "schema is at version 0" in out and "cbserver db upgrade" in out
    assert "Traceback" not in out


def test_config_error_is_one_line_and_nonzero(tmp_path, pg_dsn):
    config, _port = write_config(tmp_path, pg_dsn, **{"[rtp]": "[rtp]\nportz = 1"})
    res = subprocess.run([TWISTD, "-n", "--pidfile=", "cbserver", "--config", str(config)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode != 0
    text = res.stdout + res.stderr
    assert "rtp.portz" in text and "did you mean 'ports'" in text
    assert "Traceback" not in text


def test_missing_config_option(tmp_path):
    res = subprocess.run([TWISTD, "-n", "--pidfile=", "cbserver"], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode != 0
    assert "--config FILE is required" in res.stdout + res.stderr
