"""One runner for real ``twistd -n cbserver`` nodes in the integration tests.

A :class:`Node` writes its configuration (``tests.support.world.config_text`` plus the
test's edits, each of which must find its line), starts twistd with its output appended to
a file (a restarted node's output follows its predecessor's), waits until ``/healthz``
answers 200, kills it with SIGKILL or stops it with SIGTERM. ``with running(*nodes):`` stops
the nodes on the way out and, when the block failed, prints the tail of each node's log so
that pytest shows it with the failure.

A node may run inside a network namespace (``prefix``, e.g. ``Namespace.prefix()``): its
HTTP requests are then made by curl inside the namespace, since the test's own process is
outside it. ``ip netns exec`` execs the program, so the process's pid is twistd's own and a
``kill -9`` hits the node itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2

from cbserver.devtools.democatalog import demo_catalog  # noqa: F401 - the node tests' catalog
from tests.support.server import start as start_twistd
from tests.support.world import config_text, free_tcp_port, free_udp_port, rtp_range_start

LOG_TAIL = 3000  # characters of a node's log shown with a failure


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    """A JSON request over plain HTTP; (status, parsed body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def query(dsn: str, sql: str, params=()):
    """All rows of one statement, in a transaction of its own."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        conn.close()


def wait_for(what: str, check, timeout: float, every: float = 0.1):
    """``check()``'s first true result; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


class Node:
    """One ``twistd -n cbserver`` subprocess with its configuration and log in ``tmp/name``.

    ``trunk`` is the trunk's port, or ``(host, port)`` when the trunk is not on the node's
    own address. ``address`` replaces every ``127.0.0.1`` of the configuration (a node of its
    own inside a namespace). ``edits`` are further ``(old, new)`` replacements, each made
    once and each required to match. The trunk never sends RTP in these tests, so the media
    inactivity end is pushed out of the way (``media_timeout``)."""

    def __init__(self, tmp: Path, name: str, dsn: str, trunk: int | tuple[str, int], *,
                 web_port: int | None = None, sip_port: int | None = None,
                 rtp_start: int | None = None, address: str = "127.0.0.1",
                 prefix: tuple[str, ...] | list[str] = (), edits=(),
                 media_timeout: float = 600.0):
        self.name, self.address, self.prefix = name, address, list(prefix)
        self.web = free_tcp_port() if web_port is None else web_port
        trunk_host, trunk_port = trunk if isinstance(trunk, tuple) else (None, trunk)
        self.folder = tmp / name
        self.folder.mkdir()
        text = config_text(dsn, self.folder / "state",
                           free_udp_port() if sip_port is None else sip_port, trunk_port, self.web,
                           rtp_range_start() if rtp_start is None else rtp_start)
        text = text.replace("127.0.0.1", address)
        swaps = [('node = "node1"', f'node = "{name}"'),
                 ("inactivity_timeout = 20.0", f"inactivity_timeout = {media_timeout}")]
        if trunk_host is not None:
            swaps.append((f'address = "{address}:{trunk_port}"',
                          f'address = "{trunk_host}:{trunk_port}"'))
        self.config = self.folder / "cbserver.toml"
        self.config.write_text(text)
        self.edit_config(*swaps, *edits)
        self.log = self.folder / "out.log"
        self.proc: subprocess.Popen | None = None

    def edit_config(self, *swaps: tuple[str, str]) -> None:
        """Replace each ``old`` of the configuration (once) by ``new``; ``old`` must be there."""
        text = self.config.read_text()
        for old, new in swaps:
            assert old in text, f"{self.name}'s configuration has no {old!r}"
            text = text.replace(old, new, 1)
        self.config.write_text(text)

    def start(self) -> subprocess.Popen:
        """Start the node (again, after a stop or a kill: its output is appended)."""
        self.proc = start_twistd(self.config, log=self.log, append=True, prefix=self.prefix)
        return self.proc

    def url(self, path: str) -> str:
        """The node's web address for ``path``."""
        return f"http://{self.address}:{self.web}{path}"

    def http(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """A JSON request to the node: from here, or by curl inside its namespace."""
        if not self.prefix:
            return http(method, self.url(path), body)
        cmd = [*self.prefix, "curl", "-s", "-m", "10", "-X", method, "-w", "\n%{http_code}",
               self.url(path)]
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        text, _, code = done.stdout.rpartition("\n")
        try:
            return int(code or 0), json.loads(text or "{}")
        except ValueError:
            return int(code or 0), {"raw": text}

    def log_text(self) -> str:
        """Everything the node (and its earlier runs) wrote."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until ``/healthz`` answers 200; fail with the log if the node dies first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (
                f"{self.name} exited {self.proc.returncode}: {self.log_text()[-LOG_TAIL:]}")
            try:
                if self.http("GET", "/healthz")[0] == 200:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        raise AssertionError(f"{self.name} never ready: {self.log_text()[-LOG_TAIL:]}")

    def kill9(self) -> None:
        """``kill -9`` of the node's process; returns once it is reaped."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, SIGKILL if it does not exit within ``timeout``; its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@contextmanager
def running(*nodes: Node) -> Iterator[None]:
    """Stop every node on the way out (each once); when the block failed, print each one's
    log tail first, so that pytest shows what the nodes said with the failure."""
    unique = list(dict.fromkeys(nodes))
    try:
        yield
    except BaseException:
        for node in unique:
            print(f"--- {node.name} log ({node.log}) ---\n{node.log_text()[-LOG_TAIL:]}")
        raise
    finally:
        for node in unique:
            node.stop()
