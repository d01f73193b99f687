"""Readiness, status and watchdog reports to the service manager (systemd ``Type=notify``).

The protocol is one datagram per report to the Unix socket named by ``$NOTIFY_SOCKET``, each
datagram newline-separated ``KEY=VALUE`` lines (``READY=1``, ``STOPPING=1``, ``STATUS=...``,
``WATCHDOG=1``); a name starting with ``@`` is in the abstract namespace (sd_notify(3)). The
watchdog interval comes from ``$WATCHDOG_USEC`` (for the process ``$WATCHDOG_PID`` names,
when set): reports go at half of it, as sd_watchdog_enabled(3) advises, from the reactor, so
a reactor that stalls is what the manager sees and restarts. Without ``$NOTIFY_SOCKET``
(not started by systemd) every report is a no-op.
"""

from __future__ import annotations

import os
import socket

from twisted.application import service
from twisted.internet import task

from cbserver.logs import Logger

__all__ = ["Notifier", "NotifyService"]

# How often STATUS= is refreshed when no watchdog asks for more.
STATUS_INTERVAL = 5.0


class Notifier:
    """Sends reports to ``$NOTIFY_SOCKET``; ``enabled`` is False when there is none."""

    log = Logger()

    def __init__(self, environ=None, pid: int | None = None):
        env = os.environ if environ is None else environ
        name = env.get("NOTIFY_SOCKET", "")
        # sd_notify(3): "@" at the start names a socket in the abstract namespace.
        self.address = "\0" + name[1:] if name.startswith("@") else name
        self.enabled = bool(name) and (name.startswith(("/", "@")))
        self.watchdog_interval = _watchdog_interval(env, os.getpid() if pid is None else pid)
        self._sock: socket.socket | None = None
        self._warned = False

    def send(self, **fields: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; False when disabled or it failed.

        A manager that went away (a test socket closed, systemd restarting) must not break
        the node: the failure is logged once and reports go on being attempted.
        """
        if not self.enabled:
            return False
        lines = []
        for key, value in fields.items():
            # One report per line: a newline inside a value would forge another key.
            lines.append(f"{key}={' '.join(str(value).splitlines())}")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as e:
            if not self._warned:
                self._warned = True
                self.log.warn("cannot report to the service manager at {addr}: {err}",
                              addr=self.address.replace("\0", "@"), err=e.strerror or e)
            return False
        return True

    def close(self) -> None:
        """Close the socket (reports after this reopen it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env, pid: int) -> float | None:
    """Seconds between ``WATCHDOG=1`` reports, or None when no watchdog is asked for."""
    usec = env.get("WATCHDOG_USEC", "")
    owner = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(pid):
        return None  # meant for another process (e.g. a wrapper that started us)
    return int(usec) / 2e6


class NotifyService(service.Service):
    """Reports start-up, readiness, a status line, the watchdog and stopping.

    ``status`` is a callable giving the current one-line status; it is sent when it changes,
    checked at each watchdog report (or every ``STATUS_INTERVAL`` s without a watchdog).
    """

    name = "sdnotify"

    def __init__(self, reactor, status, notifier: Notifier | None = None):
        self.reactor = reactor
        self.status = status
        self.notifier = notifier or Notifier()
        self._last_status: str | None = None
        self._loop: task.LoopingCall | None = None
        self._stopping = False  # after STOPPING=1 the status line says so and stays

    def startService(self) -> None:
        """Say we are starting; begin the watchdog/status loop."""
        super().startService()
        if not self.notifier.enabled:
            return
        self._send_status()
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.notifier.watchdog_interval or STATUS_INTERVAL, now=False)

    def ready(self) -> None:
        """Listeners up, database gate open: ``READY=1`` with the status."""
        self._last_status = self.status()
        self.notifier.send(READY="1", STATUS=self._last_status)

    def stopping(self, why: str = "stopping") -> None:
        """Shutdown begins (calls are being ended): ``STOPPING=1``."""
        self._stopping = True
        self._last_status = why
        self.notifier.send(STOPPING="1", STATUS=why)

    def stopService(self) -> None:
        """End the loop and close the socket."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self.notifier.close()

    def _tick(self) -> None:
        """One loop turn: the watchdog (if asked for) and the status if it changed."""
        if self.notifier.watchdog_interval:
            self.notifier.send(WATCHDOG="1")
        self._send_status()

    def _send_status(self) -> None:
        """Send STATUS= when it differs from the last one sent."""
        if self._stopping:
            return
        line = self.status()
        if line != self._last_status:
            self._last_status = line
            self.notifier.send(STATUS=line)
