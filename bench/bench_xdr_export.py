"""Benchmark: the xDR list and its streamed CSV export through the admin API, beside psql \\copy.

Run from the repository root (the local cluster is started if needed)::

    .venv/bin/python bench/bench_xdr_export.py [--xdrs 1000000]

A scratch database is migrated and filled with ``--xdrs`` xDRs (and their callbacks) by
``generate_series`` inside PostgreSQL (``tests/support/xdrgen.py``). It prints: how long the
rows took to generate and migration 042's indexes to build on them; EXPLAIN ANALYZE of one
page per filter (which index each uses); then, against the admin app served by a process of
its own (``tests/support/admin_serve.py``), whose resident memory is sampled every 20 ms:

- the list's first page (``limit=50``): time to first byte and total (median of 5);
- every page in turn (``limit=1000``, keyset ``after``): total time;
- the whole CSV export (``?format=csv``): time to first byte, total, bytes, rows;
- and, in the same run, ``psql -c "\\copy (same query) to FILE csv header"``: total time.

For each the server's peak RSS over its baseline. Figures go to stdout as JSON too.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the tests' support modules are imported
    sys.path.insert(0, str(ROOT))

from billing_db import scratch_billing_db  # noqa: E402

from cbserver.callback.consolefilters import parse_xdr_filter  # noqa: E402
from cbserver.db.calls_store import xdr_query  # noqa: E402
from cbserver.devtools.pgcluster import find_pg_bin  # noqa: E402
from tests.support.admin_serve import rss_kib  # noqa: E402
from tests.support.xdrgen import generate  # noqa: E402

TOKEN = "bench-export-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
INDEXES_042 = [
    "CREATE INDEX xdrs_time_id ON xdrs (disconnect_time, id)",
    "CREATE INDEX xdrs_customer_time ON xdrs (customer_id, disconnect_time, id)",
    "CREATE INDEX xdrs_node_time ON xdrs (node, disconnect_time, id)",
    "CREATE INDEX xdrs_cld_pattern ON xdrs (cld text_pattern_ops)",
]
FILTERS = ["", "account=acc1", "customer=cust1", "prefix=5511", "cause=lega_busy", "node=node2",
           "from=2026-06-10&to=2026-06-11", "account=acc2&prefix=44&from=2026-06-20"]


class Sampler:
    """Samples a process's RSS every 20 ms in a thread; ``peak()`` since the last ``reset()``."""

    def __init__(self, pid: int):
        self.pid = pid
        self._peak = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop:
            self._peak = max(self._peak, rss_kib(self.pid))
            time.sleep(0.02)

    def reset(self) -> int:
        """Start a phase; returns the RSS now (KiB)."""
        now = rss_kib(self.pid)
        self._peak = now
        return now

    def peak(self) -> int:
        """Highest RSS (KiB) seen since ``reset``."""
        return max(self._peak, rss_kib(self.pid))

    def stop(self):
        """Stop sampling."""
        self._stop = True


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_get(port: int, path: str, sink=None) -> tuple[float, float, int, int]:
    """(time to first byte, total, body bytes, status) of one GET; the body to ``sink``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("GET", path, headers=HEADERS)
    resp = conn.getresponse()
    first = resp.read1(65536)
    ttfb = time.perf_counter() - t0
    size = len(first)
    if sink is not None:
        sink.write(first)
    while chunk := resp.read1(1 << 20):
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    total = time.perf_counter() - t0
    conn.close()
    return ttfb, total, size, resp.status


def explain(dsn: str) -> list[dict]:
    """EXPLAIN ANALYZE of one page (limit 50) per filter: plan's index names and time."""
    out = []
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        for q in FILTERS:
            args = dict(p.split("=", 1) for p in q.split("&") if p)
            sql, params = xdr_query(parse_xdr_filter(args))
            cur.execute("EXPLAIN (ANALYZE, COSTS OFF) " + sql, params)
            plan = [r[0] for r in cur.fetchall()]
            used = sorted({w.strip() for line in plan for w in line.split(" using ")[1:2]
                           for w in [w.split(" on ")[0]]})
            out.append({"filter": q or "(none)", "indexes": used,
                        "ms": float(plan[-1].split(":")[1].split()[0])})
    conn.close()
    return out


def main() -> None:
    """Run the benchmark once and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xdrs", type=int, default=1_000_000)
    args = ap.parse_args()
    figures: dict = {"xdrs": args.xdrs}
    with scratch_billing_db("export", 1) as (dsn, folder):
        folder = Path(folder)
        t = time.perf_counter()
        generate(dsn, args.xdrs)
        figures["generate_s"] = round(time.perf_counter() - t, 2)
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            for sql in INDEXES_042:
                cur.execute(f"DROP INDEX {sql.split()[2]}")
            t = time.perf_counter()
            for sql in INDEXES_042:
                cur.execute(sql)
            figures["indexes_042_build_s"] = round(time.perf_counter() - t, 2)
            cur.execute("ANALYZE xdrs")
        conn.close()
        figures["explain_page"] = explain(dsn)

        port_file = folder / "port"
        proc = subprocess.Popen([sys.executable, "-m", "tests.support.admin_serve", dsn, TOKEN,
                                 str(port_file)], cwd=ROOT, stdout=(folder / "server.log").open("w"),
                                stderr=subprocess.STDOUT)
        try:
            while not port_file.exists() or not port_file.read_text():
                assert proc.poll() is None, (folder / "server.log").read_text()
                time.sleep(0.1)
            port = int(port_file.read_text())
            timed_get(port, "/v1/xdrs?limit=5")  # warm up
            sampler = Sampler(proc.pid)
            figures["server_rss_start_mib"] = round(sampler.reset() / 1024, 1)

            runs = [timed_get(port, "/v1/xdrs?limit=50") for _ in range(5)]
            base = sampler.reset()
            figures["list_first_page"] = {
                "ttfb_ms": round(statistics.median(r[0] for r in runs) * 1000, 1),
                "total_ms": round(statistics.median(r[1] for r in runs) * 1000, 1)}

            base, cpu = sampler.reset(), cpu_s(proc.pid)
            t, pages, rows, after = time.perf_counter(), 0, 0, None
            while True:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                conn.request("GET", "/v1/xdrs?limit=1000" + (f"&after={after}" if after else ""),
                             headers=HEADERS)
                body = json.loads(conn.getresponse().read())
                conn.close()
                pages += 1
                rows += len(body["xdrs"])
                after = body["next"]
                if not after:
                    break
            figures["list_all_pages"] = {"pages": pages, "rows": rows,
                                         "total_s": round(time.perf_counter() - t, 2),
                                         "server_cpu_s": round(cpu_s(proc.pid) - cpu, 2),
                                         "server_peak_growth_mib": round((sampler.peak() - base) / 1024, 1)}

            base, cpu = sampler.reset(), cpu_s(proc.pid)
            out = folder / "api.csv"
            with out.open("wb") as sink:
                ttfb, total, size, status = timed_get(port, "/v1/xdrs?format=csv", sink)
            with out.open("rb") as f:
                lines = sum(1 for _ in f)
            figures["csv_export"] = {"status": status, "ttfb_ms": round(ttfb * 1000, 1),
                                     "total_s": round(total, 2), "bytes": size, "rows": lines - 1,
                                     "server_cpu_s": round(cpu_s(proc.pid) - cpu, 2),
                                     "server_peak_growth_mib": round((sampler.peak() - base) / 1024, 1)}
            figures["server_vmhwm_mib"] = round(rss_kib(proc.pid, "VmHWM") / 1024, 1)
            sampler.stop()
        finally:
            proc.terminate()
            proc.wait(20)

        sql, params = xdr_query(parse_xdr_filter({}), csv="columns", paged=False)
        conn = psycopg2.connect(dsn)
        with conn.cursor() as cur:
            text = cur.mogrify(sql, params).decode()
        conn.close()
        target = folder / "psql.csv"
        t = time.perf_counter()
        subprocess.run([str(find_pg_bin() / "psql"), dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                        f"\\copy ({text}) to '{target}' with (format csv, header)"], check=True)
        copy_s = time.perf_counter() - t
        with target.open("rb") as f:
            copy_rows = sum(1 for _ in f) - 1
        figures["psql_copy"] = {"total_s": round(copy_s, 2), "bytes": target.stat().st_size,
                                "rows": copy_rows}
        figures["csv_same_as_psql_rows"] = copy_rows == figures["csv_export"]["rows"]
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
