"""Issue 17 item 4 attacked: a node at its busy cap flooded over real sockets.

The public site (``BusyFront`` in front, ``FlushingRequest`` behind the connection caps, as
``twistd cbserver`` serves it) on a real TCP port, over the real PostgreSQL limit store. With
the node at ``node_max_active``, a flood of callback POSTs — valid ones on keep-alive
connections, pipelined ones, malformed JSON, the wrong content type, an oversized body, one
dripped a few bytes at a time, one at an instance's own path — all get 503 ``busy`` with
``Retry-After``, and nothing reaches the database (no rate-limit counter, no slot) nor the
service. A request that is not a callback POST is routed as before, and once the node is
below its cap the same malformed POST is told what is wrong with it and a valid one reaches
the database: the checks above can fail.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
import uuid

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads

from cbserver.config import LimitsConfig, example_path, parse_config
from cbserver.connlimit import DescriptorBudget
from cbserver.tap import _limited_site
from cbserver.web.callback_pages import build_callback_web
from cbserver.web.metrics import Metrics
from tests.support.rawhttp import post_bytes, read_answers

pytestmark = pytest.mark.integration

VALID = json.dumps({"mode": "simple", "account": "cbflood01", "phone": "15550100"}).encode()


class CappedService:
    """A callback service whose running count the test sets; a start is recorded (none may
    happen while the node is at its cap)."""

    def __init__(self, clock, db):
        self.clock = clock  # the start-delay gate's clock
        self.db = db  # the gate asks its pool how long a start would queue
        self.active = 0
        self.draining = False
        self.started = []

    def new_callback_id(self) -> str:
        return f"cb-{uuid.uuid4().hex[:16]}"

    def request_callback(self, req):
        self.started.append(req)
        return defer.succeed(req.callback_id)

    def get_status(self, cb_id):
        return defer.succeed(None)


def exchange(port: int, data: bytes, answers: int, drip: int = 0) -> list:
    """Send ``data`` on a new connection (``drip`` bytes at a time, 20 ms apart, if set)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        if drip:
            for i in range(0, len(data), drip):
                sock.sendall(data[i:i + drip])
                time.sleep(0.02)
        else:
            sock.sendall(data)
        return read_answers(sock, answers, 30.0)


def keep_alive_client(port: int, requests: int) -> list:
    """``requests`` valid POSTs one after another on one keep-alive connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        out = []
        for _ in range(requests):
            sock.sendall(post_bytes("/api/v1/callbacks", VALID))
            out += read_answers(sock, 1, 30.0)
        return out


def flood(port: int) -> list:
    """(Thread.) Every kind of callback POST at once, from 40 threads; all their answers."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(keep_alive_client, port, 5) for _ in range(30)]
    jobs += [
        (exchange, port, post_bytes("/api/v1/callbacks", VALID) * 3, 3),  # pipelined
        (exchange, port, post_bytes("/api/v1/callbacks", b"{not json"), 1),
        (exchange, port, post_bytes("/api/v1/callbacks", b"\x00\xff" * 50), 1),
        (exchange, port, post_bytes("/api/v1/callbacks", b"mode=simple", b"text/plain"), 1),
        (exchange, port, post_bytes("/api/v1/callbacks", b"[" * 20000), 1),  # over MAX_BODY
        (exchange, port, post_bytes("/api/v1/callbacks", b"{}", keep_alive=False), 1),
        (exchange, port, post_bytes("/web-callback/api/v1/callbacks", VALID), 1),
        (exchange, port, post_bytes("/api/v1/callbacks", VALID), 1, 7),  # dripped
    ]
    with ThreadPoolExecutor(max_workers=40) as pool:
        futures = [pool.submit(*job) for job in jobs]
        return [answer for f in futures for answer in f.result()]


def database_work(dsn: str) -> tuple[int, int]:
    """Rate-limit counter rows and callback slots: what any admission writes."""
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT (SELECT count(*) FROM rate_limit_counters), "
                        "(SELECT count(*) FROM callback_slots)")
            return cur.fetchone()
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_a_flood_at_the_busy_cap_is_refused_busy_without_database_work(pools, pg_dsn):
    base = parse_config(example_path().read_text())
    cfg = dataclasses.replace(base, limits=LimitsConfig(node_max_active=1))
    service = CappedService(reactor, pools[0])
    metrics = Metrics(spool_depth=lambda: 0)
    web = build_callback_web(cfg, pools[0], service, reactor, metrics)
    listener = reactor.listenTCP(0, _limited_site("web", web.resource(), cfg.web,
                                                  DescriptorBudget(4096, 16), reactor),
                                 interface="127.0.0.1")
    port = listener.getHost().port
    try:
        service.active = 1  # at node_max_active
        before = database_work(pg_dsn)
        answers = await threads.deferToThread(flood, port)
        assert len(answers) == 30 * 5 + 3 + 6 + 1
        for status, headers, body in answers:
            assert status == 503 and body["error"]["code"] == "busy", (status, body)
            assert headers["retry-after"] == "2"
            assert headers["content-type"] == "application/json"
        assert database_work(pg_dsn) == before and not service.started
        assert f'code="busy",mode="unknown"}} {len(answers)}.0' in metrics.render().decode()

        # Not a callback POST: routed as before (the API's JSON 404), even at the cap.
        [(status, _, body)] = await threads.deferToThread(
            exchange, port, b"GET /api/v1/callbacks/cb-nothing HTTP/1.1\r\nHost: x\r\n\r\n", 1)
        assert status == 404 and body["error"]["code"] == "not_found"

        # Below the cap: the malformed POST gets its own answer, a valid one reaches PostgreSQL.
        service.active = 0
        [(status, _, body)] = await threads.deferToThread(
            exchange, port, post_bytes("/api/v1/callbacks", b"{not json"), 1)
        assert status == 400 and body["error"]["code"] == "invalid_input"
        await threads.deferToThread(exchange, port, post_bytes("/api/v1/callbacks", VALID), 1)
        assert database_work(pg_dsn) != before
    finally:
        await listener.stopListening()
