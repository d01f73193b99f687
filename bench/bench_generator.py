"""Benchmark: generate 100,000 accounts, and the web endpoint's latency while it runs.

Run from the repository root:  .venv/bin/python bench/bench_generator.py [--quantity N]

It starts the checkout's local PostgreSQL, creates a scratch database with the schema, a
tariff, a product and a customer, and serves a trivial Klein route on 127.0.0.1 from the same
reactor the generator runs on. A client in its own process (plain http.client with keep-alive,
so it never competes with the server for the GIL) requests that route every 5 ms:

1. for ``--baseline`` seconds with nothing else running (the baseline), then
2. for as long as the generator takes to make ``--quantity`` accounts (auto-generated service
   and web passwords, so two scrypt hashes per account).

It prints the generation time and the p50 / p99 / max latency of both phases. The scratch
database is dropped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg2  # noqa: E402
from klein import Klein  # noqa: E402
from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.internet import threads as _threads  # noqa: E402
from twisted.web.server import Site  # noqa: E402

from cbserver.billing.accounts import Accounts  # noqa: E402
from cbserver.billing.catalog import Catalog  # noqa: E402
from cbserver.billing.generator import Generator  # noqa: E402
from cbserver.db.migrations import upgrade  # noqa: E402
from cbserver.db.pool import Database  # noqa: E402
from cbserver.db.stores import PostgresCatalogStore  # noqa: E402
from cbserver.devtools.pgcluster import default_cluster  # noqa: E402


def _poll(port: int, interval: float, recording, stop, results) -> None:
    """Client process: GET /ping every ``interval`` s; send each recorded series to ``results``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    series: list[float] = []
    was_recording = False
    while not stop.is_set():
        start = time.perf_counter()
        conn.request("GET", "/ping")
        conn.getresponse().read()
        took = (time.perf_counter() - start) * 1000
        now_recording = recording.is_set()
        if was_recording and not now_recording:
            results.put(series)
            series = []
        if now_recording:
            series.append(took)
        was_recording = now_recording
        time.sleep(interval)
    conn.close()


class Poller:
    """A client in its own process (so it never competes with the server for the GIL)."""

    def __init__(self, port: int, interval: float = 0.005):
        ctx = multiprocessing.get_context("spawn")
        self.recording, self.stop, self.results = ctx.Event(), ctx.Event(), ctx.Queue()
        self.process = ctx.Process(target=_poll, daemon=True,
                                   args=(port, interval, self.recording, self.stop, self.results))

    def start(self) -> None:
        """Start the client process."""
        self.process.start()

    def measure(self) -> None:
        """Start recording a series."""
        self.recording.set()

    def pause(self) -> list[float]:
        """Stop recording; the series arrives from the client at its next request."""
        self.recording.clear()
        return self.results.get(timeout=60)

    def close(self) -> None:
        """Stop the client process."""
        self.stop.set()
        self.process.join(timeout=10)


def summary(samples: list[float]) -> str:
    """p50, p99 and max of a series in ms."""
    if not samples:
        return "no samples"
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (f"n={len(samples):6d}  p50={statistics.median(ordered):7.2f} ms  p99={p99:7.2f} ms  "
            f"max={ordered[-1]:7.2f} ms")


class Ping:
    """The trivial web route measured."""

    app = Klein()

    @app.route("/ping")
    def ping(self, request):
        """Answer at once."""
        return b"pong"


async def main(args, dsn: str) -> None:
    """Set up, measure the baseline, generate while measuring, print."""
    db = Database(dsn, reactor, size=4)
    db.startService()
    await db.when_ready()
    catalog, accounts = Catalog(PostgresCatalogStore(db),
                                reactor), Accounts(PostgresCatalogStore(db), reactor)
    await catalog.create_tariff({"name": "Callback", "currency": "USD"})
    await catalog.create_product({"name": "Callback Services", "currency": "USD",
                                  "rating_list": [{"node": "node1", "tariff": "Callback"}]})
    await accounts.create_customer({"name": "Retail", "currency": "USD"})
    port = reactor.listenTCP(0, Site(Ping().app.resource()), interface="127.0.0.1")
    poller = Poller(port.getHost().port)
    poller.start()
    await task.deferLater(reactor, 0.5, lambda: None)  # warm up

    poller.measure()
    await task.deferLater(reactor, args.baseline, lambda: None)
    idle = await _threads.deferToThread(poller.pause)

    csv_dir = Path(tempfile.mkdtemp(prefix="cbs-bench-cards-"))
    generator = Generator(PostgresCatalogStore(db), reactor, csv_dir)
    poller.measure()
    start = time.perf_counter()
    result = await generator.generate({
        "customer": "Retail", "product": "Callback Services", "quantity": args.quantity,
        "batch": "bench", "prefix": "cb", "length": 10, "opening_balance": "10",
        "service_password": "auto", "web_credentials": "auto"})
    elapsed = time.perf_counter() - start
    busy = await _threads.deferToThread(poller.pause)
    await _threads.deferToThread(poller.close)

    print(f"generated {result['quantity']} accounts in {elapsed:.2f} s "
          f"({result['quantity'] / elapsed:,.0f} accounts/s), CSV {result['csv_path']}")
    print(f"web latency, idle baseline ({args.baseline:.0f} s): {summary(idle)}")
    print(f"web latency, during generation:   {summary(busy)}")
    Path(result["csv_path"]).unlink()
    csv_dir.rmdir()
    await port.stopListening()
    await db.stopService()


def run() -> None:
    """Parse arguments, make the scratch database, run under the reactor, drop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantity", type=int, default=100_000)
    parser.add_argument("--baseline", type=float, default=5.0, help="seconds of idle measurement")
    args = parser.parse_args()
    cluster = default_cluster()
    cluster.start()
    name = f"cbs_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(cluster.dsn("postgres"))
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        upgrade(cluster.dsn(name), report=lambda _line: None)
        task.react(lambda _r: defer.ensureDeferred(main(args, cluster.dsn(name))))
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    run()
