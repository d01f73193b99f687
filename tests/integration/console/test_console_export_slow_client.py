"""A slow client of the xDR CSV export does not make the server buffer the export.

The admin app runs in a process of its own (``tests.support.admin_serve``) over 300,000
xDRs (about 70 MB of CSV). A client with a small receive buffer reads 64 KiB every 0.1 s
for 8 s (some 5 MB); meanwhile the server's resident memory is sampled. Without
backpressure the server would fetch and queue the whole export in that time (PostgreSQL
gives it in a second or two), tens of MB more; with it, the server holds a batch and the
socket buffers. Then the client reads the rest at full speed and every row arrives, in a
properly ended chunked body.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.admin_serve import rss_kib
from tests.support.xdrgen import generate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "slow-client-token-0123456789"
ROWS = 300_000
GROWTH_LIMIT_MIB = 25


class SmallWindow(http.client.HTTPConnection):
    """An HTTP connection whose socket advertises a small receive window."""

    def connect(self):
        """Connect with a 32 KiB receive buffer (set before connecting: the window scale)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        s.settimeout(60)
        s.connect((self.host, self.port))
        self.sock = s


def start_server(dsn: str, tmp: Path) -> tuple[subprocess.Popen, int]:
    """The admin app in its own process; (process, port)."""
    port_file = tmp / "port"
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.admin_serve", dsn, TOKEN, str(port_file)],
                            cwd=ROOT, stdout=(tmp / "server.log").open("w"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    deadline = time.monotonic() + 60
    while not port_file.exists() or not port_file.read_text():
        assert proc.poll() is None, (tmp / "server.log").read_text()
        assert time.monotonic() < deadline, "the admin server did not start"
        time.sleep(0.1)
    return proc, int(port_file.read_text())


def test_a_slow_reader_holds_the_export_back_and_still_gets_every_row(pg_dsn, tmp_path):
    generate(pg_dsn, ROWS)
    proc, port = start_server(pg_dsn, tmp_path)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        # Warm up (modules, pool, plans) with a small export; then the baseline.
        warm = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        warm.request("GET", "/v1/xdrs?format=csv&account=acc1&from=2026-06-30", headers=headers)
        assert warm.getresponse().read().count(b"\n") > 1
        warm.close()
        time.sleep(0.5)
        baseline = rss_kib(proc.pid)

        conn = SmallWindow("127.0.0.1", port)
        conn.request("GET", "/v1/xdrs?format=csv", headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("transfer-encoding") == "chunked"
        got = bytearray()
        peak = baseline
        slow_until = time.monotonic() + 8.0
        while time.monotonic() < slow_until:
            got += resp.read1(65536)
            peak = max(peak, rss_kib(proc.pid))
            time.sleep(0.1)
        growth_mib = (peak - baseline) / 1024
        slow_bytes = len(got)
        # Two exports run at once at most (each holds a connection): a second one that is not
        # read holds its slot, a third is refused with 503 busy, and ends cleanly.
        second = SmallWindow("127.0.0.1", port)
        second.request("GET", "/v1/xdrs?format=csv", headers=headers)
        assert second.getresponse().status == 200
        third = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        third.request("GET", "/v1/xdrs", headers={**headers, "Accept": "text/csv"})
        refused = third.getresponse()
        assert refused.status == 503 and refused.getheader("retry-after") == "10"
        assert b'"busy"' in refused.read()
        third.close()
        second.close()  # a client gone mid-export frees its slot
        while chunk := resp.read1(1 << 20):
            got += chunk
        conn.close()
        lines = bytes(got).split(b"\r\n")
        assert lines[0].startswith(b"id,session_id,leg,")
        assert lines[-1] == b""
        assert len(lines) - 2 == ROWS  # every row, then the end of the body
        # The slots are free again once the abandoned export noticed its client left.
        deadline = time.monotonic() + 30
        while True:
            again = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            again.request("GET", "/v1/xdrs?format=csv&from=2026-06-30T12:00:00Z", headers=headers)
            status = again.getresponse().status
            again.close()
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert status == 200
        print(f"\nslow client: read {slow_bytes / 1e6:.1f} MB in 8 s of {len(got) / 1e6:.1f} MB; "
              f"server RSS baseline {baseline / 1024:.1f} MiB, growth {growth_mib:.1f} MiB")
        assert slow_bytes < len(got) / 4  # it really was slow: most of the export waited
        assert growth_mib < GROWTH_LIMIT_MIB, f"server memory grew {growth_mib:.1f} MiB"
    finally:
        proc.terminate()
        proc.wait(20)
