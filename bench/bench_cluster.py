"""One node against two nodes behind haproxy: sustained callbacks/s and CPU per callback.

Built on ``bench/bench_callbacks.py`` (its database, provisioning, sipp carrier, open-loop
client, rate ramp and counting in PostgreSQL are reused as they are): the same run first ramps
one ``twistd cbserver`` node reached directly and two nodes (``node1``, ``node2``, one
database, one carrier) behind haproxy (Debian ``haproxy``), both started at once and loaded in
turn at each rate (so that both see the same background load on a shared machine), and prints
the figures of each and their ratios, with a projection to a 16-core host whose database runs
on its own machine.

    .venv/bin/python bench/bench_cluster.py --duration 10 --rates 10,20,30,40 \\
        --haproxy-config deploy/haproxy/haproxy.cfg

The haproxy configuration is the one given (``--haproxy-config``, default the minimal
``bench/haproxy-bench.cfg``). The script starts haproxy with ``CBS_FRONT_PORT``,
``CBS_NODE1_PORT`` and ``CBS_NODE2_PORT`` in its environment (haproxy expands ``"${VAR}"``);
a configuration with fixed ports instead is used with ``--front-port`` and ``--node-ports``
matching it. See docs/deploy.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_callbacks as bc  # noqa: E402 - the sibling script, imported as a module

ROOT = bc.ROOT
TRUSTED = 'admin_token = "bench-admin-token-0123456789"'


def lift_caps(text: str) -> str:
    """Raise ``[web] max_connections_per_client`` (50 by default) out of the way: the client
    keeps up to twice the rate in connections open, and behind haproxy every request comes
    from 127.0.0.1, so the default cap would reset connections in one set-up and not the
    other."""
    return text.replace(TRUSTED, TRUSTED + "\nmax_connections = 20000\n"
                                           "max_connections_per_client = 10000")


class Cluster(bc.CbServer):
    """``bc.CbServer`` with ``nodes`` twistd nodes; with two, haproxy in front on ``web_port``."""

    def __init__(self, args, work: Path, nodes: int):
        super().__init__(args, work)
        self.nodes = nodes
        self.dbname = f"cbbench_{os.getpid()}_{nodes}"
        self.procs: list[subprocess.Popen] = []
        self.haproxy: subprocess.Popen | None = None
        self.steps: list[bc.Step] = []  # every step run, for the same-rate comparison
        self.args.server = "twistd"

    def write_config(self, web_port: int) -> Path:
        """bench_callbacks' configuration, with the per-client connection cap lifted."""
        path = super().write_config(web_port)
        path.write_text(lift_caps(path.read_text()))
        return path

    def launch_twistd(self) -> None:
        """One node as bench_callbacks runs it, or N nodes and haproxy in front of them."""
        if self.nodes == 1:
            super().launch_twistd()
            self.procs = [self.proc]
            return
        self.rate_every_node()
        low, high = (int(x) for x in self.args.rtp_ports.split("-"))
        width = (high - low + 1) // self.nodes
        ports = ([int(p) for p in self.args.node_ports.split(",")] if self.args.node_ports
                 else [bc.free_port(socket.SOCK_STREAM) for _ in range(self.nodes)])
        for i in range(self.nodes):
            name = f"node{i + 1}"
            folder = self.work / name
            folder.mkdir(exist_ok=True)
            text = bc.cb_config(self.dsn, folder / "state", bc.free_port(), self.carrier.port,
                                ports[i], bc.free_port(socket.SOCK_STREAM),
                                f"{low + i * width}-{low + (i + 1) * width - 1}", False,
                                self.args.pool_size)
            # The nodes sit behind haproxy on 127.0.0.1: it alone may name the client.
            text = lift_caps(text).replace('node = "node1"', f'node = "{name}"').replace(
                TRUSTED, TRUSTED + '\ntrusted_proxies = ["127.0.0.1/32"]')
            (folder / "cbserver.toml").write_text(text)
            argv = [str(bc.VENV_BIN / "twistd"), "-n", "--pidfile=", "-l",
                    str(folder / "twistd.log"), "cbserver", "--config", str(folder / "cbserver.toml")]
            self.procs.append(bc.spawn(argv, i % os.cpu_count(), folder / "twistd.out", cwd=ROOT))
        self.proc = self.procs[0]
        for port in ports:
            self.wait_port_healthy(port)
        if self.args.front_port:
            self.web_port = self.args.front_port
        env = dict(os.environ, CBS_FRONT_PORT=str(self.web_port),
                   **{f"CBS_NODE{i + 1}_PORT": str(p) for i, p in enumerate(ports)})
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.haproxy = bc.spawn([haproxy, "-db", "-f", str(self.args.haproxy_config)],
                                bc.CLIENT_CORE, self.work / "haproxy.out", env=env)
        self.wait_healthy()
        print(f"haproxy (pid {self.haproxy.pid}) on 127.0.0.1:{self.web_port} in front of "
              f"{self.nodes} nodes on ports {ports} ({self.args.haproxy_config})", flush=True)

    def rate_every_node(self) -> None:
        """Give node2.. the rating-list entries the provisioning made for node1."""
        import psycopg2

        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            for i in range(2, self.nodes + 1):
                cur.execute("INSERT INTO rating_entries (product_id, service, node, access_code, "
                            "tariff_id, overdraft_protection) SELECT product_id, service, %s, "
                            "access_code, tariff_id, overdraft_protection FROM rating_entries "
                            "WHERE node = 'node1' ON CONFLICT DO NOTHING", (f"node{i}",))
        conn.close()

    def wait_port_healthy(self, port: int) -> None:
        """Wait until the node on ``port`` answers ``/healthz`` 200."""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a node exited; see {self.work}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"node on port {port} not healthy within 90 s")

    def server_cpu(self) -> float:
        """Every node's CPU (haproxy is counted apart, in ``step``)."""
        return sum(bc.cpu_seconds(p.pid) for p in self.procs)

    def step(self, rate: float, duration: float, first: int) -> bc.Step:
        """bench_callbacks' step, plus haproxy's CPU over it (``lb_cpu``)."""
        h0 = bc.cpu_seconds(self.haproxy.pid) if self.haproxy else 0.0
        res = super().step(rate, duration, first)
        self.steps.append(res)
        res.lb_cpu = (bc.cpu_seconds(self.haproxy.pid) - h0) if self.haproxy else 0.0
        if self.nodes > 1:  # how the balancer spread the callbacks so far
            import psycopg2

            with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
                cur.execute("SELECT node, count(DISTINCT session_id) FROM xdrs GROUP BY node "
                            "ORDER BY node")
                res.note += "; callbacks so far by node: " + ", ".join(
                    f"{n} {c}" for n, c in cur.fetchall())
            conn.close()
        return res

    def stop(self) -> None:
        """haproxy, the other nodes, then what bench_callbacks stops (node1, carrier, db)."""
        if self.haproxy is not None:
            bc.stop(self.haproxy, signal.SIGTERM, wait=10.0)
        for proc in self.procs[1:]:
            bc.stop(proc, signal.SIGTERM, wait=30.0)
        super().stop()


def per_call(res: bc.Step | None) -> dict[str, float]:
    """Milliseconds of CPU per completed callback: nodes, haproxy, PostgreSQL, whole machine."""
    if res is None or not res.completed:
        return {}
    n = res.completed
    return {"node": 1000 * res.cpu / n, "lb": 1000 * getattr(res, "lb_cpu", 0.0) / n,
            "pg": 1000 * res.db_cpu / n, "machine": 1000 * res.machine_cpu / n}


def pooled(steps: list[bc.Step]) -> dict[str, float]:
    """``per_call`` over several steps taken together (their CPU over their callbacks)."""
    total = bc.Step(rate=0)
    total.lb_cpu = 0.0
    for s in steps:
        total.completed += s.completed
        total.cpu += s.cpu
        total.db_cpu += s.db_cpu
        total.machine_cpu += s.machine_cpu
        total.lb_cpu += getattr(s, "lb_cpu", 0.0)
    return per_call(total)


def clean(steps: list[bc.Step]) -> dict[float, bc.Step]:
    """The steps with every callback completed, by rate."""
    return {s.rate: s for s in steps if not s.failed and s.completed == s.attempted}


def report(results: dict[int, tuple], steps: dict[int, list], cores: int,
           db_cores: int) -> str:
    """The table, the ratios two nodes / one node at the same rate, and the projection to
    ``cores`` cores."""
    lines = ["", "| set-up | sustained callbacks/s, zero failures | node CPU ms/callback "
             "| haproxy ms | PostgreSQL ms | whole machine ms | failures at the next rate |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for nodes, (best, failed) in results.items():
        c = per_call(best)
        what = "1 node, direct" if nodes == 1 else f"{nodes} nodes behind haproxy"
        above = (f"{failed.failed} of {failed.attempted} at {failed.rate:g}/s {failed.failures}"
                 if failed else "none (top of the ramp)")
        if c:
            lines.append(f"| {what} | {best.rate:g} | {c['node']:.1f} | {c['lb']:.1f} "
                         f"| {c['pg']:.1f} | {c['machine']:.1f} | {above} |")
        else:
            lines.append(f"| {what} | none | - | - | - | - | {above} |")
    # CPU per callback falls as the rate rises (idle work is shared by more callbacks), so
    # the set-ups are compared at the same rates: pooled over every rate both carried
    # without a failure (less noise on a shared machine), and at the highest of them.
    a, b = clean(steps.get(1, [])), clean(steps.get(2, []))
    rates = sorted(set(a) & set(b))
    if rates:
        p1, p2 = pooled([a[r] for r in rates]), pooled([b[r] for r in rates])
        lines.append(f"\npooled over {', '.join(f'{r:g}' for r in rates)}/s, 2 nodes + haproxy "
                     f"/ 1 node, CPU per callback: nodes {p2['node']:.1f} / {p1['node']:.1f} ms "
                     f"= {p2['node'] / p1['node']:.2f}; nodes and haproxy "
                     f"{(p2['node'] + p2['lb']) / p1['node']:.2f}; PostgreSQL {p2['pg']:.1f} / "
                     f"{p1['pg']:.1f} ms = {p2['pg'] / p1['pg']:.2f}")
    common = rates[-1] if rates else None
    one = per_call(a[common]) if common else {}
    two = per_call(b[common]) if common else {}
    if one and two:
        r1, r2 = results[1][0].rate, results[2][0].rate
        lines.append(f"\nsustained rate, 2 nodes + haproxy / 1 node: {r2 / r1:.2f}")
        lines.append(f"at {common:g}/s in both, 2 nodes + haproxy / 1 node, CPU per callback: "
                     f"nodes {two['node']:.1f} / {one['node']:.1f} ms = "
                     f"{two['node'] / one['node']:.2f}; nodes and haproxy "
                     f"{(two['node'] + two['lb']) / one['node']:.2f}; PostgreSQL "
                     f"{two['pg']:.1f} / {one['pg']:.1f} ms = {two['pg'] / one['pg']:.2f}; "
                     f"whole machine {two['machine'] / one['machine']:.2f}")
        # One core of the host is left to haproxy and the kernel's network work; the nodes
        # take the rest, one per core, each costing what a node of the 2-node run cost
        # (pooled over the common rates: the steadier figure).
        cost = p2
        host = cost["node"] + cost["lb"]
        nodes = cores - 1
        by_nodes = nodes * 1000 / cost["node"]
        by_lb = 1000 / cost["lb"] if cost["lb"] else float("inf")
        by_db = db_cores * 1000 / cost["pg"]
        lines.append(
            f"projection, {cores}-core host ({nodes} nodes + haproxy), PostgreSQL on its own "
            f"{db_cores}-core machine: nodes {by_nodes:.0f}/s, haproxy's core {by_lb:.0f}/s, "
            f"database {by_db:.0f}/s -> about {min(by_nodes, by_lb, by_db):.0f} callbacks/s "
            f"({host:.1f} ms of host CPU per callback; linear scaling assumed, "
            "see docs/deploy.md)")
    return "\n".join(lines)


def interleaved(systems: dict[int, Cluster], rates: list[float], duration: float,
                pause: float, retries: int) -> dict[int, tuple]:
    """Each rate on every set-up in turn, so that both see the same background load (the
    machine is shared); per set-up (highest rate with zero failures, the step that failed).

    As ``bench_callbacks.ramp``: a failed step is run again up to ``retries`` times, and a
    set-up stops at its first rate that fails every attempt.
    """
    for nodes, system in systems.items():
        bc.idle_cpu(f"{nodes} node(s)", system.proc.pid)
    best: dict[int, bc.Step | None] = dict.fromkeys(systems)
    failed: dict[int, bc.Step | None] = dict.fromkeys(systems)
    first = dict.fromkeys(systems, 0)
    for rate in rates:
        for nodes in [n for n in systems if failed[n] is None]:
            for attempt in range(retries + 1):
                res = systems[nodes].step(rate, duration, first[nodes])
                first[nodes] += res.attempted
                ok = not res.failed and res.completed == res.attempted
                print(res.line(f"{nodes} node(s)") + ("" if ok else
                      f" [attempt {attempt + 1} failed]"), flush=True)
                time.sleep(pause)
                if ok:
                    break
            if ok:
                best[nodes] = res
            else:
                failed[nodes] = res
    return {n: (best[n], failed[n]) for n in systems}


def main(argv=None) -> int:
    """Parse options, start both set-ups, ramp them in turn, print the report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rates", default="10,20,30,40,50,60", help="calls/s steps, ascending")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per step")
    p.add_argument("--hold-ms", type=int, default=2000, help="how long answered calls last")
    p.add_argument("--drain", type=float, default=15.0, help="extra seconds allowed to finish")
    p.add_argument("--pause", type=float, default=3.0, help="seconds between steps")
    p.add_argument("--retries", type=int, default=1, help="reruns of a failed step")
    p.add_argument("--accounts", type=int, default=50, help="bench accounts (round-robin)")
    p.add_argument("--rtp-ports", default="12000-19999", help="RTP ports, split between nodes")
    p.add_argument("--pool-size", type=int, default=4, help="[database] pool_size per node")
    p.add_argument("--quiet-carrier", action="store_true", help="the carrier streams no audio")
    p.add_argument("--haproxy-config", type=Path, default=ROOT / "bench" / "haproxy-bench.cfg",
                   help="haproxy configuration (deploy/haproxy/haproxy.cfg once shipped)")
    p.add_argument("--front-port", type=int, help="haproxy's port when the config fixes it")
    p.add_argument("--node-ports", help="the nodes' web ports when the config fixes them (a,b)")
    p.add_argument("--only", choices=("1", "2"), help="one set-up only")
    p.add_argument("--project-cores", type=int, default=16, help="cores of the projected host")
    p.add_argument("--db-cores", type=int, default=8, help="cores of the projected database")
    args = p.parse_args(argv)
    # What bench_callbacks' CbServer reads and this benchmark does not vary.
    args.mode, args.ssl, args.profile, args.keep_db = "simple", False, False, False
    rates = [float(r) for r in args.rates.split(",")]
    bc.pin(os.getpid(), bc.CLIENT_CORE)

    def interrupted(signum, _frame):
        """SIGINT/SIGTERM become KeyboardInterrupt so that clean-up runs."""
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    print(f"cbserver {rev}; work folder {work}; {args.duration:g}s per step, hold "
          f"{args.hold_ms} ms; {os.cpu_count()} cores; load average {os.getloadavg()}", flush=True)
    systems: dict[int, Cluster] = {}
    results: dict[int, tuple] = {}
    try:
        wanted = [int(args.only)] if args.only else [1, 2]
        low, high = (int(x) for x in args.rtp_ports.split("-"))
        width = (high - low + 1) // len(wanted)
        for k, nodes in enumerate(wanted):
            folder = work / f"{nodes}-node"
            folder.mkdir()
            # Both set-ups run side by side: each its own database, carrier and RTP ports.
            own = argparse.Namespace(**vars(args))
            own.rtp_ports = f"{low + k * width}-{low + (k + 1) * width - 1}"
            systems[nodes] = Cluster(own, folder, nodes)
            systems[nodes].start()
        results = interleaved(systems, rates, args.duration, args.pause, args.retries)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for system in systems.values():
            system.stop()
        bc.stop_all()
    steps = {nodes: system.steps for nodes, system in systems.items()}
    print(report(results, steps, args.project_cores, args.db_cores), flush=True)
    print(f"load average at the end: {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
