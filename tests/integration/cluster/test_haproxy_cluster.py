"""haproxy (Debian package) with the shipped ``deploy/haproxy/haproxy.cfg`` in front of three
``twistd cbserver`` nodes on one PostgreSQL, sipp as the trunk, all inside a network namespace
the test creates (nothing leaves it; PostgreSQL is reached over its Unix socket).

* node3's name has no rating-list entry (nor ``*``): its ``/readyz`` says ``catalog`` and
  haproxy keeps it out; callbacks spread over node1 and node2 only.
* node1 is drained (``cbserver node drain``) while its calls run: they run to their natural
  end, every new callback goes to node2 and none is refused to the client (haproxy sends the
  drained node's 503 ``draining`` on to another node while its check has not failed yet),
  ``drain --wait`` then returns and SIGTERM stops node1 with no call to end.
* The client's address reaches the nodes through ``X-Forwarded-For`` from the balancer's
  source address (``trusted_proxies``); a forged header from the client is not believed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cbserver.devtools.democarrier import SIPP_DIR, scenario
from tests.integration.sip_torture.netns import Namespace, NetnsUnavailable
from tests.support.node import Node, demo_catalog, query
from tests.support.node import wait_for as node_wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CBSERVER = str(Path(sys.executable).parent / "cbserver")
CLIENT = "192.0.2.1"      # the caller's browser or script
FRONT = "192.0.2.2"       # haproxy's public address
SOURCE = "192.0.2.5"      # haproxy's source towards the nodes: what trusted_proxies names
NODES = {"node1": "192.0.2.11", "node2": "192.0.2.12", "node3": "192.0.2.13"}
CARRIER_PORT = 5070
HOLD_MS = 15000           # the trunk hangs up answered calls after this
PASSWORD = "cluster-pass-1"
ACCOUNTS = [f"cbcluster{i:03d}" for i in range(16)]


def catalog(tmp: Path) -> Path:
    """The demo catalog with entries for node1 and node2 (not node3) and the test's accounts."""
    entries = ('  [[product.rating_list]]\n  service = "voice"\n  node = "node1"\n'
               '  access_code = "WEBCALLBACK"\n')

    def node2_too(text: str) -> str:
        assert entries in text
        return text.replace(entries, entries.replace("node1", "node2") + "  tariff = \"Callback\"\n"
                            "  overdraft_protection = false\n\n" + entries, 1)

    return demo_catalog(tmp, ACCOUNTS, PASSWORD, node2_too)


def haproxy_config(tmp: Path, pem: Path, sock: Path) -> Path:
    """The shipped configuration with this test's addresses, ports and paths (and a third
    server line like the others): every replaced line must be there as shipped."""
    text = (ROOT / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    server2 = "    server node2 10.0.0.12:8901                           # SITE: node addresses\n"
    swaps = [
        ("log /dev/log local0", "log stdout format raw local0"),
        ("stats socket /run/haproxy/cbserver.sock", f"stats socket {sock}"),
        ("bind :443 ssl crt /etc/haproxy/certs/cbserver.pem", f"bind {FRONT}:8443 ssl crt {pem}"),
        ("source 10.0.0.5 ", f"source {SOURCE} "),
        ("server node1 10.0.0.11:8901", f"server node1 {NODES['node1']}:8901"),
        (server2, server2 + server2.replace("node2 10.0.0.12", "node3 10.0.0.13")),
        ("server node2 10.0.0.12:8901", f"server node2 {NODES['node2']}:8901"),
        ("server node3 10.0.0.13:8901", f"server node3 {NODES['node3']}:8901"),
    ]
    for old, new in swaps:
        assert text.count(old) == 1, f"the shipped haproxy.cfg no longer has {old!r}"
        text = text.replace(old, new)
    assert "10.0.0." not in "".join(ln.split("#")[0] for ln in text.splitlines())
    path = tmp / "haproxy.cfg"
    path.write_text(text)
    return path


def certificate(tmp: Path) -> Path:
    """A self-signed certificate and key in one PEM file, as haproxy's ``crt`` takes them."""
    key, crt = tmp / "key.pem", tmp / "crt.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=callback.test", "-keyout", str(key), "-out", str(crt)],
                   check=True, capture_output=True, timeout=60)
    pem = tmp / "cbserver.pem"
    pem.write_text(crt.read_text() + key.read_text())
    return pem


class Cluster:
    """The namespace and what runs in it."""

    def __init__(self, ns: Namespace, tmp: Path, dsn: str):
        self.ns, self.tmp, self.dsn = ns, tmp, dsn
        self.procs: dict[str, subprocess.Popen] = {}
        self.nodes: dict[str, Node] = {}

    def spawn(self, name: str, argv: list[str], cwd=None) -> subprocess.Popen:
        out = (self.tmp / f"{name}.log").open("w")
        proc = subprocess.Popen([*self.ns.prefix(), *argv], stdout=out, stderr=subprocess.STDOUT,
                                cwd=cwd, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        """What process ``name`` (a node, sipp or haproxy) wrote so far."""
        if name in self.nodes:
            return self.nodes[name].log_text()
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def start_node(self, name: str, index: int) -> None:
        """Start node ``name`` in the namespace; its web port is 8901 on its own address."""
        node = Node(self.tmp, name, self.dsn, CARRIER_PORT, web_port=8901, sip_port=5061 + index,
                    rtp_start=20000 + 200 * index, prefix=self.ns.prefix(), edits=[
                        ('endpoint = "tcp:8901:interface=127.0.0.1"',
                         f'endpoint = "tcp:8901:interface={NODES[name]}"'),
                        ("[web]\n", f'[web]\ntrusted_proxies = ["{SOURCE}/32"]\n')])
        node.address = NODES[name]  # its web endpoint (only) listens there: the edit above
        self.nodes[name] = node
        self.procs[name] = node.start()

    def curl(self, url: str, body: dict | None = None, headers=()) -> tuple[int, dict]:
        argv = [*self.ns.prefix(), "curl", "-sk", "--interface", CLIENT, "-m", "30",
                "-w", "\n%{http_code}", url]
        for h in headers:
            argv += ["-H", h]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        text, _, code = out.stdout.rpartition("\n")
        try:
            return int(code), json.loads(text) if text.strip() else {}
        except ValueError:
            return 0, {"raw": out.stdout, "stderr": out.stderr}

    def stats(self, sock: Path) -> dict[str, str]:
        """haproxy's view of each server of the backend: UP, DOWN..."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(sock))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        head = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(head, ln.split(","), strict=False)) for ln in lines[1:] if ln]
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == "cbserver_nodes"
                and r["svname"] in NODES}

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(what: str, check, timeout: float):
    """``check()``'s first true result, asked every 0.2 s (each asks curl or haproxy)."""
    return node_wait_for(what, check, timeout, every=0.2)


@pytest.fixture
def cluster(tmp_path, pg_dsn):
    if shutil.which("haproxy") is None:
        pytest.fail("haproxy is not installed (Debian package haproxy; ./cbs setup)")
    try:
        with Namespace(f"cbs-cluster-{os.getpid()}") as ns:
            c = Cluster(ns, tmp_path, pg_dsn)
            try:
                yield c
            finally:
                c.stop_all()
    except NetnsUnavailable as e:
        pytest.skip(str(e))


def test_haproxy_spreads_skips_the_unrated_node_and_drains_without_refusing(cluster, tmp_path,
                                                                            pg_dsn):
    subprocess.run([CBSERVER, "provision", str(catalog(tmp_path)), "--dsn", pg_dsn],
                   check=True, capture_output=True, timeout=120)
    sock = tmp_path / "haproxy.sock"
    cfg = haproxy_config(tmp_path, certificate(tmp_path), sock)
    check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    carrier = scenario(tmp_path, HOLD_MS, audio=False)
    cluster.spawn("sipp", ["sipp", "-sf", str(carrier), "-i", "127.0.0.1", "-p", str(CARRIER_PORT),
                           "-mi", "127.0.0.1", "-mp", "16000", "-aa", "-nostdin", "-trace_err",
                           "-error_file", str(tmp_path / "sipp-errors.log")], cwd=SIPP_DIR)
    for i, name in enumerate(NODES):
        cluster.start_node(name, i)
    cluster.spawn("haproxy", ["haproxy", "-db", "-f", str(cfg)])
    wait_for("haproxy's stats socket", sock.exists, 30)

    # node1 and node2 come up; node3 never does: its name has no rating entry.
    wait_for("node1 and node2 UP", lambda: (lambda s: s.get("node1") == "UP"
                                            and s.get("node2") == "UP")(cluster.stats(sock)), 120)
    # node3's first poll of the database may not have answered yet on a loaded machine (its
    # reason is "database" until then): wait for its verdict on the catalog.
    def node3_judged():
        code, body = cluster.curl(f"http://{NODES['node3']}:8901/readyz")
        return (code, body) if body.get("reason") != "database" else None

    code, body = wait_for("node3's readiness past its first database poll", node3_judged, 60)
    assert code == 503 and body["reason"] == "catalog", body
    assert cluster.curl(f"http://{NODES['node3']}:8901/livez")[0] == 200
    assert cluster.stats(sock)["node3"].startswith("DOWN")

    def start(i: int, forged: bool = False) -> tuple[int, dict]:
        headers = ["X-Forwarded-For: 10.66.66.66"] if forged else []
        return cluster.curl(f"https://{FRONT}:8443/api/v1/callbacks", {
            "application": "Web callback", "mode": "extended", "account": ACCOUNTS[i],
            "password": PASSWORD, "phone": f"55119876543{i:02d}", "destination": "18185550123"},
            headers)

    def status(cb_id: str) -> dict:
        return cluster.curl(f"https://{FRONT}:8443/api/v1/callbacks/{cb_id}")[1]

    # Spread: six callbacks, alternately on node1 and node2, none on node3.
    first = []
    for i in range(6):
        code, body = start(i, forged=True)
        assert code == 202, body
        first.append(body["id"])
    for cb_id in first:
        wait_for(f"{cb_id} connected", lambda cb_id=cb_id: status(cb_id)["status"] == "connected", 60)
    nodes = {cb_id: status(cb_id)["node"] for cb_id in first}
    assert sorted(nodes.values()) == ["node1"] * 3 + ["node2"] * 3, nodes
    # The client's own address reached the nodes (not the balancer's, not the forged one).
    logs = cluster.log("node1") + cluster.log("node2")
    for cb_id in first:
        line = next(ln for ln in logs.splitlines() if f"callback requested callback_id={cb_id}" in ln)
        assert f"client={CLIENT}" in line, line

    # A client talking to a node directly cannot name another address: it is no trusted proxy.
    code, body = cluster.curl(f"http://{NODES['node2']}:8901/api/v1/callbacks", {
        "application": "Web callback", "mode": "extended", "account": ACCOUNTS[15],
        "password": PASSWORD, "phone": "5511987654315", "destination": "18185550123"},
        ["X-Forwarded-For: 10.66.66.66"])
    assert code == 202, body
    line = wait_for("the request's log line", lambda: next(
        (ln for ln in cluster.log("node2").splitlines()
         if f"callback requested callback_id={body['id']}" in ln), None), 10)
    assert f"client={CLIENT}" in line, line

    # Drain node1 while its three calls run; keep asking for callbacks meanwhile.
    drained = subprocess.run([CBSERVER, "node", "drain", "node1", "--dsn", pg_dsn],
                             capture_output=True, text=True, timeout=60)
    assert drained.returncode == 0, drained.stderr
    # The node notices within a poll (2 s; a callback asked for before that is still its own).
    wait_for("node1 to notice the drain", lambda: cluster.curl(
        f"http://{NODES['node1']}:8901/readyz")[1].get("reason") == "draining", 30)
    later = []
    for i in range(6, 14):
        code, body = start(i)
        assert code == 202, body  # never the drained node's 503: haproxy sent it on
        later.append(body["id"])
        time.sleep(0.5)
    assert {status(cb_id)["node"] for cb_id in later} == {"node2"}
    wait_for("node1 DOWN", lambda: cluster.stats(sock)["node1"].startswith("DOWN"), 30)
    code, body = cluster.curl(f"http://{NODES['node1']}:8901/api/v1/callbacks", {
        "application": "Web callback", "mode": "extended", "account": ACCOUNTS[14],
        "password": PASSWORD, "phone": "5511987654314", "destination": "18185550123"})
    assert code == 503 and body["error"]["code"] == "draining"  # asked directly: refused

    # node1's calls run to their natural end (the trunk hangs up), not cut by the drain.
    on_node1 = [cb_id for cb_id, n in nodes.items() if n == "node1"]
    for cb_id in on_node1:
        final = wait_for(f"{cb_id} ended", lambda cb_id=cb_id: (lambda s: s if s["status"] == "ended"
                                                                 else None)(status(cb_id)), 90)
        assert final["cause"]["code"] not in ("shutdown", "drain_deadline", "node_lost"), final
        assert final["charges"] and final["charges"]["total"] != "0.00", final
    waited = subprocess.run([CBSERVER, "node", "drain", "node1", "--wait", "--wait-timeout", "60",
                             "--dsn", pg_dsn], capture_output=True, text=True, timeout=120)
    assert waited.returncode == 0, waited.stderr
    node1 = cluster.procs["node1"]
    node1.send_signal(signal.SIGTERM)
    assert node1.wait(30) == 0
    assert re.search(r"ending \d+ callbacks in progress", cluster.log("node1")) is None
    assert query(pg_dsn, "SELECT count(*) FROM callback_sessions WHERE node = 'node3'") == [(0,)]
    billed = query(pg_dsn, "SELECT count(DISTINCT session_id) FROM xdrs WHERE session_id = ANY(%s)",
                   (on_node1,))
    assert billed == [(3,)]
