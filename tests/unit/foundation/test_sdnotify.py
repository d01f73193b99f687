"""The sd_notify reports: address forms, the watchdog interval, what is sent and when.

A real Unix datagram socket receives the reports; the loop runs on a ``Clock``.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest
from twisted.internet.task import Clock

from cbserver.sdnotify import STATUS_INTERVAL, Notifier, NotifyService


@pytest.fixture
def listener(tmp_path):
    """A bound datagram socket and the NOTIFY_SOCKET value naming it."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.setblocking(False)
    yield sock, path
    sock.close()


def received(sock) -> list[str]:
    """Every datagram waiting on ``sock``."""
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_without_notify_socket_nothing_is_sent():
    n = Notifier(environ={})
    assert not n.enabled and n.send(READY="1") is False
    assert not Notifier(environ={"NOTIFY_SOCKET": "relative/path"}).enabled


def test_path_socket_gets_key_value_lines(listener):
    sock, path = listener
    n = Notifier(environ={"NOTIFY_SOCKET": path})
    assert n.send(READY="1", STATUS="node a: ready") is True
    assert received(sock) == ["READY=1\nSTATUS=node a: ready"]


def test_a_newline_in_a_value_cannot_forge_another_report(listener):
    sock, path = listener
    Notifier(environ={"NOTIFY_SOCKET": path}).send(STATUS="bad\nREADY=1")
    assert received(sock) == ["STATUS=bad READY=1"]


def test_abstract_socket_name_starts_with_at():
    name = f"cbs-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.setblocking(False)
    try:
        n = Notifier(environ={"NOTIFY_SOCKET": "@" + name})
        assert n.address == "\0" + name
        assert n.send(STOPPING="1")
        assert received(sock) == ["STOPPING=1"]
    finally:
        sock.close()


def test_a_vanished_manager_is_not_an_error(tmp_path):
    n = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.send(READY="1") is False and n.send(READY="1") is False


@pytest.mark.parametrize("env, interval", [
    ({"WATCHDOG_USEC": "4000000"}, 2.0),
    ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "PID"}, 2.0),
    ({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}, None),  # another process's
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env, interval):
    env = {k: (str(os.getpid()) if v == "PID" else v) for k, v in env.items()}
    assert Notifier(environ={"NOTIFY_SOCKET": "/x", **env}).watchdog_interval == interval


def test_service_reports_status_watchdog_ready_and_stopping(listener):
    sock, path = listener
    clock = Clock()
    state = {"line": "waiting for the database"}
    notifier = Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    svc = NotifyService(clock, lambda: state["line"], notifier)
    svc.startService()
    assert received(sock) == ["STATUS=waiting for the database"]
    clock.advance(1.0)
    assert received(sock) == ["WATCHDOG=1"]  # status unchanged: not repeated
    state["line"] = "ready"
    svc.ready()
    assert received(sock) == ["READY=1\nSTATUS=ready"]
    state["line"] = "2 calls"
    clock.advance(1.0)
    assert received(sock) == ["WATCHDOG=1", "STATUS=2 calls"]
    svc.stopping("stopping")
    clock.advance(1.0)
    assert received(sock) == ["STOPPING=1\nSTATUS=stopping", "WATCHDOG=1"]
    svc.stopService()
    clock.advance(5.0)
    assert received(sock) == []


def test_service_without_watchdog_refreshes_status_only(listener):
    sock, path = listener
    clock = Clock()
    lines = iter(["a", "b", "b"])
    svc = NotifyService(clock, lambda: next(lines), Notifier(environ={"NOTIFY_SOCKET": path}))
    svc.startService()
    clock.advance(STATUS_INTERVAL)
    clock.advance(STATUS_INTERVAL)
    assert received(sock) == ["STATUS=a", "STATUS=b"]
    svc.stopService()
