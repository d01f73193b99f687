"""Issue 17 item 4 attacked on a real node: a flood is refused cleanly, what is accepted completes.

A real ``twistd cbserver`` node on the real PostgreSQL, sipp as the trunk (it answers and
hangs up after ``HOLD_MS``). The node's starting cap is small (``node_max_starting = 6``, the
ceiling of the start-delay gate's limit), so that the flood is past its capacity on any
machine. 40 threads send 8 callback POSTs each on keep-alive connections, while strangers
do what strangers do during a flood: a request dripped a few bytes at a time, pipelined
requests, JSON that does not parse, a body that is not JSON, an oversized body, a request
line that is not HTTP, headers that never end.

Every answer must be 202, 503 ``busy`` with ``Retry-After`` or 429 with ``Retry-After``
(the account's concurrency cap), or, for a malformed request that reached the checks, 400;
no connection is reset and nothing else comes back. Every callback answered 202 must end
with the carrier's hang-up and both xDRs, and the node must count its busy refusals by
reason in ``/readyz``. Afterwards the node takes a callback as before.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.carrier import Carrier
from tests.support.node import Node, demo_catalog, http, query, running, wait_for
from tests.support.rawhttp import post_bytes, read_answers
from tests.support.world import free_udp_port

pytestmark = pytest.mark.integration

HOLD_MS = 1500
THREADS, EACH = 40, 8
ACCOUNTS = [f"cbflood{i:03d}" for i in range(THREADS + 1)]
PASSWORD = "flood-pass-1"
CAUSES = ("lega_hung_up", "legb_hung_up")


def catalog(tmp: Path) -> Path:
    """The demo catalog with the test's accounts, each with room for many callbacks."""
    path = demo_catalog(tmp, ACCOUNTS, PASSWORD)
    path.write_text(path.read_text().replace('opening_balance = "20"',
                                             'opening_balance = "100000"'))
    return path


def body(account: str, i: int) -> bytes:
    """A valid simple callback request."""
    return json.dumps({"mode": "simple", "account": account,
                       "phone": f"1818{5000000 + i:07d}"}).encode()


def post(data: bytes, ctype: bytes = b"application/json") -> bytes:
    """One HTTP/1.1 POST to the callback API."""
    return post_bytes("/api/v1/callbacks", data, ctype)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.settimeout(60)
    return sock


def caller(port: int, t: int) -> list:
    """(Thread.) ``EACH`` valid POSTs one after another on one keep-alive connection."""
    with connect(port) as sock:
        out = []
        for i in range(EACH):
            sock.sendall(post(body(ACCOUNTS[t], t * EACH + i)))
            out += read_answers(sock, 1)
        return [("valid", *a) for a in out]


def stranger(port: int, what: str) -> list:
    """(Thread.) One kind of odd client; its answers."""
    with connect(port) as sock:
        if what == "dripped":
            data = post(body(ACCOUNTS[-1], 9000))
            for i in range(0, len(data), 9):
                sock.sendall(data[i:i + 9])
                time.sleep(0.01)
            return [(what, *a) for a in read_answers(sock, 1)]
        if what == "pipelined":
            sock.sendall(b"".join(post(body(ACCOUNTS[-1], 9100 + i)) for i in range(4)))
            return [(what, *a) for a in read_answers(sock, 4)]
        if what == "not json":
            sock.sendall(post(b"{not json"))
        elif what == "binary":
            sock.sendall(post(b"\x00\xff" * 40, b"application/octet-stream"))
        elif what == "oversized":
            sock.sendall(post(b"[" * 40000))
        elif what == "not http":
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 60 + b"\r\n\r\n")
        elif what == "endless headers":
            sock.sendall(b"POST /api/v1/callbacks HTTP/1.1\r\nHost: x\r\n")
            for i in range(20):  # never the empty line: the node must not wait for it forever
                sock.sendall(b"X-Pad-%d: %s\r\n" % (i, b"a" * 50))
                time.sleep(0.02)
            return [(what, "unanswered")]
        try:
            return [(what, *a) for a in read_answers(sock, 1)]
        except (AssertionError, ConnectionError):
            return [(what, "closed")]


def test_a_flood_gets_clean_refusals_and_every_accepted_callback_completes(tmp_path, pg_dsn):
    cbs = str(Path(sys.executable).parent / "cbserver")
    subprocess.run([cbs, "provision", str(catalog(tmp_path)), "--dsn", pg_dsn],
                   check=True, capture_output=True, timeout=120)
    carrier = Carrier(tmp_path, free_udp_port(), hold_ms=HOLD_MS, audio=False).start()
    node = Node(tmp_path, "node1", pg_dsn, carrier.port,
                edits=[("concurrent_per_account = 5", "concurrent_per_account = 50\n"
                        "node_max_starting = 6")])
    try:
        with running(node):
            node.start()
            node.wait_ready()
            jobs = [(caller, node.web, t) for t in range(THREADS)]
            jobs += [(stranger, node.web, what) for what in (
                "dripped", "pipelined", "not json", "binary", "oversized", "not http",
                "endless headers")]
            with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
                results = [r for f in [pool.submit(*job) for job in jobs] for r in f.result()]

            accepted, refused = [], {}
            for what, *answer in results:
                if answer[0] in ("closed", "unanswered"):
                    # Only what is not HTTP at all, or never finishes its headers, goes unanswered.
                    assert what in ("not http", "endless headers"), (what, answer)
                    continue
                status, headers, payload = answer
                if status == 202:
                    assert what in ("valid", "dripped", "pipelined"), (what, payload)
                    assert "id" in payload, (what, headers, payload)
                    accepted.append(payload["id"])
                elif status in (503, 429):
                    assert headers.get("retry-after"), (what, headers)
                    code = payload["error"]["code"]
                    assert status == 429 or code == "busy", (what, payload)
                    refused[code] = refused.get(code, 0) + 1
                else:
                    assert status == 400 and what in ("not json", "binary", "oversized", "not http"), (
                        what, status, payload)
            assert accepted and refused.get("busy"), (len(accepted), refused)
            print(f"accepted {len(accepted)}, refused {refused}")

            # Every accepted callback ends with the carrier's hang-up, with both xDRs.
            def ended():
                rows = query(pg_dsn, "SELECT status, state->'cause'->>'code' FROM callback_sessions "
                                     "WHERE id = ANY(%s)", (accepted,))
                return len(rows) == len(accepted) and all(r[0] == "ended" for r in rows) and rows

            rows = wait_for("every accepted callback ended", ended, 120, every=0.5)
            assert {cause for _, cause in rows} <= set(CAUSES), rows
            wait_for("two xDRs per callback", lambda: query(
                pg_dsn, "SELECT count(*) FROM xdrs WHERE session_id = ANY(%s)", (accepted,)
            )[0][0] == 2 * len(accepted), 60)

            # The node counted its refusals by reason, and still takes a callback.
            ready = http("GET", node.url("/readyz"))[1]
            counted = ready["admission"]["refused"]
            assert sum(counted.values()) >= refused["busy"] > 0, (counted, refused)
            print(f"the node's busy refusals by reason: {counted}")
            code, answer = http("POST", node.url("/api/v1/callbacks"),
                                json.loads(body(ACCOUNTS[0], 9999)))
            assert code == 202, answer
    finally:
        carrier.stop()
