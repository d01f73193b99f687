"""Steady state: cbserver at a constant callback rate for a long time, memory and stalls sampled.

The server, its scratch PostgreSQL database and the sipp carrier are those of
``bench_callbacks.py`` (imported, not copied): the manual's example and ``--accounts`` bench
accounts provisioned, the server pinned to core 0, the carrier and this client to core 1, the
carrier streaming audio unless ``--quiet-carrier``. This client POSTs ``/api/v1/callbacks`` at
``--rate`` per second for ``--minutes`` and, every ``--sample`` seconds, records the server's
resident memory (``/proc/<pid>/status``) and reads its ``/metrics``: garbage-collection pauses
(``cbserver_gc_pause_seconds``, from ``gc.callbacks`` in the server) and reactor stalls
(``cbserver_reactor_stall_seconds``, the lateness of a 50 ms tick). At the end it waits for
every callback to end and checks each in PostgreSQL (ended by a hang-up, two xDR rows).

Printed: one line per sample, a table per minute (callbacks, POST latency p50/p99, failures,
RSS, worst stall and gen-2 pause), then the verdict against the targets: RSS flat after the
first minutes (within 10 %), no stall over 50 ms, POST p99 of the last ten minutes no worse
than the first ten, zero failures.

    .venv/bin/python bench/bench_steady.py --rate 60 --minutes 60
    .venv/bin/python bench/bench_steady.py --rate 60 --minutes 3      # a short run
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bench_callbacks import (  # noqa: E402 - run as a script beside it
    CLIENT_CORE,
    EXPECTED_CAUSES,
    ROOT,
    CbServer,
    cpu_seconds,
    machine_busy_seconds,
    pin,
    quantile,
    stop_all,
)
from keepalive import KeepAlive  # noqa: E402 - run as a script beside it

STALL_LIMIT = 0.05      # the target: no reactor stall over 50 ms
RSS_TOLERANCE = 0.10    # the target: RSS within 10 % after the first minutes
METRIC = re.compile(r'^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def parse_metrics(text: str) -> dict[tuple[str, str], float]:
    """Prometheus text as {(name, labels): value}."""
    out = {}
    for line in text.splitlines():
        m = METRIC.match(line)
        if m:
            out[(m["name"], m["labels"] or "")] = float(m["value"])
    return out


@dataclass
class Sample:
    """What one sampling interval saw."""

    t: float                    # seconds since the start of the load
    rss: float                  # MB
    gen2: int                   # full collections in the interval
    gen2_seconds: float         # their total duration
    gen2_max: float             # longest gen-2 collection since start
    stalls_over: int            # reactor ticks later than STALL_LIMIT in the interval
    stall_bucket: str           # the interval's worst stall, as a histogram bucket
    stall_max: float            # longest stall since start
    cpu: float                  # share of its core the server used in the interval
    machine: float = 0.0        # share of the whole machine (every core) busy in the interval
    pg_cpu: float = 0.0         # share of a core PostgreSQL (every process of it) used
    vacuumed: tuple[str, ...] = ()  # tables autovacuum or autoanalyze finished in the interval
    checkpoints: int = 0        # checkpoints PostgreSQL finished in the interval (timed or asked)


@dataclass
class Minute:
    """Callbacks sent in one minute of the run."""

    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    def fail(self, why: str) -> None:
        """Count one failure of kind ``why``."""
        self.failures[why] = self.failures.get(why, 0) + 1


def postmaster_pid(server: CbServer) -> int:
    """The PostgreSQL postmaster behind the server's database (a backend's parent)."""
    backend = server.backend_pids()[0]
    return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])


def pg_cluster_cpu(postmaster: int) -> float:
    """CPU seconds of the whole PostgreSQL cluster so far: the postmaster, its live children
    (backends, autovacuum, checkpointer, WAL writer) and the children that already exited."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    for pid in children:
        try:
            total += cpu_seconds(int(pid))
        except (FileNotFoundError, ProcessLookupError):
            pass  # exited meanwhile: its time is in the postmaster's children's time next read
    return total


def pg_counters(dsn: str) -> tuple[dict[str, int], int]:
    """In one connection: autovacuum plus autoanalyze runs finished so far per table of the
    server's database, and the checkpoints the cluster finished (timed or requested)."""
    import psycopg2

    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT relname, autovacuum_count + autoanalyze_count FROM pg_stat_user_tables")
        vacuums = dict(cur.fetchall())
        cur.execute("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        checkpoints = cur.fetchone()[0]
    conn.close()
    return vacuums, checkpoints


class Sampler:
    """Reads RSS and ``/metrics`` of the server every ``interval`` seconds (a thread)."""

    def __init__(self, server: CbServer, interval: float):
        self.server = server
        self.interval = interval
        self.samples: list[Sample] = []
        self.stopping = threading.Event()
        self.t0 = time.monotonic()
        self.last = self.read()
        self.postmaster = postmaster_pid(server)
        self.last_cpu = (time.monotonic(), self.cpu(), machine_busy_seconds(),
                         pg_cluster_cpu(self.postmaster))
        self.last_vacuums, self.last_checkpoints = pg_counters(server.dsn)

    def cpu(self) -> float:
        """The server's CPU seconds so far."""
        from bench_callbacks import cpu_seconds

        return cpu_seconds(self.server.proc.pid)

    def read(self) -> dict[tuple[str, str], float]:
        """The server's metrics now."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.web_port, timeout=30)
        try:
            conn.request("GET", "/metrics")
            return parse_metrics(conn.getresponse().read().decode())
        finally:
            conn.close()

    def take(self) -> Sample:
        """One sample: the interval since the previous one."""
        now = self.read()
        prev, self.last = self.last, now
        t, cpu, busy, pg = (time.monotonic(), self.cpu(), machine_busy_seconds(),
                            pg_cluster_cpu(self.postmaster))
        t_prev, cpu_prev, busy_prev, pg_prev = self.last_cpu
        self.last_cpu = (t, cpu, busy, pg)
        vacuums, checkpoints = pg_counters(self.server.dsn)
        vacuumed = tuple(sorted(k for k, v in vacuums.items() if v > self.last_vacuums.get(k, 0)))
        self.last_vacuums = vacuums
        done, self.last_checkpoints = checkpoints - self.last_checkpoints, checkpoints

        def diff(name, labels=""):
            return now.get((name, labels), 0.0) - prev.get((name, labels), 0.0)

        gen2 = 'generation="2"'
        buckets = sorted((float(re.search(r'le="([^"]+)"', k[1])[1]), diff(*k))
                         for k in now if k[0] == "cbserver_reactor_stall_seconds_bucket")
        total = diff("cbserver_reactor_stall_seconds_count")
        worst = "-"
        below = 0.0
        for bound, count in buckets:
            if count >= total:
                worst = f"<= {1000 * bound:g} ms" if bound != float("inf") else "> 2.5 s"
                break
            below = count
        over = total - next((c for b, c in buckets if b == STALL_LIMIT), below)
        sample = Sample(t=t - self.t0, rss=rss_mb(self.server.proc.pid),
                        gen2=int(diff("cbserver_gc_pause_seconds_count", gen2)),
                        gen2_seconds=diff("cbserver_gc_pause_seconds_sum", gen2),
                        gen2_max=now.get(("cbserver_gc_pause_max_seconds", gen2), 0.0),
                        stalls_over=int(over), stall_bucket=worst,
                        stall_max=now.get(("cbserver_reactor_stall_max_seconds", ""), 0.0),
                        cpu=(cpu - cpu_prev) / max(1e-9, t - t_prev),
                        machine=(busy - busy_prev) / max(1e-9, t - t_prev) / (os.cpu_count() or 1),
                        pg_cpu=(pg - pg_prev) / max(1e-9, t - t_prev), vacuumed=vacuumed,
                        checkpoints=done)
        self.samples.append(sample)
        return sample

    def run(self) -> None:
        """Sample until stopped; one line per sample."""
        while not self.stopping.wait(self.interval):
            try:
                s = self.take()
            except Exception as e:  # noqa: BLE001 - a failed sample is reported, the run goes on
                print(f"sample failed: {type(e).__name__}: {e}", flush=True)
                continue
            print(f"t={s.t:6.0f}s RSS {s.rss:7.1f} MB, server {100 * s.cpu:3.0f}% of its core, "
                  f"PostgreSQL {100 * s.pg_cpu:3.0f}%, machine {100 * s.machine:3.0f}% busy"
                  f"{', autovacuum ' + ' '.join(s.vacuumed) if s.vacuumed else ''}"
                  f"{', checkpoint' if s.checkpoints else ''}, "
                  f"gen-2 collections {s.gen2} ({1000 * s.gen2_seconds:.0f} ms), worst stall "
                  f"{s.stall_bucket}, stalls > {1000 * STALL_LIMIT:g} ms: {s.stalls_over}",
                  flush=True)


def send(server: CbServer, rate: float, seconds: float, minutes: list[Minute]) -> list[tuple[str, int]]:
    """POST at ``rate``/s for ``seconds``; the accepted (callback id, minute) pairs."""
    accepted: list[tuple[str, int]] = []
    lock = threading.Lock()
    local = threading.local()
    clients: list[KeepAlive] = []

    def post(i: int, minute: int) -> None:
        """Callback ``i`` on this thread's keep-alive connection."""
        if getattr(local, "client", None) is None:
            local.client = KeepAlive(server.connection)
            with lock:
                clients.append(local.client)
        t = time.monotonic()
        try:
            status, answer = local.client.request(lambda conn: server.request(
                "POST", "/api/v1/callbacks", server.body(i), conn))
        except (OSError, http.client.HTTPException) as e:
            with lock:
                minutes[minute].fail(f"http:{type(e).__name__}")
            return
        with lock:
            minutes[minute].latencies.append(time.monotonic() - t)
            if status == 202 and "id" in answer:
                accepted.append((answer["id"], minute))
            else:
                minutes[minute].fail(f"http_{status}:{answer.get('error', {}).get('code', '?')}")

    n = int(rate * seconds)
    pool = ThreadPoolExecutor(max_workers=min(512, max(16, int(rate * 2))))
    t0 = time.monotonic() + 0.2
    try:
        for i in range(n):
            when = t0 + i / rate
            delay = when - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            minute = int((when - t0) // 60)
            minutes[minute].sent += 1
            pool.submit(post, i, minute)
        pool.shutdown(wait=True)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    print(f"client: {sum(c.reconnects for c in clients)} connections not reused after idling "
          f"near the server's Keep-Alive timeout, {sum(c.retries for c in clients)} POSTs sent "
          "again after a reused connection closed before any answer byte", flush=True)
    return accepted


def check(server: CbServer, accepted: list[tuple[str, int]], minutes: list[Minute],
          drain: float) -> None:
    """Wait for the accepted callbacks to end; count each one not ended by a hang-up with 2 xDRs."""
    import psycopg2

    ids = [cb for cb, _ in accepted]
    deadline = time.monotonic() + drain
    while True:
        with psycopg2.connect(server.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT s.id, s.status, s.state->'cause'->>'code', "
                        "(SELECT count(*) FROM xdrs x WHERE x.session_id = s.id) "
                        "FROM callback_sessions s WHERE s.id = ANY(%s)", (ids,))
            rows = {r[0]: r[1:] for r in cur.fetchall()}
        conn.close()
        done = sum(1 for status, _, legs in rows.values() if status in ("ended", "refused") and legs >= 2)
        if done == len(ids) or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    for cb, minute in accepted:
        status, cause, legs = rows.get(cb, ("missing", None, 0))
        if status == "ended" and cause in EXPECTED_CAUSES and legs == 2:
            continue
        minutes[minute].fail(f"{status}:{cause}:xdrs={legs}")


def verdict(samples: list[Sample], minutes: list[Minute], settle: float) -> list[str]:
    """The targets, each with its figure and PASS/FAIL."""
    lines = []
    after = [s for s in samples if s.t >= settle * 60]
    if after:
        lo, hi = min(s.rss for s in after), max(s.rss for s in after)
        growth = (hi - lo) / lo if lo else 0.0
        lines.append(f"RSS after minute {settle:g}: {lo:.0f}-{hi:.0f} MB ({100 * growth:.1f} % spread, "
                     f"target <= {100 * RSS_TOLERANCE:g} %): {'PASS' if growth <= RSS_TOLERANCE else 'FAIL'}")
    stall = max((s.stall_max for s in samples), default=0.0)
    over = sum(s.stalls_over for s in samples)
    gen2 = max((s.gen2_max for s in samples), default=0.0)
    lines.append(f"worst reactor stall {1000 * stall:.0f} ms ({over} ticks late by more than "
                 f"{1000 * STALL_LIMIT:g} ms; longest gen-2 collection {1000 * gen2:.0f} ms), target "
                 f"<= {1000 * STALL_LIMIT:g} ms: {'PASS' if stall <= STALL_LIMIT else 'FAIL'}")
    span = min(10, max(1, len(minutes) // 3))
    first = [x for m in minutes[:span] for x in m.latencies]
    last = [x for m in minutes[-span:] for x in m.latencies]
    p_first, p_last = quantile(first, 0.99), quantile(last, 0.99)
    ok = p_last <= max(1.2 * p_first, p_first + 0.02)
    lines.append(f"POST p99 first {span} min {1000 * p_first:.0f} ms, last {span} min "
                 f"{1000 * p_last:.0f} ms (target: the same, within 20 % or 20 ms): "
                 f"{'PASS' if ok else 'FAIL'}")
    failed = sum(sum(m.failures.values()) for m in minutes)
    sent = sum(m.sent for m in minutes)
    lines.append(f"failures {failed} of {sent} (target 0): {'PASS' if not failed else 'FAIL'}")
    return lines


def collections_line(metrics: dict[tuple[str, str], float]) -> str:
    """Every generation's collections over the run: how many, total and longest pause."""
    parts = []
    for gen in range(3):
        label = f'generation="{gen}"'
        count = metrics.get(("cbserver_gc_pause_seconds_count", label), 0.0)
        total = metrics.get(("cbserver_gc_pause_seconds_sum", label), 0.0)
        longest = metrics.get(("cbserver_gc_pause_max_seconds", label), 0.0)
        cpu = metrics.get(("cbserver_gc_cpu_seconds_total", label), 0.0)
        cpu_longest = metrics.get(("cbserver_gc_cpu_max_seconds", label), 0.0)
        parts.append(f"gen {gen}: {count:.0f} collections, {1000 * total:.0f} ms in all "
                     f"({1000 * cpu:.0f} ms CPU), longest {1000 * longest:.1f} ms "
                     f"({1000 * cpu_longest:.1f} ms CPU)")
    return "garbage collections over the run: " + "; ".join(parts)


def report(samples: list[Sample], minutes: list[Minute]) -> str:
    """A markdown table, one row per minute."""
    rows = ["| minute | sent | POST p50 ms | POST p99 ms | failures | RSS MB (end) | server CPU "
            "| PostgreSQL CPU | machine busy | checkpoints | autovacuum | gen-2 collections (ms) "
            "| worst stall |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, m in enumerate(minutes):
        inside = [s for s in samples if i * 60 < s.t <= (i + 1) * 60 + 1]
        rss = f"{inside[-1].rss:.0f}" if inside else "-"
        cpu = f"{100 * sum(s.cpu for s in inside) / len(inside):.0f} %" if inside else "-"
        pg = f"{100 * sum(s.pg_cpu for s in inside) / len(inside):.0f} %" if inside else "-"
        busy = f"{100 * sum(s.machine for s in inside) / len(inside):.0f} %" if inside else "-"
        vac = " ".join(sorted({t for s in inside for t in s.vacuumed})) or "-"
        ckpt = sum(s.checkpoints for s in inside)
        g2 = f"{sum(s.gen2 for s in inside)} ({1000 * sum(s.gen2_seconds for s in inside):.0f})"
        order = (["-"] + [f"<= {b:g} ms" for b in (1, 2.5, 5, 10, 20, 50, 100, 250, 500, 1000, 2500)]
                 + ["> 2.5 s"])
        worst = max((s.stall_bucket for s in inside), key=order.index, default="-")
        fails = sum(m.failures.values())
        rows.append(f"| {i + 1} | {m.sent} | {1000 * quantile(m.latencies, 0.5):.0f} "
                    f"| {1000 * quantile(m.latencies, 0.99):.0f} | {fails or 0}"
                    f"{' ' + str(m.failures) if fails else ''} | {rss} | {cpu} | {pg} | {busy} "
                    f"| {ckpt} | {vac} | {g2} | {worst} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    """Start everything, run the load with sampling, print the tables and the verdict."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, required=True, help="callbacks per second (constant)")
    p.add_argument("--minutes", type=float, default=60.0, help="how long the load lasts")
    p.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--settle", type=float, default=2.0,
                   help="minutes of warm-up before RSS must stay flat")
    p.add_argument("--hold-ms", type=int, default=2000, help="how long answered calls last")
    p.add_argument("--drain", type=float, default=60.0, help="seconds allowed for the last to end")
    p.add_argument("--accounts", type=int, default=50, help="bench accounts (round-robin)")
    p.add_argument("--rtp-ports", default="12000-19999", help="cbserver's RTP port range")
    p.add_argument("--quiet-carrier", action="store_true", help="the carrier streams no audio")
    p.add_argument("--pool-size", type=int, default=4, help="[database] pool_size")
    p.add_argument("--mode", choices=("simple", "extended"), default="simple")
    p.add_argument("--server", choices=("auto", "twistd", "wired"), default="auto")
    p.add_argument("--keep-db", action="store_true", help="keep the scratch database")
    args = p.parse_args(argv)
    args.ssl = False
    args.profile = False
    # bench_callbacks.Server reads these: the ramp's configuration (node caps raised, the
    # start-delay gate off), so the steady rate is comparable with the ramp's sustained rate.
    args.overload = None
    args.start_delay_target = None
    pin(os.getpid(), CLIENT_CORE)

    def interrupted(signum, _frame):
        """Turn SIGINT/SIGTERM into KeyboardInterrupt so that clean-up runs."""
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    work = Path(tempfile.mkdtemp(prefix="bench-steady-"))
    rev = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    print(f"cbserver {rev}; work folder {work}; {args.rate:g} callbacks/s for {args.minutes:g} min, "
          f"hold {args.hold_ms} ms, carrier {'quiet' if args.quiet_carrier else 'streaming audio'}; "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    server = CbServer(args, work)
    minutes = [Minute() for _ in range(int(args.minutes) + 2)]
    try:
        server.start()
        sampler = Sampler(server, args.sample)
        thread = threading.Thread(target=sampler.run, daemon=True)
        thread.start()
        accepted = send(server, args.rate, args.minutes * 60, minutes)
        check(server, accepted, minutes, args.drain)
        sampler.stopping.set()
        thread.join()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        server.stop()
        stop_all()
    minutes = [m for m in minutes if m.sent]
    print("\n" + report(sampler.samples, minutes) + "\n", flush=True)
    print("\n".join(verdict(sampler.samples, minutes, args.settle)), flush=True)
    print(collections_line(sampler.last), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
