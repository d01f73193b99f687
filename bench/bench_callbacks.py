"""End-to-end callbacks per second: cbserver (web → legA → legB → hang-up → xDRs) against sippy.

Part 1, cbserver: a scratch PostgreSQL database is created and upgraded, the operator manual's
example is provisioned through the catalog service layer (plus ``--accounts`` bench accounts with
a large balance), then ``twistd -n cbserver`` runs as a subprocess pinned to core 0, with
``cbserver.devtools.democarrier.Carrier`` (sipp) as the trunk. This process (pinned to core 1, as are
the carrier and sipp) POSTs ``/api/v1/callbacks`` at a fixed rate for ``--duration`` seconds,
then waits for every callback to end and counts, in PostgreSQL, the sessions that ended with the
carrier's hang-up and the xDR rows (two per callback). The rate is stepped up until a step
fails.

Part 2, the baseline: sippy's ``b2bua_simple`` (PyPI ``sippy``, in its own virtualenv) pinned to
core 0, between a sipp UAC and a sipp UAS (every call is two dialogs, as a callback is); sipp's
statistics file says how many calls succeeded and failed. Same stepping.

    .venv/bin/python bench/bench_callbacks.py --duration 20 --rates 10,20,30,40,50,60,80,100

Every process started here (twistd, sipp, b2bua) is stopped on exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import overload_report
import pgstats
from keepalive import KeepAlive

from cbserver.db.stores import PostgresCatalogStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
SERVER_CORE, CLIENT_CORE = 0, 1
BENCH_PASSWORD = "bench-pass-1"
EXPECTED_CAUSES = ("lega_hung_up", "legb_hung_up")
PROCS: list[subprocess.Popen] = []


# -- processes ---------------------------------------------------------------------------------


def spawn(argv: list[str], core: int | None, log: Path, **kw) -> subprocess.Popen:
    """Start a process in its own session (so its whole group can be stopped), pinned to ``core``."""
    out = open(log, "w")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, **kw)
    out.close()
    PROCS.append(proc)
    if core is not None:
        pin(proc.pid, core)
    return proc


def pin(pid: int, core: int) -> None:
    """Pin a process (and its future threads) to one core when the machine has it."""
    if core < os.cpu_count():
        os.sched_setaffinity(pid, {core})


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 15.0) -> None:
    """Stop a process we started: ``sig`` to its group, then SIGKILL after ``wait`` seconds."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
    if proc in PROCS:
        PROCS.remove(proc)


def stop_all() -> None:
    """Stop every process still running that this script started."""
    for proc in list(reversed(PROCS)):
        stop(proc, wait=5.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads so far, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time every core of the machine spent busy so far (all processes, the kernel too).

    From the first line of ``/proc/stat``: user, nice, system, idle, iowait, irq, softirq and
    steal ticks; busy is all but idle and iowait. Over a step it counts what the server,
    PostgreSQL, the carrier, this client and anything else running cost together.
    """
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


#: Ports ``free_port`` has handed out in this process: none is handed out twice.
_HANDED_OUT: set[int] = set()


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free on 127.0.0.1 for both UDP and TCP right now, and not one this process was
    given before: a port is only probed, not held, so the kernel may offer the same number to
    the next call (the web and admin endpoints once got the same one, and the node failed to
    listen)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in _HANDED_OUT:
            continue
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        try:
            with socket.socket(socket.AF_INET, other) as s:
                s.bind(("127.0.0.1", port))
            _HANDED_OUT.add(port)
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


# -- results -----------------------------------------------------------------------------------


@dataclass
class Step:
    """The outcome of one rate step."""

    rate: float
    attempted: int = 0
    completed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    cpu: float = 0.0
    db_cpu: float = 0.0
    machine_cpu: float = 0.0  # every process on the machine over the step
    latency_p50: float = 0.0
    latency_p99: float = 0.0
    length_p50: float = 0.0
    length_p99: float = 0.0
    elapsed: float = 0.0
    note: str = ""
    pg: pgstats.PgStep | None = None  # PostgreSQL's work over the step (cbserver only)
    accepted: int = 0  # answered 202
    refused: dict[str, int] = field(default_factory=dict)  # --overload: 503/429 by code
    refusal_latencies: list[float] = field(default_factory=list)
    no_retry_after: int = 0  # refusals without a Retry-After header
    accepted_latencies: list[float] = field(default_factory=list)  # POSTs answered 202
    offered_cpu: float = 0.0  # the server's CPU while the requests were being sent (--overload)
    offered_elapsed: float = 0.0  # how long sending them took
    client_cpu: float = 0.0  # this process (the HTTP client threads) over the step
    carrier_cpu: float = 0.0  # the carrier (sipp) over the step

    @property
    def failed(self) -> int:
        """How many calls failed, whatever the cause."""
        return sum(self.failures.values())

    def fail(self, why: str, n: int = 1) -> None:
        """Count ``n`` failures of kind ``why``."""
        if n:
            self.failures[why] = self.failures.get(why, 0) + n

    def line(self, what: str) -> str:
        """One human line about the step."""
        per = f"{1000 * self.cpu / self.completed:.1f} ms CPU/call" if self.completed else "-"
        if self.completed and self.db_cpu:
            per += f" (+{1000 * self.db_cpu / self.completed:.1f} ms PostgreSQL)"
        if self.elapsed:
            per += f", server {100 * self.cpu / self.elapsed:.0f}% of its core"
        if self.completed and self.machine_cpu:
            per += f", whole machine {1000 * self.machine_cpu / self.completed:.1f} ms/call"
        text = (f"{what} rate {self.rate:g}/s: {self.completed}/{self.attempted} completed, "
                f"{self.failed} failed {self.failures or ''}, {per}, ")
        if self.length_p99:
            text += f"call length p50 {self.length_p50:.2f}s p99 {self.length_p99:.2f}s"
        else:
            text += f"mean call length {self.length_p50:.2f}s"
        if self.pg is not None and self.completed:
            text += f", {self.pg.summary(self.completed)}"
        if self.latency_p99:
            text += f", POST p50 {1000 * self.latency_p50:.0f}ms p99 {1000 * self.latency_p99:.0f}ms"
        return text + (f" ({self.note})" if self.note else "")


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nearest rank), 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- cbserver ----------------------------------------------------------------------------------


def pg_dsn() -> str:
    """Start the checkout's local PostgreSQL cluster (idempotent); its DSN."""
    out = subprocess.run([str(VENV_BIN / "cbserver"), "pg", "start"], check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout
    return out.strip().splitlines()[-1]


def with_dbname(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name``."""
    parts = [p for p in dsn.split() if not p.startswith("dbname=")]
    return " ".join(parts + [f"dbname={name}"])


def create_database(dsn: str, name: str, drop: bool = False) -> None:
    """Create (or with ``drop``, drop) a scratch database through the maintenance database."""
    import psycopg2

    conn = psycopg2.connect(with_dbname(dsn, "postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()


def provision_main(dsn: str, accounts: int) -> None:
    """(Child process.) Provision the manual's example and the bench accounts, then exit."""
    sys.path.insert(0, str(ROOT))
    from twisted.internet import defer, task

    from cbserver.billing.accounts import Accounts
    from cbserver.db.pool import Database
    from tests.support.world import provision_manual_example

    async def go(reactor):
        """Run the service-layer provisioning against the scratch database."""
        db = Database(dsn, reactor, size=2)
        db.startService()
        try:
            await db.when_ready()
            await provision_manual_example(db, reactor)
            acc = Accounts(PostgresCatalogStore(db), reactor)
            for i in range(accounts):
                await acc.create_account({"id": f"cbbench{i:05d}", "customer": "Callback retail",
                                          "product": "Callback Services",
                                          "opening_balance": "1000000", "password": BENCH_PASSWORD})
        finally:
            await db.stopService()

    task.react(lambda reactor: defer.ensureDeferred(go(reactor)))


def serve_main(config_path: str, web_port: int, log_path: str, profile: str | None) -> None:
    """(Child process.) ``CallbackServer`` with the callback page and API mounted, as tests do.

    ``twistd cbserver`` (``cbserver/tap.py``) does not mount ``cbserver.web.callback_pages`` on
    its web endpoint yet (``POST /api/v1/callbacks`` answers 404 there), so this wires the same
    service tree the way ``tests/integration/web/test_web_api_sipp.py`` does: ``CallbackServer``
    plus ``build_callback_web`` on a plain TCP port, one reactor, logs to a file.
    """
    sys.path.insert(0, str(ROOT))
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from twisted.web.server import Site

    from cbserver.config import load_config
    from cbserver.tap import CallbackServer
    from cbserver.web.callback_pages import build_callback_web

    log_file = open(log_path, "a")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log_file)], redirectStandardIO=False)
    cfg = load_config(config_path)
    server = CallbackServer(cfg, reactor)
    web = build_callback_web(cfg, server.db, server.callbacks, reactor, server.metrics,
                             fallback=server.web.resource(),
                             accepting=lambda: server.callbacks.running)
    site = Site(web.resource())
    site.displayTracebacks = False

    def started() -> None:
        """Start the tree, then the shared CSRF secret once the database is ready."""
        server.startService()
        server.db.when_ready().addCallback(lambda _: web.secret_service.startService())
        reactor.listenTCP(web_port, site, interface="127.0.0.1")

    def stopping():
        """Stop the secret service and the tree (calls drain, xDRs flush)."""
        if web.secret_service.running:
            web.secret_service.stopService()
        return server.stopService()

    reactor.callWhenRunning(started)
    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.runcall(reactor.run)
        prof.dump_stats(profile)
    else:
        reactor.run()


def cb_config(dsn: str, state: Path, sip_port: int, carrier_port: int, web_port: int,
              admin_port: int, rtp: str, ssl: bool, pool_size: int, node_caps: bool = True,
              start_delay_target: float | None = None, caps_extra: str = "") -> str:
    """The server's configuration: one instance, plain TCP web (or ssl), limits out of the way.

    Without ``node_caps`` the node's own busy caps (``node_max_active``, ``node_max_starting``)
    keep their shipped defaults (``--overload``); the abuse limits stay raised either way.
    """
    caps = "node_max_active = 100000\nnode_max_starting = 100000\n" if node_caps else caps_extra
    if node_caps and start_delay_target is None:
        start_delay_target = 0.0    # the ramp: the start-delay gate must not refuse either
    if start_delay_target is not None:
        caps += f"start_delay_target = {start_delay_target}\n"
    endpoint = f"ssl:{web_port}:interface=127.0.0.1" if ssl else f"tcp:{web_port}:interface=127.0.0.1"
    return f"""
[server]
node = "node1"
state_dir = "{state}"
shutdown_grace = 20.0
[database]
dsn = "{dsn}"
pool_size = {pool_size}
[sip]
listen = "127.0.0.1:{sip_port}"
public_address = "127.0.0.1"
no_answer_timeout = 10.0
[sip.trunk]
address = "127.0.0.1:{carrier_port}"
from_domain = "trunk.test"
[rtp]
address = "127.0.0.1"
ports = "{rtp}"
inactivity_timeout = 30.0
[web]
endpoint = "{endpoint}"
admin_endpoint = "tcp:{admin_port}:interface=127.0.0.1"
admin_token = "bench-admin-token-0123456789"
# One client address stands in for many callers: up to 512 keep-alive connections.
max_connections_per_client = 1000
[limits]
per_client = 100000000
per_phone = 100000000
per_account = 100000000
concurrent_per_account = 100000
{caps}[[application]]
name = "Web callback"
callback_page_address = "http://127.0.0.1:{web_port}/web-callback"
second_number = "18005550100"
internal_account = "cb-internal"
special_charge_if_legb_fails = true
account_id_translation_rule = "s/^/cb/"
"""


class CbServer:
    """A scratch database, the sipp carrier and ``twistd -n cbserver`` pinned to one core."""

    def __init__(self, args, work: Path):
        self.args = args
        self.work = work
        self.dbname = f"cbbench_{os.getpid()}"
        self.dsn = ""
        self.proc: subprocess.Popen | None = None
        self.carrier = None
        self.web_port = free_port(socket.SOCK_STREAM)
        self.ssl = args.ssl

    def start(self) -> None:
        """Database, provisioning, carrier, server; return once ``/healthz`` says ready."""
        from cbserver.devtools.democarrier import Carrier

        base = pg_dsn()
        pgstats.enable(with_dbname(base, "postgres"), str(VENV_BIN / "cbserver"), ROOT)
        pgstats.track_functions(with_dbname(base, "postgres"))
        create_database(base, self.dbname)
        self.dsn = with_dbname(base, self.dbname)
        subprocess.run([str(VENV_BIN / "cbserver"), "db", "upgrade", "--dsn", self.dsn],
                       check=True, cwd=ROOT, capture_output=True)
        pgstats.create_extension(self.dsn)
        subprocess.run([sys.executable, __file__, "--provision", self.dsn,
                        "--accounts", str(self.args.accounts)], check=True, cwd=ROOT)
        self.carrier = Carrier(self.work, free_port(), hold_ms=self.args.hold_ms,
                               audio=not self.args.quiet_carrier,
                               media_port=free_port())
        self.carrier.start()
        pin(self.carrier.proc.pid, CLIENT_CORE)
        self.server_kind = self.args.server
        if self.server_kind in ("auto", "twistd"):
            self.launch_twistd()
            status, _ = self.request("POST", "/api/v1/callbacks", {})
            if status == 404:
                print("twistd cbserver serves no POST /api/v1/callbacks (404): cbserver/tap.py does "
                      "not mount the callback API yet", flush=True)
                if self.server_kind == "twistd":
                    raise RuntimeError("twistd cbserver has no callback API")
                stop(self.proc, signal.SIGTERM, wait=30.0)
                self.server_kind = "wired"
            else:
                self.server_kind = "twistd"
        if self.server_kind == "wired":
            self.launch_wired()
        print(f"cbserver: {self.server_kind} (pid {self.proc.pid}, core {SERVER_CORE}), web "
              f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.web_port}, carrier "
              f"127.0.0.1:{self.carrier.port} (core {CLIENT_CORE})", flush=True)

    def write_config(self, web_port: int) -> Path:
        """The configuration file, with the ``[web] endpoint`` on ``web_port``."""
        cfg = self.work / "cbserver.toml"
        cfg.write_text(cb_config(self.dsn, self.work / "state", free_port(), self.carrier.port,
                                 web_port, free_port(socket.SOCK_STREAM), self.args.rtp_ports,
                                 self.ssl, self.args.pool_size,
                                 node_caps=not (self.args.overload or self.args.refusal_cost),
                                 start_delay_target=self.args.start_delay_target,
                                 caps_extra="node_max_active = 1\n" if self.args.refusal_cost
                                 else ""))
        return cfg

    def launch_twistd(self) -> None:
        """``twistd -n cbserver --config ...`` pinned to the server core."""
        cfg = self.write_config(self.web_port)
        argv = [str(VENV_BIN / "twistd"), "-n", "--pidfile=", "-l", str(self.work / "twistd.log")]
        if self.args.profile:
            argv += ["--profiler=cprofile", "--profile", str(self.work / "server.prof"), "--savestats"]
        argv += ["cbserver", "--config", str(cfg)]
        self.proc = spawn(argv, SERVER_CORE, self.work / "twistd.out", cwd=ROOT)
        self.wait_healthy()

    def launch_wired(self) -> None:
        """This script's ``--serve`` mode (see ``serve_main``) pinned to the server core."""
        self.ssl = False
        cfg = self.write_config(free_port(socket.SOCK_STREAM))
        argv = [sys.executable, __file__, "--serve", str(cfg), "--web-port", str(self.web_port),
                "--log", str(self.work / "server.log")]
        if self.args.profile:
            argv += ["--profile-to", str(self.work / "server.prof")]
        self.proc = spawn(argv, SERVER_CORE, self.work / "server.out", cwd=ROOT)
        self.wait_healthy()

    def wait_healthy(self) -> None:
        """Return once ``/healthz`` answers 200 and the call-handling services had a moment."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cbserver exited {self.proc.returncode}; see {self.work}")
            try:
                status, _ = self.request("GET", "/healthz")
                if status == 200:
                    time.sleep(1.5)     # the gated services start once the pool is ready
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("cbserver did not become healthy within 60 s")

    def connection(self) -> http.client.HTTPConnection:
        """A new keep-alive connection to the web endpoint."""
        if self.ssl:
            import ssl

            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return http.client.HTTPSConnection("127.0.0.1", self.web_port, timeout=30, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=30)

    def request(self, method: str, path: str, body: dict | None = None,
                conn: http.client.HTTPConnection | None = None) -> tuple[int, dict]:
        """One request (on ``conn`` when given); (status, decoded JSON body)."""
        own = conn is None
        conn = conn or self.connection()
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
            try:
                answer = json.loads(raw or b"{}")
            except ValueError:
                answer = {"raw": raw[:200].decode("latin-1")}
            if isinstance(answer, dict):
                answer["_retry_after"] = resp.getheader("Retry-After")
                answer["_keep_alive"] = resp.getheader("Keep-Alive")
            return resp.status, answer
        finally:
            if own:
                conn.close()

    def stop(self) -> None:
        """Stop the server (it drains calls), the carrier, and drop the scratch database."""
        if self.proc is not None:
            stop(self.proc, signal.SIGTERM, wait=30.0)
        if self.carrier is not None and self.carrier.proc is not None:
            self.carrier.stop()
        if self.dsn and not self.args.keep_db:
            try:
                create_database(self.dsn, self.dbname, drop=True)
            except Exception as e:  # noqa: BLE001 - clean-up must not hide the real outcome
                print(f"could not drop {self.dbname}: {e}", file=sys.stderr)

    def backend_pids(self) -> list[int]:
        """The PostgreSQL backends serving the server's pool (their CPU is not on its core)."""
        import psycopg2

        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND pid <> pg_backend_pid()")
            pids = [r[0] for r in cur.fetchall()]
        conn.close()
        return [pid for pid in pids if Path(f"/proc/{pid}/stat").exists()]

    def server_cpu(self) -> float:
        """CPU seconds the server has used so far (a subclass running several sums them)."""
        return cpu_seconds(self.proc.pid)

    def body(self, i: int) -> dict:
        """The JSON of callback number ``i`` (accounts round-robin, distinct numbers)."""
        account = f"cbbench{i % self.args.accounts:05d}"
        phone = f"1818{5000000 + i % 5000000:07d}"
        if self.args.mode == "extended":
            return {"mode": "extended", "account": account, "password": BENCH_PASSWORD,
                    "phone": phone, "destination": f"1212{5000000 + i % 5000000:07d}"}
        return {"mode": "simple", "account": account, "phone": phone}

    def step(self, rate: float, duration: float, first: int) -> Step:
        """POST callbacks at ``rate``/s for ``duration`` s; wait for them; count them in PostgreSQL."""
        import psycopg2

        n = max(1, int(rate * duration))
        res = Step(rate=rate, attempted=n)
        ids: list[str] = []
        latencies: list[float] = []
        lock = threading.Lock()
        local = threading.local()
        clients: list[KeepAlive] = []

        def post(i: int, when: float) -> None:
            """Send callback ``i`` at time ``when`` on this thread's keep-alive connection."""
            delay = when - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if getattr(local, "client", None) is None:
                local.client = KeepAlive(self.connection)
                with lock:
                    clients.append(local.client)
            t = time.monotonic()
            try:
                status, answer = local.client.request(lambda conn: self.request(
                    "POST", "/api/v1/callbacks", self.body(first + i), conn))
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    res.fail(f"http:{type(e).__name__}")
                return
            took = time.monotonic() - t
            code = answer.get("error", {}).get("code", "?")
            with lock:
                latencies.append(took)
                if status == 202 and "id" in answer:
                    ids.append(answer["id"])
                    res.accepted_latencies.append(took)
                elif (self.args.overload or self.args.refusal_cost) and status in (429, 503):
                    key = f"{status}:{code}"
                    res.refused[key] = res.refused.get(key, 0) + 1
                    res.refusal_latencies.append(took)
                    res.no_retry_after += not answer.get("_retry_after")
                else:
                    res.fail(f"http_{status}:{answer.get('error', {}).get('code', '?')}")

        backends = self.backend_pids()
        snap = pgstats.Snapshot.take(self.dsn)
        cpu0 = self.server_cpu()
        pg0 = sum(cpu_seconds(pid) for pid in backends)
        machine0 = machine_busy_seconds()
        client0 = time.process_time()
        carrier_pid = self.carrier.proc.pid if self.carrier and self.carrier.proc else None
        carrier0 = cpu_seconds(carrier_pid) if carrier_pid else 0.0
        t0 = time.monotonic() + 0.2
        workers = min(512, max(16, int(rate * 2)))
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            for i in range(n):
                pool.submit(post, i, t0 + i / rate)
            pool.shutdown(wait=True)
        except BaseException:   # Ctrl-C: drop the requests not sent yet, let clean-up run
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        res.offered_cpu = self.server_cpu() - cpu0
        res.offered_elapsed = time.monotonic() - t0
        # Wait for every accepted callback to end and its two xDRs to be written.
        nominal = 1.0 + self.args.hold_ms / 1000
        deadline = time.monotonic() + nominal + self.args.drain
        rows: list = []
        legs: dict[str, int] = {}
        polls = 0
        with psycopg2.connect(pgstats.quiet_dsn(self.dsn)) as conn, conn.cursor() as cur:
            while True:
                polls += 1
                cur.execute("SELECT id, status, state->'cause'->>'code', "
                            "extract(epoch FROM updated_at - created_at) "
                            "FROM callback_sessions WHERE id = ANY(%s)", (ids,))
                rows = cur.fetchall()
                cur.execute("SELECT session_id, count(*) FROM xdrs WHERE session_id = ANY(%s) "
                            "GROUP BY session_id", (ids,))
                legs = dict(cur.fetchall())
                conn.commit()
                final = sum(1 for r in rows if r[1] in ("ended", "refused"))
                if (final == len(ids) and sum(legs.values()) >= 2 * len(ids)) \
                        or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        res.elapsed = time.monotonic() - t0
        res.cpu = self.server_cpu() - cpu0
        res.machine_cpu = machine_busy_seconds() - machine0
        res.client_cpu = time.process_time() - client0
        if carrier_pid:
            try:
                res.carrier_cpu = cpu_seconds(carrier_pid) - carrier0
            except OSError:
                pass
        res.pg = snap.delta(self.dsn, polls)
        try:
            res.db_cpu = sum(cpu_seconds(pid) for pid in backends) - pg0
        except OSError:     # a pool connection was replaced during the step
            res.db_cpu = 0.0
        lengths = []
        for cb_id, status, cause, length in rows:
            if status == "ended" and cause in EXPECTED_CAUSES and legs.get(cb_id) == 2:
                res.completed += 1
                lengths.append(float(length))
            elif status == "ended" and cause in EXPECTED_CAUSES:
                res.fail(f"xdr_rows_{legs.get(cb_id, 0)}")
            elif status in ("ended", "refused"):
                res.fail(f"{status}:{cause}")
            else:
                res.fail(f"not_ended:{status}")
        res.fail("session_missing", len(ids) - len(rows))
        res.accepted = len(ids)
        xdrs = sum(legs.values())
        res.latency_p50, res.latency_p99 = quantile(latencies, 0.5), quantile(latencies, 0.99)
        res.length_p50, res.length_p99 = quantile(lengths, 0.5), quantile(lengths, 0.99)
        res.note = f"{xdrs} xDR rows for {len(ids)} accepted"
        retried = sum(c.retries for c in clients)
        if retried:  # a reused keep-alive connection closed under a request (bench/keepalive.py)
            res.note += f"; {retried} POSTs sent again"
        return res


# -- sippy baseline ----------------------------------------------------------------------------


def sipp_stats(path: Path) -> dict[str, str]:
    """The last line of a sipp ``-trace_stat`` file, by column name."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f, delimiter=";") if r]
    return dict(zip(rows[0], rows[-1], strict=False))


class Sippy:
    """sippy's ``b2bua_simple`` pinned to one core, a sipp UAS behind it, a sipp UAC per step."""

    def __init__(self, args, work: Path):
        self.args = args
        self.work = work
        self.b2bua: subprocess.Popen | None = None
        self.proc: subprocess.Popen | None = None
        self.uas: subprocess.Popen | None = None
        self.port = free_port()
        self.uas_port = free_port()

    def find(self) -> Path:
        """The ``b2bua_simple`` script of the sippy virtualenv."""
        path = Path(self.args.sippy_venv) / "bin" / "b2bua_simple"
        if not path.exists():
            raise RuntimeError(f"{path} not found: python3 -m venv {self.args.sippy_venv} && "
                               f"{self.args.sippy_venv}/bin/pip install sippy")
        return path

    def start(self) -> None:
        """Start the UAS and the B2BUA; give them two seconds; fail if either exited."""
        sipp = shutil.which("sipp")
        self.uas = spawn([sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", str(self.uas_port), "-nostdin",
                          "-trace_err", "-error_file", str(self.work / "uas-errors.log")],
                         CLIENT_CORE, self.work / "uas.out")
        # sippy logs every SIP message to stderr by default: kept, into a file (cbserver logs too).
        self.b2bua = spawn([str(self.find()), "-f", "-l", "127.0.0.1", "-p", str(self.port),
                            "-n", f"127.0.0.1:{self.uas_port}"], SERVER_CORE, self.work / "b2bua.log")
        self.proc = self.b2bua
        time.sleep(2.0)
        for proc, what in ((self.uas, "sipp UAS"), (self.b2bua, "b2bua_simple")):
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode}")

    def step(self, rate: float, duration: float, first: int) -> Step:
        """Run a sipp UAC for ``rate``×``duration`` calls through the B2BUA; read its statistics."""
        n = max(1, int(rate * duration))
        res = Step(rate=rate, attempted=n)
        stat = self.work / f"uac-{rate:g}.csv"
        argv = [shutil.which("sipp"), "-sn", "uac", f"127.0.0.1:{self.port}", "-i", "127.0.0.1",
                "-p", str(free_port()), "-r", f"{rate:g}", "-m", str(n), "-d", str(self.args.hold_ms),
                "-nostdin", "-recv_timeout", str(int(1000 * self.args.drain)), "-trace_stat", "-stf",
                str(stat), "-fd", "1", "-trace_err", "-error_file", str(self.work / f"uac-{rate:g}.err")]
        cpu0 = cpu_seconds(self.b2bua.pid)
        machine0 = machine_busy_seconds()
        t0 = time.monotonic()
        uac = spawn(argv, CLIENT_CORE, self.work / f"uac-{rate:g}.out")
        limit = duration + self.args.hold_ms / 1000 + 2 * self.args.drain + 30
        try:
            uac.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            res.note = f"sipp UAC still running after {limit:.0f}s: stopped"
        stop(uac, signal.SIGINT)
        res.elapsed = time.monotonic() - t0
        res.cpu = cpu_seconds(self.b2bua.pid) - cpu0
        res.machine_cpu = machine_busy_seconds() - machine0
        stats = sipp_stats(stat)
        res.completed = int(stats.get("SuccessfulCall(C)", 0))
        for key, value in stats.items():
            if key.startswith("Failed") and key.endswith("(C)") and key != "FailedCall(C)" and int(value):
                res.fail(key[len("Failed"):-3], int(value))
        total_failed = int(stats.get("FailedCall(C)", 0))
        if total_failed > res.failed:
            res.fail("other", total_failed - res.failed)
        res.fail("not_run", n - res.completed - total_failed)
        length = stats.get("CallLength(C)", "")
        if length:
            h, m, s, us = (int(x) for x in length.split(":"))
            res.length_p50 = 3600 * h + 60 * m + s + us / 1e6
        res.note = f"sipp UAC exit {uac.returncode}, {res.elapsed:.0f}s"
        if uac.returncode not in (0, 1):
            res.fail(f"sipp_exit_{uac.returncode}")
        return res

    def stop(self) -> None:
        """Stop the B2BUA and the UAS."""
        for proc in (self.b2bua, self.uas):
            if proc is not None:
                stop(proc, signal.SIGTERM, wait=5.0)


# -- driver ------------------------------------------------------------------------------------


def idle_cpu(name: str, pid: int, seconds: float = 5.0) -> float:
    """Print (and return) the share of a core a server uses when no call is up."""
    c0 = cpu_seconds(pid)
    time.sleep(seconds)
    share = (cpu_seconds(pid) - c0) / seconds
    print(f"{name} idle: {100 * share:.1f}% of a core", flush=True)
    return share


def ramp(name: str, system, rates: list[float], duration: float, pause: float,
         retries: int, max_post_p99: float = 0.0) -> tuple[Step | None, Step | None]:
    """Step the rate up; (highest step with zero failures, the first step that failed).

    A failed step is run again up to ``retries`` times (the machine is shared and noisy); every
    attempt is printed, and the rate counts only if an attempt had no failure at all. With
    ``max_post_p99`` (seconds; 0: off) a step whose POST p99 is longer also fails: requests
    queued behind a server that is not keeping up still complete within a short step and its
    drain window, but the queue grows for as long as the rate lasts (a longer step, or a
    steady run, fails them), so such a rate is not sustained.
    """
    idle_cpu(name, system.proc.pid)
    best = None
    first = 0
    for rate in rates:
        for attempt in range(retries + 1):
            res = system.step(rate, duration, first)
            first += res.attempted
            ok = not res.failed and res.completed == res.attempted
            if ok and max_post_p99 and res.latency_p99 > max_post_p99:
                ok = False
                res.note = (f"POST p99 {1000 * res.latency_p99:.0f} ms > "
                            f"{1000 * max_post_p99:.0f} ms: requests queue, not sustained")
            print(res.line(name) + ("" if ok else f" [attempt {attempt + 1} failed]"), flush=True)
            time.sleep(pause)
            if ok:
                break
        if not ok:
            return best, res
        best = res
    return best, None


def overload(server, sustained: float, duration: float) -> bool:
    """Issue 17 item 4: offer twice ``sustained`` for ``duration`` s; print figures; True if met.

    Met when every callback answered 202 completed (carrier's hang-up, two xDRs), every other
    answer was 503 ``busy`` or 429 with a ``Retry-After`` within 50 ms at p99, and completed
    callbacks per second stayed at least 90 % of ``sustained``.
    """
    idle = idle_cpu("cbserver", server.proc.pid)
    before = overload_report.admission_state(server)
    res = server.step(2 * sustained, duration, 0)
    print(res.line("cbserver overload"), flush=True)
    print(overload_report.where_it_went(res, idle, before, overload_report.admission_state(server)),
          flush=True)
    others = {k: v for k, v in res.failures.items() if k.startswith("http")}
    accepted_failed = res.failed - sum(others.values())
    p50, p99 = quantile(res.refusal_latencies, 0.5), quantile(res.refusal_latencies, 0.99)
    rate = res.completed / duration
    checks = {
        "every 202 completed": accepted_failed == 0 and res.completed == res.accepted,
        "every other answer 503 busy / 429 with Retry-After": not others and not res.no_retry_after
        and all(k in ("503:busy",) or k.startswith("429:") for k in res.refused),
        "refusals within 50 ms at p99": p99 <= 0.050,
        "completed/s >= 90 % of the sustained rate": rate >= 0.9 * sustained,
    }
    print(f"\noverload: offered {res.attempted} at {2 * sustained:g}/s for {duration:g} s "
          f"(sustained rate given: {sustained:g}/s)\n"
          f"  answered 202: {res.accepted}; completed {res.completed}; failed after 202: "
          f"{accepted_failed} {dict((k, v) for k, v in res.failures.items() if k not in others)}\n"
          f"  refused: {sum(res.refused.values())} {res.refused}, without Retry-After "
          f"{res.no_retry_after}; refusal latency p50 {1000 * p50:.1f} ms p99 {1000 * p99:.1f} ms\n"
          f"  other answers: {others or 'none'}\n"
          f"  completed per second: {rate:.1f} ({100 * rate / sustained:.0f} % of {sustained:g})",
          flush=True)
    for what, ok in checks.items():
        print(f"  [{'met' if ok else 'NOT MET'}] {what}", flush=True)
    if res.pg is not None and res.completed:
        print(f"\n{res.pg.report(res.completed)}", flush=True)
    return all(checks.values())


def table(cb: tuple | None, sp: tuple | None, args) -> str:
    """The summary table (markdown), then the ratios."""

    def rate(s):
        return f"{s.rate:g}" if s else "none"

    def cpu(s):
        if not (s and s.completed):
            return "-"
        text = f"{1000 * s.cpu / s.completed:.1f}"
        return text + (f" (+{1000 * s.db_cpu / s.completed:.1f} PostgreSQL)" if s.db_cpu else "")

    def ceiling(s):
        return f"{s.completed / s.cpu:.0f}" if s and s.cpu else "-"

    def machine(s):
        return f"{1000 * s.machine_cpu / s.completed:.1f}" if s and s.completed else "-"

    def above(s):
        if s is None:
            return "none (top of the ramp reached)"
        if not s.failed and s.note:
            return f"at {s.rate:g}/s: {s.note}"
        return f"{s.failed} of {s.attempted} at {s.rate:g}/s: {s.failures}"

    lines = ["", "| system | sustained calls/s, zero failures | CPU ms per call (server core) "
             "| calls/s one core could carry (1000/CPU ms) | CPU ms per call, whole machine "
             "| failures at the next rate |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, res in ((f"cbserver callbacks ({args.mode}; web, legA, legB, xDRs)", cb),
                      ("sippy b2bua_simple (sipp UAC -> b2bua -> sipp UAS)", sp)):
        if res is not None:
            lines.append(f"| {name} | {rate(res[0])} | {cpu(res[0])} | {ceiling(res[0])} "
                         f"| {machine(res[0])} | {above(res[1])} |")
    best = cb[0] if cb else None
    if best and best.completed and best.machine_cpu > best.cpu:
        # What the rest of the machine (PostgreSQL, the carrier, this client, the kernel) costs
        # per callback bounds the rate even if the server itself cost nothing.
        rest = (best.machine_cpu - best.cpu) / best.completed
        lines.append(f"\ncbserver at {best.rate:g}/s: the rest of the machine (PostgreSQL, "
                     f"carrier, client) spent {1000 * rest:.1f} ms per callback; with "
                     f"{os.cpu_count()} cores a server costing nothing could not go past "
                     f"{os.cpu_count() / rest:.0f} callbacks/s")
    if cb and sp and cb[0] and sp[0]:
        # Issue 17's targets: item 3 (sustained rate) and item 2 (server CPU per call).
        # When sippy never failed, its sustained rate is only a floor (the ramp's top): the
        # ratio is then an upper bound, and says so.
        bound = "" if sp[1] is not None else (
            f"; sippy reached the top of the ramp ({sp[0].rate:g}/s), so the true ratio is at most "
            "this: add higher rates to find sippy's limit")
        lines.append(f"\nratio cbserver / sippy, sustained rate: {cb[0].rate / sp[0].rate:.2f} "
                     f"(target >= 1.5{bound})")
        if cb[0].cpu and sp[0].cpu and cb[0].completed and sp[0].completed:
            cb_ms = 1000 * cb[0].cpu / cb[0].completed
            sp_ms = 1000 * sp[0].cpu / sp[0].completed
            lines.append(f"ratio server CPU per call, cbserver (at {cb[0].rate:g}/s) / sippy "
                         f"(at {sp[0].rate:g}/s): {cb_ms:.2f} / {sp_ms:.2f} ms = "
                         f"{cb_ms / sp_ms:.2f} (target <= 1)")
    # PostgreSQL's figures at the sustained rate, or at the failed step when none was sustained.
    shown = best or (cb[1] if cb else None)
    sp_best = sp[0] if sp else None
    if shown is not None and shown.pg is not None and shown.completed and sp_best \
            and sp_best.completed and sp_best.cpu:
        pg_ms = 1000 * shown.pg.cpu / shown.completed
        sp_ms = 1000 * sp_best.cpu / sp_best.completed
        lines.append(f"ratio PostgreSQL CPU per callback (cbserver at {shown.rate:g}/s) / sippy CPU "
                     f"per call (at {sp_best.rate:g}/s): {pg_ms:.2f} / {sp_ms:.2f} ms = "
                     f"{pg_ms / sp_ms:.2f} (target <= 0.3)")
    if shown is not None and shown.pg is not None:
        lines.append(f"\ncbserver at {shown.rate:g}/s, {shown.pg.report(shown.completed)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Parse options, run both ramps, print the table; stop every process whatever happens."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="5,10,15,20,30,40,50,60,80,100,120,150",
                   help="comma-separated calls/s to step through (ascending)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load per step")
    p.add_argument("--hold-ms", type=int, default=2000, help="how long answered calls last")
    p.add_argument("--drain", type=float, default=15.0, help="extra seconds allowed to finish")
    p.add_argument("--max-post-p99", type=float, default=1.0, metavar="SECONDS",
                   help="a cbserver step whose POST p99 is longer is not sustained (0: off)")
    p.add_argument("--pause", type=float, default=3.0, help="seconds between steps")
    p.add_argument("--retries", type=int, default=1,
                   help="run a failed step again this many times before calling the rate failed")
    p.add_argument("--mode", choices=("simple", "extended"), default="simple",
                   help="callback mode (extended checks a scrypt password per request)")
    p.add_argument("--accounts", type=int, default=50, help="bench accounts (round-robin)")
    p.add_argument("--rtp-ports", default="12000-19999", help="cbserver's RTP port range")
    p.add_argument("--quiet-carrier", action="store_true",
                   help="the carrier streams no audio (no RTP to relay, closer to sippy's work)")
    p.add_argument("--pool-size", type=int, default=4,
                   help="[database] pool_size of cbserver (4 is the shipped default)")
    p.add_argument("--ssl", action="store_true", help="web endpoint over TLS (default plain TCP)")
    p.add_argument("--profile", action="store_true", help="run twistd under cProfile")
    p.add_argument("--overload", type=float, metavar="SUSTAINED",
                   help="issue 17 item 4: with the node's caps at their shipped defaults, offer "
                        "twice SUSTAINED callbacks/s for --duration s (30 in the issue) and check "
                        "that what is not refused completes (cbserver only)")
    p.add_argument("--refusal-cost", type=float, metavar="RATE",
                   help="the server's CPU per busy refusal: node_max_active = 1, one callback held "
                        "(give --hold-ms longer than --duration + 10 s), RATE POSTs/s all refused")
    p.add_argument("--start-delay-target", type=float,
                   help="[limits] start_delay_target of cbserver (default: the shipped one; 0: off)")
    p.add_argument("--only", choices=("cbserver", "sippy"), help="run one side only")
    p.add_argument("--sippy-venv", default="/tmp/sippy-venv", help="virtualenv with sippy")
    p.add_argument("--keep-db", action="store_true", help="keep the scratch database")
    p.add_argument("--server", choices=("auto", "twistd", "wired"), default="auto",
                   help="twistd cbserver, or this script's wiring of CallbackServer + callback API "
                        "(auto: twistd when it serves the API)")
    p.add_argument("--provision", metavar="DSN", help=argparse.SUPPRESS)
    p.add_argument("--serve", metavar="CONFIG", help=argparse.SUPPRESS)
    p.add_argument("--web-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--log", help=argparse.SUPPRESS)
    p.add_argument("--profile-to", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.provision:
        provision_main(args.provision, args.accounts)
        return 0
    if args.serve:
        serve_main(args.serve, args.web_port, args.log, args.profile_to)
        return 0
    rates = [float(r) for r in args.rates.split(",")]
    pin(os.getpid(), CLIENT_CORE)

    def interrupted(signum, _frame):
        """Turn SIGINT/SIGTERM into KeyboardInterrupt so that clean-up runs."""
        raise KeyboardInterrupt

    # SIGINT too: a shell starting us in the background leaves SIGINT ignored otherwise.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    work = Path(tempfile.mkdtemp(prefix="bench-callbacks-"))
    rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    print(f"cbserver {rev}; work folder {work}; cores: server {SERVER_CORE}, clients/sipp "
          f"{CLIENT_CORE}; {args.duration:g}s per step, hold {args.hold_ms} ms; load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    cb_res = sp_res = None
    if args.overload or args.refusal_cost:
        server = CbServer(args, work)
        try:
            server.start()
            if args.refusal_cost:
                return 0 if overload_report.refusal_cost(server, args.refusal_cost, args.duration,
                                                         idle_cpu) else 1
            return 0 if overload(server, args.overload, args.duration) else 1
        except KeyboardInterrupt:
            return 130
        finally:
            server.stop()
            stop_all()
    try:
        if args.only in (None, "cbserver"):
            server = CbServer(args, work)
            try:
                server.start()
                cb_res = ramp("cbserver", server, rates, args.duration, args.pause, args.retries,
                              args.max_post_p99)
            finally:
                server.stop()
        if args.only in (None, "sippy"):
            sippy = Sippy(args, work)
            try:
                sippy.start()
                sp_res = ramp("sippy", sippy, rates, args.duration, args.pause, args.retries)
            except RuntimeError as e:
                print(f"sippy baseline not run: {e}", flush=True)
            finally:
                sippy.stop()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        stop_all()
    print(table(cb_res, sp_res, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
