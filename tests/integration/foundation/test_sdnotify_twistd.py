"""systemd readiness from a real ``twistd cbserver`` node: a real Unix datagram socket named
by ``NOTIFY_SOCKET`` (a path, and an abstract ``@`` name) receives STATUS=, READY=1 only once
the database is ready and the listeners are up, WATCHDOG=1 at half of ``WATCHDOG_USEC``, and
STOPPING=1 on SIGTERM."""

from __future__ import annotations

import signal
import socket
import time
import uuid

import pytest

from tests.support.node import Node, http, running

pytestmark = pytest.mark.integration


class Listener:
    """A datagram socket standing in for systemd's notification socket."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.reports: list[tuple[float, dict]] = []

    def collect(self, until, timeout: float) -> None:
        """Read reports until ``until(self.reports)`` is true; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not until(self.reports):
            assert time.monotonic() < deadline, f"reports so far: {self.reports}"
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.reports.append((time.monotonic(), dict(
                line.split("=", 1) for line in data.split("\n"))))

    def keys(self, key: str) -> list[dict]:
        return [r for _, r in self.reports if key in r]


def has(key):
    return lambda reports: any(key in r for _, r in reports)


def test_ready_only_once_listening_then_watchdog_then_stopping(tmp_path, pg_dsn, monkeypatch):
    listener = Listener(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    node = Node(tmp_path, "notify1", pg_dsn, 5060)
    try:
        with running(node):
            node.start()
            listener.collect(has("READY"), 60)
            # Once READY=1 is sent, the web port answers and the node takes callbacks.
            code, body = http("GET", node.url("/healthz"))
            assert code == 200, body
            ready = listener.keys("READY")[0]
            assert ready == {"READY": "1", "STATUS": "node notify1: 0 calls, database ok"}
            first = listener.keys("STATUS")[0]["STATUS"]
            assert first.startswith("node notify1: waiting for the database")
            listener.collect(lambda r: len(listener.keys("WATCHDOG")) >= 3, 10)
            times = [t for t, r in listener.reports if "WATCHDOG" in r]
            assert all(b - a > 0.2 for a, b in zip(times[1:], times[2:], strict=False))  # paced, not a flood
            node.proc.send_signal(signal.SIGTERM)
            listener.collect(has("STOPPING"), 20)
            assert listener.keys("STOPPING")[0]["STATUS"].startswith("node notify1: stopping")
            assert node.proc.wait(30) == 0
    finally:
        listener.sock.close()


def test_no_ready_while_the_database_is_unreachable(tmp_path, monkeypatch):
    name = f"cbs-notify-{uuid.uuid4().hex}"
    listener = Listener("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    node = Node(tmp_path, "notify2", f"host={tmp_path}/nothing dbname=cbserver user=cbserver",
                5060)
    try:
        with running(node):
            node.start()
            listener.collect(has("STATUS"), 60)
            assert listener.keys("STATUS")[0]["STATUS"].startswith(
                "node notify2: waiting for the database (")
            # The reason is PostgreSQL's (STATUS= is refreshed every 5 s while it changes).
            listener.collect(lambda r: any("No such file" in s["STATUS"]
                                           for s in listener.keys("STATUS")), 30)
            time.sleep(5)  # the pool retries meanwhile; readiness must not be claimed
            listener.collect(lambda r: True, 1)
            assert listener.keys("READY") == [] and listener.keys("WATCHDOG") == []
            node.proc.send_signal(signal.SIGTERM)
            listener.collect(has("STOPPING"), 20)
            assert node.proc.wait(30) == 0
    finally:
        listener.sock.close()
