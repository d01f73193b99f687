"""Keep-alive connections against the real ``twistd cbserver`` (issue 17 item 6).

An hour at a steady rate failed 328 callbacks with ``ConnectionResetError``: the request
deadline also ran between two requests of a keep-alive connection, and when it passed the
idle connection was aborted (RST), so the client's next POST on it died. Now:

* every answer says how long the connection may sit idle (``Keep-Alive: timeout=N``);
* an idle connection is closed gracefully when that time passes, and a connection that
  started a request and stalls (slow-loris) is still aborted, both at the deadline;
* a client that honours the hint never sees a failure, and the benchmarks' client
  (``bench/keepalive.py``) does both: it honours it, and resends once when it did not.
"""

from __future__ import annotations

import http.client
import importlib
import json
import socket
import ssl
import sys
import time

import pytest

from cbserver.billing.provision import provision_file_sync
from cbserver.resources import checkout_dir
from tests.support.server import start, terminate, wait_health, write_config

pytestmark = pytest.mark.integration

DEADLINE = 3  # the server's request_timeout, seconds


def tls(port: int) -> ssl.SSLSocket:
    """A TLS connection to the web port (the demo certificate is self-signed)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=DEADLINE * 4))


def get(s: ssl.SSLSocket, path: str = "/healthz") -> tuple[int, dict[str, str]]:
    """One keep-alive GET on ``s``: (status, lower-cased headers); the body is read whole."""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "connection closed before the answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
    if "content-length" in headers:
        while len(body) < int(headers["content-length"]):
            body += s.recv(65536)
    else:  # chunked (RFC 9112 7.1): the answer ends with the last, empty chunk
        assert headers.get("transfer-encoding") == "chunked", headers
        while not body.endswith(b"0\r\n\r\n"):
            body += s.recv(65536)
    return int(lines[0].split()[1]), headers


def closed_after(s: ssl.SSLSocket, since: float) -> float:
    """Wait for the server to close ``s`` (an end of file: through TLS both a graceful close
    and an abort start with the server's close_notify, and Twisted's abort sends no RST when
    nothing is left unread); seconds from ``since``. Data instead fails the test."""
    assert s.recv(1) == b""
    return time.monotonic() - since


@pytest.fixture
def server(tmp_path, pg_dsn):
    """A real server with a short request deadline; yields its web port."""
    provision_file_sync(pg_dsn, checkout_dir() / "demo" / "demo.toml")
    config, port = write_config(tmp_path, pg_dsn, **{
        "request_timeout = 15.0": f"request_timeout = {DEADLINE}.0"})
    proc = start(config)
    try:
        wait_health(port, 200, proc)
        yield port
    finally:
        terminate(proc)


def test_idle_keep_alive_is_announced_and_closed_at_the_deadline_as_is_a_stall(server):
    idle, stalled, polite = tls(server), tls(server), tls(server)
    for s in (idle, stalled, polite):
        status, headers = get(s)
        assert status == 200
        assert headers.get("keep-alive") == f"timeout={DEADLINE}", headers
        assert headers.get("connection", "").lower() != "close"
    answered = time.monotonic()
    stalled.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
    # A client that honours the hint reuses its connection before the timeout, many times.
    while time.monotonic() < answered + DEADLINE * 2:
        time.sleep(DEADLINE / 3)
        assert get(polite)[0] == 200
    # Both were closed once the deadline passed after the answer (the idle one gracefully,
    # the stalled one aborted: which path is taken is tests/unit/foundation/test_connlimit.py).
    assert DEADLINE - 0.5 < closed_after(idle, answered) < DEADLINE * 2 + 1
    assert DEADLINE - 0.5 < closed_after(stalled, answered) < DEADLINE * 2 + 1
    for s in (idle, stalled, polite):
        s.close()


def test_a_connection_that_never_speaks_is_closed_cleanly_in_time(server):
    raw = socket.create_connection(("127.0.0.1", server), timeout=DEADLINE * 4)
    opened = time.monotonic()
    try:
        data = raw.recv(1)
    except ConnectionResetError:
        data = None
    took = time.monotonic() - opened
    raw.close()
    # TLS never started, so the server's graceful close cannot complete a TLS goodbye: it
    # ends with FIN, or, after the grace period, an abort. Either way it is bounded.
    assert data in (b"", None)
    assert DEADLINE - 0.5 < took < DEADLINE + 5 + 2, took


def _bench_client():
    """The benchmarks' keep-alive client (``bench/keepalive.py``), imported from its folder."""
    sys.path.insert(0, str(checkout_dir() / "bench"))
    try:
        return importlib.import_module("keepalive").KeepAlive
    finally:
        sys.path.remove(str(checkout_dir() / "bench"))


def test_the_bench_client_honours_the_hint_and_resends_only_on_a_reused_closed_connection(server):
    keep_alive_cls = _bench_client()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    opened = []

    def connect():
        conn = http.client.HTTPSConnection("127.0.0.1", server, timeout=10, context=ctx)
        opened.append(conn)
        return conn

    def healthz(conn):
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        return resp.status, {**json.loads(resp.read()), "_keep_alive": resp.getheader("Keep-Alive")}

    client = keep_alive_cls(connect)
    assert client.request(healthz)[0] == 200 and client.idle_limit == DEADLINE
    time.sleep(DEADLINE - 0.5)  # within the hint's margin: a new connection, not a failure
    assert client.request(healthz)[0] == 200
    assert (client.reconnects, client.retries, len(opened)) == (1, 0, 2)
    # A client that ignores the hint reuses a connection the server has closed: the request
    # never got an answer byte, so it is sent once more on a new connection.
    client.idle_limit = float("inf")
    time.sleep(DEADLINE + 0.5)
    assert client.request(healthz)[0] == 200
    assert (client.reconnects, client.retries, len(opened)) == (1, 1, 3)
    client.close()
