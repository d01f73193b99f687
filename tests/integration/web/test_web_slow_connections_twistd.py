"""Issue 14 item 7 against the real ``twistd cbserver``: 5,000 hostile connections.

The server starts with a soft descriptor limit of 1,024, as the attack found it (it raises it
to the hard limit). Then connections come from many 127/8 addresses, so that the total caps
and not only the per-client ones are tested: TLS connections that drip a header line at a
time, silent TCP connections to the web port, silent SIP-over-TCP connections. With all of
them attempted, ``/healthz`` and a new callback from 127.0.0.1 still answer within 1 s; a
client over its share is refused at once; a dripping request and a silent SIP connection
are closed once their deadline passes.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import resource
import select
import signal
import socket
import ssl
import time

import pytest

from cbserver.billing.provision import provision_file_sync
from cbserver.resources import checkout_dir
from tests.support.server import free_port, get_json, start, terminate, wait_health, write_config

pytestmark = pytest.mark.integration

DEADLINE = 6.0  # request_timeout and tcp_idle_timeout of the server under test
PER_CLIENT = 50


@functools.cache
def _ctx() -> ssl.SSLContext:
    """One client context for every connection (building one per connection costs ~30 ms)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def connect_many(port: int, sources: list[str], per_source: int) -> list[socket.socket]:
    """Open ``per_source`` TCP connections from each source address, without blocking."""
    socks = []
    for src in sources:
        for _ in range(per_source):
            s = socket.socket()
            s.setblocking(False)
            s.bind((src, 0))
            err = s.connect_ex(("127.0.0.1", port))
            assert err in (0, errno.EINPROGRESS), err
            socks.append(s)
        time.sleep(0.01)  # let the server accept: its listen backlog is small
    return socks


def closed_by_server(socks: list[socket.socket]) -> set[socket.socket]:
    """The sockets the server closed (readable, hung up or in error: it never writes first)."""
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return {by_fd[fd] for fd, _ev in poller.poll(0) if _really_closed(by_fd[fd])}


def _really_closed(s: socket.socket) -> bool:
    """A raw socket the server wrote to or hung up is closed; a TLS one may just have been
    sent a session ticket (TLS 1.3), so read it: closed only on end of file or an error."""
    if not isinstance(s, ssl.SSLSocket):
        return True
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


def settle(socks: list[socket.socket], expected: int, timeout: float = 3.0) -> int:
    """How many of ``socks`` the server closed, once that reaches ``expected`` (or time is up)."""
    deadline = time.monotonic() + timeout
    while (n := len(closed_by_server(socks))) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return n


def drip(port: int, src: str) -> ssl.SSLSocket:
    """A TLS connection that has sent the start of a request and will drip the rest."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(src, 0))
    s = _ctx().wrap_socket(raw)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return s


def timed(fn):
    start = time.monotonic()
    result = fn()
    return time.monotonic() - start, result


def post_callback(port: int) -> tuple[int, dict]:
    body = json.dumps({"mode": "extended", "account": "cb1818000001", "password": "demo-pass-1",
                       "phone": "5511987654321", "destination": "18185550123"}).encode()
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with _ctx().wrap_socket(raw) as s:
        s.sendall(b"POST /api/v1/callbacks HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                  b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, content = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(content)


@pytest.fixture
def many_descriptors():
    """This test process holds thousands of sockets: its soft limit goes to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 8000:
        pytest.skip(f"the hard descriptor limit ({hard}) is too low for 5,000 connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_5000_hostile_connections_leave_healthz_and_callbacks_answering(tmp_path, pg_dsn,
                                                                        many_descriptors):
    provision_file_sync(pg_dsn, checkout_dir() / "demo" / "demo.toml")
    sip_port = free_port()
    config, port = write_config(tmp_path, pg_dsn, **{
        'listen = "127.0.0.1:5060"': f'listen = "127.0.0.1:{sip_port}"',
        'transport = "udp"': 'transport = "tcp"',
        "tcp_idle_timeout = 180.0": f"tcp_idle_timeout = {DEADLINE}",
        "request_timeout = 15.0": f"request_timeout = {DEADLINE}",
    })

    def low_limit():  # the limit the attack met: 1,024 descriptors
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    proc = start(config, preexec_fn=low_limit)
    hostile: list = []
    try:
        wait_health(port, 200, proc)
        # -- one client over its share: refused at once, on the web and the SIP port.
        for target in (port, sip_port):
            mine = connect_many(target, ["127.0.0.250"], PER_CLIENT + 10)
            assert settle(mine, 10) == 10, target
            time.sleep(0.3)
            assert len(closed_by_server(mine)) == 10, target
            for s in mine:
                s.close()
        time.sleep(0.3)
        # -- what the deadlines must close: a dripping request, a silent SIP connection.
        dripping = [drip(port, "127.0.0.240") for _ in range(3)]
        silent_sip = connect_many(sip_port, ["127.0.0.241"], 2)
        opened = time.monotonic()
        # -- the flood: 5,000 connections from 100 addresses, none over its share.
        for i in range(10):  # 500 TLS connections dripping headers
            hostile += [drip(port, f"127.0.0.{2 + i}") for _ in range(PER_CLIENT)]
        hostile += connect_many(port, [f"127.0.0.{12 + i}" for i in range(50)], PER_CLIENT)
        hostile += connect_many(sip_port, [f"127.0.0.{100 + i}" for i in range(40)], PER_CLIENT)
        assert len(hostile) == 5000
        for s in dripping:
            s.sendall(b"X-Slow: 1\r\n")
        time.sleep(0.5)
        held = len(os.listdir(f"/proc/{proc.pid}/fd"))
        # -- everyone else is still served, within 1 s.
        times = []
        for _ in range(3):
            took, (status, body) = timed(lambda: get_json(f"https://127.0.0.1:{port}/healthz", 5))
            assert status == 200, body
            times.append(took)
        took_cb, (status, created) = timed(lambda: post_callback(port))
        assert status == 202, created
        print(f"\n5000 hostile connections: server descriptors {held}; /healthz {max(times):.3f} s; "
              f"new callback {took_cb:.3f} s")
        assert max(times) < 1.0 and took_cb < 1.0, (times, took_cb)
        assert held < 3000, held  # the caps hold: 1,000 web + 1,000 SIP TCP at most, and the rest
        # -- the deadline, not the drip, decides: closed once DEADLINE passed since opening.
        while time.monotonic() < opened + DEADLINE - 1:
            for s in dripping:
                s.sendall(b"X-Slow: 1\r\n")
            time.sleep(1)
        assert closed_by_server(dripping) == set() and closed_by_server(silent_sip) == set()
        time.sleep(opened + DEADLINE + 1.5 - time.monotonic())
        assert closed_by_server(dripping) == set(dripping)
        assert closed_by_server(silent_sip) == set(silent_sip)
    finally:
        for s in hostile:
            s.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        code, out = terminate(proc, timeout=30)
    assert "descriptor limit raised from 1024 to" in out
    assert "per-client limit" in out and "refused" in out
    assert "EMFILE" not in out and "Too many open files" not in out
