"""`cbserver demo` (what `./cbs demo` runs): the page answers, a callback connects, Ctrl-C
ends it with both xDRs written and stops what the demo started; the demo works in a database
of its own (`cbserver_demo`) and leaves an operator's catalog in `cbserver` as it was.

The demo runs on a private cluster (``CBS_PG_ROOT``), so that the operator's catalog planted
in its `cbserver` database is the test's own."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from tests.support.pgprivate import private_cluster
from tests.support.server import free_port, get_json
from tests.support.world import rtp_range_start

pytestmark = pytest.mark.integration
CBSERVER = str(Path(sys.executable).parent / "cbserver")


def _post(url: str, body: dict) -> tuple[int, dict]:
    import ssl
    import urllib.error
    import urllib.request

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


ROOT = Path(__file__).resolve().parents[3]


def _rates(dsn: str) -> list:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT prefix, first_price, next_price FROM rates ORDER BY id")
        rows = cur.fetchall()
    conn.close()
    return rows


@pytest.fixture
def own_cluster():
    """A private cluster whose `cbserver` database holds an operator's own rates."""
    with private_cluster("cbs_demo_") as cluster:
        dsn = cluster.dsn()
        subprocess.run([CBSERVER, "db", "upgrade", "--dsn", dsn], check=True,
                       capture_output=True, timeout=120)
        # The operator started from the demo's catalog and set prices of their own, which
        # provisioning demo/demo.toml again would put back.
        subprocess.run([CBSERVER, "provision", str(ROOT / "demo" / "demo.toml"), "--dsn", dsn],
                       check=True, capture_output=True, timeout=120)
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("UPDATE rates SET first_price = 7.77777, next_price = 7.77777")
        conn.close()
        yield cluster


def test_demo_runs_a_callback_and_stops_cleanly_on_ctrl_c(own_cluster):
    import socket

    pg_cluster = own_cluster
    operators = _rates(pg_cluster.dsn())
    assert operators and all(str(r[1]) == "7.77777" for r in operators)
    port = free_port()
    sip, carrier = (free_port(socket.SOCK_DGRAM) for _ in range(2))
    rtp = rtp_range_start()
    proc = subprocess.Popen([CBSERVER, "demo", "--port", str(port), "--sip-port", str(sip),
                             "--carrier-port", str(carrier), "--rtp-ports", f"{rtp}-{rtp + 99}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "CBS_PG_ROOT": str(pg_cluster.root)})
    try:
        banner = ""
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything" not in banner and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"demo exited early:\n{banner}"
            banner += line
        assert f"https://127.0.0.1:{port}/web-callback" in banner
        assert "demo account: cb1818000001  password: demo-pass-1" in banner
        # Issue 14 item 12: the config holds the trunk password: owner-only, like admin.token.
        config = Path(banner.split("config: ", 1)[1].split()[0])
        assert stat.S_IMODE(config.stat().st_mode) == 0o600, oct(config.stat().st_mode)
        assert stat.S_IMODE((config.parent / "admin.token").stat().st_mode) == 0o600
        status, _health = get_json(f"https://127.0.0.1:{port}/healthz")
        assert status == 200
        code, created = _post(f"https://127.0.0.1:{port}/api/v1/callbacks", {
            "mode": "extended", "account": "cb1818000001", "password": "demo-pass-1",
            "phone": "5511987654321", "destination": "18185550123"})
        assert code == 202, created
        cid = created["id"]
        for _ in range(100):
            _, page = get_json(f"https://127.0.0.1:{port}/api/v1/callbacks/{cid}")
            if page["status"] == "connected":
                break
            time.sleep(0.2)
        assert page["status"] == "connected", page
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    with psycopg2.connect(pg_cluster.dsn("cbserver_demo")) as conn, conn.cursor() as cur:
        cur.execute("SELECT leg, sip_reason FROM xdrs WHERE session_id = %s ORDER BY leg", (cid,))
        rows = cur.fetchall()
    assert [r[0] for r in rows] == ["A", "B"]
    # The operator's database: same rates, no demo callback in it.
    assert _rates(pg_cluster.dsn()) == operators
    with psycopg2.connect(pg_cluster.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM xdrs")
        assert cur.fetchone()[0] == 0
    conn.close()
    # The demo's own database has the demo's prices, not the operator's.
    assert all(str(r[1]) != "7.77777" for r in _rates(pg_cluster.dsn("cbserver_demo")))
    ps = subprocess.run(["pgrep", "-f", f"-p {carrier}"], capture_output=True, text=True)
    assert ps.stdout.strip() == "", "the sipp carrier was left running"
