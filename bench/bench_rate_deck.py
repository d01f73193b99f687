"""Benchmark: a carrier's rate deck of 100,000 prefixes, from CSV to authorization.

Run from the repository root (the local cluster is started if needed)::

    .venv/bin/python bench/bench_rate_deck.py [--prefixes 100000] [--streams 200]

On a scratch database (``billing_db.scratch_billing_db``), with a generated deck (synthetic
prefixes, deterministic; no real carrier's data):

1. imports: destinations and rates from CSV through ``Catalog.import_*_csv`` (the CLI's and
   the admin API's path), in rows/s; beside them the old row-by-row path (``create_destination``
   per row, ``upsert_rate`` per row) on a sample of ``--old-sample`` rows;
2. authorization and ``quote`` latency, p50/p99, for a 100-rate and the 100,000-rate tariff
   (``Authorizer.authorize`` with a warm ``TariffCache``; ``cbserver quote``'s own path:
   ``load_tariff_sync(number=...)`` then ``quote``), calls alternating between the two;
3. in a second process with ``--streams`` prompt streams running on the media clock (the
   streams of ``bench_media_streams.py``): the media clock's worst lateness while idle, while
   the old loader builds the big tariff in one go, during the new cooperative (re)loads, after
   a one-rate change (and which tariffs reloaded), and while a whole deck is re-imported
   in-process (a catalog change applied by the admin API's code).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from billing_db import scratch_billing_db
from twisted.internet import defer, task

from cbserver.billing.catalog import Catalog, lookup, upsert_rate
from cbserver.billing.provision import provision_file_sync
from cbserver.db.pool import Database
from cbserver.db.stores import PostgresCatalogStore

HERE = Path(__file__).resolve().parent
PY = sys.executable
WHEN = "2026-01-01T00:00:00Z"

ACCOUNTS = """
[[customer]]
name = "Deck"
balance_control = "prepaid"
currency = "USD"
{products}
"""
PRODUCT = """
[[product]]
name = "{name}"
currency = "USD"
services = ["voice"]
  [[product.rating_list]]
  service = "voice"
  node = "node1"
  access_code = "WEBCALLBACK"
  tariff = "{tariff}"
[[account]]
id = "{account}"
customer = "Deck"
product = "{name}"
account_type = "debit"
opening_balance = "1000000"
status = "active"
"""


def deck(n: int, seed: int = 17) -> list[str]:
    """``n`` distinct synthetic prefixes: a 1-3 digit "country" then 2-7 more digits."""
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        cc = str(rng.randrange(1, 999))
        out.add(cc + str(rng.randrange(10, 10 ** rng.randrange(3, 8))))
    return sorted(out)


def rates_csv(prefixes: list[str], price: str = "0.0{i}") -> bytes:
    """A rates CSV for ``prefixes`` (prices vary by row)."""
    rows = [f"{p},60,6,{price.format(i=i % 97 + 1)},0.05,{WHEN}" for i, p in enumerate(prefixes)]
    return ("prefix,first_interval,next_interval,first_price,next_price,effective_from\n"
            + "\n".join(rows) + "\n").encode()


def pct(values: list[float], p: float) -> float:
    """The ``p`` quantile of ``values`` in milliseconds."""
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))] * 1000 if s else float("nan")


async def old_rates(catalog: Catalog, tariff: str, rows) -> None:
    """The import as it was before COPY: each row checked, then looked up and written alone."""
    cleaned = [catalog._rate_row(d) for _, d in rows]

    async def run(tx):
        t = await lookup(tx, "tariffs", tariff, kind="tariff", lock=True)
        await tx.missing_prefixes([r["prefix"] for r in cleaned])
        for row in cleaned:
            await upsert_rate(tx, t["id"], row)

    await catalog.store.transaction(run)


async def imports(reactor, dsn: str, prefixes: list[str], sample: int) -> dict:
    """Phase 1: the imports, old and new."""
    db = Database(dsn, reactor, size=3)
    db.startService()
    await db.when_ready()
    catalog = Catalog(PostgresCatalogStore(db), reactor)
    out: dict = {"prefixes": len(prefixes)}
    old = [f"7{i:08d}" for i in range(sample)]  # a range of its own, not in the deck
    began = time.perf_counter()
    for p in old:
        await catalog.create_destination({"prefix": p})
    out["old_destinations_rows_s"] = sample / (time.perf_counter() - began)
    await catalog.create_tariff({"name": "Old", "currency": "USD"})
    began = time.perf_counter()
    await old_rates(catalog, "Old", list(enumerate([
        {"prefix": p, "first_interval": 60, "next_interval": 6, "first_price": "0.01",
         "next_price": "0.01", "effective_from": WHEN} for p in old], start=2)))
    out["old_rates_rows_s"] = sample / (time.perf_counter() - began)

    data = b"prefix,country,description\n" + "".join(
        f"{p},C{p[:2]},synthetic {i}\n" for i, p in enumerate(prefixes)).encode()
    began = time.perf_counter()
    counts = await catalog.import_destinations_csv(data)
    took = time.perf_counter() - began
    assert counts["created"] == len(prefixes), counts
    out["destinations_s"], out["destinations_rows_s"] = took, len(prefixes) / took
    for name in ("Deck100k", "Deck100", "Other"):
        await catalog.create_tariff({"name": name, "currency": "USD"})
    data = rates_csv(prefixes)
    began = time.perf_counter()
    counts = await catalog.import_rates_csv("Deck100k", data)
    took = time.perf_counter() - began
    assert counts["created"] == len(prefixes), counts
    out["rates_s"], out["rates_rows_s"] = took, len(prefixes) / took
    began = time.perf_counter()
    counts = await catalog.import_rates_csv("Deck100k", data)
    took = time.perf_counter() - began
    out["rates_again_s"], out["rates_again_rows_s"] = took, len(prefixes) / took
    step = max(1, len(prefixes) // 100)
    await catalog.import_rates_csv("Deck100", rates_csv(prefixes[::step][:100]))
    await catalog.import_rates_csv("Other", rates_csv(prefixes[::step][:100]))
    await db.stopService()
    return out


async def latency(reactor, dsn: str, prefixes: list[str], calls: int) -> dict:
    """Phase 2: authorization and quote latency, 100 vs 100,000 rates, alternating."""
    import psycopg2  # noqa: PLC0415 - the bench talks to its scratch database directly

    from cbserver.billing.authorize import Authorizer, AuthRequest  # noqa: PLC0415
    from cbserver.billing.rating import quote  # noqa: PLC0415
    from cbserver.db.stores import PostgresAuthorizationStore  # noqa: PLC0415
    from cbserver.db.tariff_loader import TariffCache, load_tariff_sync  # noqa: PLC0415

    db = Database(dsn, reactor, size=3)
    db.startService()
    await db.when_ready()
    authorizer = Authorizer(PostgresAuthorizationStore(db), TariffCache(db, reactor), reactor,
                            node="node1")
    step = max(1, len(prefixes) // 100)
    def number(p: str) -> str:  # a 13-digit (at least one more digit) number under prefix p
        return p + "5" * max(1, 13 - len(p))

    small_numbers = [number(p) for p in prefixes[::step][:100]]
    rng = random.Random(3)
    big_numbers = [number(p) for p in rng.sample(prefixes, 100)]
    auth = {"small": [], "large": []}
    for who in ("small", "large"):  # warm both tariffs into the cache
        numbers = small_numbers if who == "small" else big_numbers
        await authorizer.authorize(AuthRequest(f"warm-{who}", f"deck-{who}", numbers[1], numbers[0]))
    for n in range(calls):
        for who, numbers in (("small", small_numbers), ("large", big_numbers)):
            began = time.perf_counter()
            await authorizer.authorize(AuthRequest(f"{who}-{n}", f"deck-{who}",
                                                   numbers[(n + 1) % len(numbers)],
                                                   numbers[n % len(numbers)]))
            auth[who].append(time.perf_counter() - began)
    await db.stopService()
    quotes = {"small": [], "large": []}
    at = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        for n in range(calls):
            for who, name, numbers in (("small", "Deck100", small_numbers),
                                       ("large", "Deck100k", big_numbers)):
                number = numbers[n % len(numbers)]
                began = time.perf_counter()
                quote(load_tariff_sync(cur, name=name, number=number).rates, number, 95, at)
                quotes[who].append(time.perf_counter() - began)
        began = time.perf_counter()
        load_tariff_sync(cur, name="Deck100k")
        whole_load = time.perf_counter() - began
    conn.close()
    return {f"{kind}_{who}_{q}": round(pct(values[who], p), 3)
            for kind, values in (("auth", auth), ("quote", quotes)) for who in ("small", "large")
            for q, p in (("p50_ms", 0.5), ("p99_ms", 0.99))} | {"quote_whole_load_ms":
                                                                   round(whole_load * 1000, 1)}


def worker(dsn: str, streams: int, sink_port: int) -> None:
    """Phase 3 (its own process): reloads and a re-import while prompt streams run."""
    from twisted.internet import epollreactor  # noqa: PLC0415

    epollreactor.install()
    from twisted.internet import reactor  # noqa: PLC0415

    sys.path.insert(0, str(HERE))
    from bench_media_streams import open_streams  # noqa: PLC0415

    from cbserver.db.tariff_loader import TariffCache, load_tariff  # noqa: PLC0415
    from cbserver.media.clock import MediaClock  # noqa: PLC0415

    if not os.environ.get("BENCH_DEFAULT_GC"):
        from cbserver.tap import GC_THRESHOLDS  # noqa: PLC0415

        gc.freeze()  # the server's collector settings once it is ready (tap.py)
        gc.set_threshold(*GC_THRESHOLDS)
    freeze = not os.environ.get("BENCH_NO_FREEZE")
    out_gc = {"gc_server_settings": not os.environ.get("BENCH_DEFAULT_GC"), "freeze_tariffs": freeze}
    media = MediaClock(reactor)
    lateness: list[float] = []
    gc_pauses: list[float] = []
    gc_began: list[float] = []

    def gc_timer(phase, info):
        if phase == "start":
            gc_began.append(time.perf_counter())
        elif gc_began:
            gc_pauses.append(time.perf_counter() - gc_began.pop())

    gc.callbacks.append(gc_timer)

    # The longest stretch of CPU the reactor thread spent in one step (timers, or the I/O
    # callbacks of one poll), in thread CPU time: what the code holds the reactor for, apart
    # from the time the process waits for a core on a shared machine (runq_wait below).
    steps: list[float] = [0.0]

    def timed(method):
        def run(*args):
            began = time.thread_time()
            try:
                return method(*args)
            finally:
                steps[0] = max(steps[0], time.thread_time() - began)

        return run

    reactor.runUntilCurrent = timed(reactor.runUntilCurrent)
    reactor.doIteration = timed(reactor.doIteration)

    def runq() -> float:  # seconds this process's threads waited for a CPU
        return sum(int((t / "schedstat").read_text().split()[1]) / 1e9
                   for t in Path("/proc/self/task").iterdir())
    sessions, play = open_streams(reactor, media, streams, sink_port, lateness.append)
    out: dict = {"streams": streams, **out_gc}

    async def window(name: str, work) -> None:
        await task.deferLater(reactor, 0.5, lambda: None)  # settle after the previous step
        lateness.clear()
        gc_pauses.clear()
        steps[0] = 0.0
        skipped = media.ticks_skipped
        waited = runq()
        began = time.perf_counter()
        result = await work()
        out[f"{name}_s"] = round(time.perf_counter() - began, 3)
        await task.deferLater(reactor, 0.1, lambda: None)  # the ticks right after it count too
        out[f"{name}_step_cpu_ms"] = round(steps[0] * 1000, 2)
        out[f"{name}_skipped"] = media.ticks_skipped - skipped
        out[f"{name}_runq_pct"] = round(100 * (runq() - waited) / (time.perf_counter() - began), 1)
        out[f"{name}_max_late_ms"] = round(max(lateness) * 1000, 2) if lateness else None
        out[f"{name}_p99_late_ms"] = round(pct(lateness, 0.99), 2)
        out[f"{name}_gc_max_ms"] = round(max(gc_pauses, default=0) * 1000, 2)
        return result

    async def main():
        db = Database(dsn, reactor, size=3)
        db.startService()
        await db.when_ready()
        catalog = Catalog(PostgresCatalogStore(db), reactor)
        ids = {}
        for name in ("Deck100k", "Deck100", "Other"):
            ids[name] = (await catalog.get_tariff(name))["id"]
        play()
        await task.deferLater(reactor, 1.0, lambda: None)
        await window("idle", lambda: task.deferLater(reactor, 3.0, lambda: None))
        await window("old_load", lambda: load_tariff(db, ids["Deck100k"]))
        cache = TariffCache(db, reactor, ttl=0.5, freeze=freeze)
        await window("new_load", lambda: cache.get(ids["Deck100k"]))
        for name in ("Deck100", "Other"):
            await cache.get(ids[name])
        before = len(cache.loaded)
        rate = (await catalog.list_rates({"tariff": "Deck100k"}, limit=1))["items"][0]
        await window("one_rate_change", lambda: catalog.update_rate(rate["id"], {"next_price": "0.06"}))

        async def after_change():
            await task.deferLater(reactor, 0.6, lambda: None)  # past the ttl
            for tariff_id in ids.values():
                await cache.get(tariff_id)

        await window("reload_after_change", after_change)
        names = {v: k for k, v in ids.items()}
        out["reloaded_after_one_rate_change"] = [names[i] for i in list(cache.loaded)[before:]]
        data = rates_csv(_prefixes(dsn), price="0.1{i}")
        await window("reimport_100k", lambda: catalog.import_rates_csv("Deck100k", data))
        before = len(cache.loaded)

        async def after_import():
            await task.deferLater(reactor, 0.6, lambda: None)
            for tariff_id in ids.values():
                await cache.get(tariff_id)

        await window("reload_after_import", after_import)
        out["reloaded_after_import"] = [names[i] for i in list(cache.loaded)[before:]]
        out["ticks_skipped"] = media.ticks_skipped
        media.stop()
        for s in sessions:
            s.close()
        await db.stopService()

    def done(result):
        print(json.dumps(out), flush=True)
        reactor.stop()
        return result

    reactor.callWhenRunning(lambda: defer.ensureDeferred(main()).addBoth(done))
    reactor.run()


def _prefixes(dsn: str) -> list[str]:
    import psycopg2  # noqa: PLC0415

    conn = psycopg2.connect(dsn)
    with conn.cursor() as cur:
        cur.execute("SELECT r.prefix FROM rates r JOIN tariffs t ON t.id = r.tariff_id "
                    "WHERE t.name = 'Deck100k' ORDER BY r.prefix")
        rows = [r[0] for r in cur.fetchall()]
    conn.close()
    return rows


def run_worker(dsn: str, streams: int) -> dict:
    """Phase 3 in a subprocess, with the media bench's sink process receiving the streams."""
    sys.path.insert(0, str(HERE))
    from bench_media_streams import start_sink  # noqa: PLC0415

    sk, port, port_file = start_sink()
    try:
        proc = subprocess.run([PY, __file__, "--worker", dsn, "--streams", str(streams),
                               "--sink-port", str(port)], capture_output=True, text=True,
                              timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"worker failed:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        sk.kill()
        sk.wait()
        port_file.unlink(missing_ok=True)


def main() -> None:
    """Set up, measure, print, drop the database."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prefixes", type=int, default=100_000)
    ap.add_argument("--streams", type=int, default=200)
    ap.add_argument("--old-sample", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--worker")
    ap.add_argument("--sink-port", type=int)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.streams, args.sink_port)
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip()
    print(f"commit {commit}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; "
          f"{args.prefixes:,} prefixes, {args.streams} streams")
    prefixes = deck(args.prefixes)
    with scratch_billing_db("deck", 0) as (dsn, _tmp):
        figures: dict = {}

        async def phase1(reactor):
            figures.update(await imports(reactor, dsn, prefixes, args.old_sample))
            with tempfile.TemporaryDirectory() as tmp:
                doc = Path(tmp) / "deck.toml"
                doc.write_text(ACCOUNTS.format(products="".join(
                    PRODUCT.format(name=f"Deck {who}", tariff=tariff, account=f"deck-{who}")
                    for who, tariff in (("small", "Deck100"), ("large", "Deck100k")))))
                provision_file_sync(dsn, doc, csv_dir=tmp)
            figures.update(await latency(reactor, dsn, prefixes, args.calls))

        try:
            task.react(lambda reactor: defer.ensureDeferred(phase1(reactor)))
        except SystemExit as e:
            if e.code not in (0, None):
                raise
        figures.update(run_worker(dsn, args.streams))
    report(figures)


def report(f: dict) -> None:
    """Print the figures."""
    print("\nimports (rows/s)                    old path (sample)   new (COPY)")
    print(f"  destinations                      {f['old_destinations_rows_s']:>12,.0f}   "
          f"{f['destinations_rows_s']:>10,.0f}  ({f['destinations_s']:.2f} s)")
    print(f"  rates                             {f['old_rates_rows_s']:>12,.0f}   "
          f"{f['rates_rows_s']:>10,.0f}  ({f['rates_s']:.2f} s; again, all unchanged: "
          f"{f['rates_again_rows_s']:,.0f}/s)")
    print(f"\ncollector: server settings {f['gc_server_settings']}, loaded tariffs frozen "
          f"{f['freeze_tariffs']}")
    print(f"media clock lateness with {f['streams']} prompt streams: max / p99 ms; duration s; "
          "longest GC pause ms;\n  longest reactor step in CPU ms; % of the time waiting for a core; "
          "media clock ticks skipped")
    for name, what in (("idle", "idle (no reload)"), ("old_load", "old loader, 100k tariff"),
                       ("new_load", "new cooperative load, 100k"),
                       ("one_rate_change", "one-rate change applied"),
                       ("reload_after_change", "reloads after the change"),
                       ("reimport_100k", "100k re-import, in-process"),
                       ("reload_after_import", "reloads after the re-import")):
        print(f"  {what:<32} {f[name + '_max_late_ms']:>8} / {f[name + '_p99_late_ms']:<8} "
              f"{f[name + '_s']:>7} {f[name + '_gc_max_ms']:>7} {f[name + '_step_cpu_ms']:>7} "
              f"{f[name + '_runq_pct']:>6} {f[name + '_skipped']:>5}")
    print(f"  tariffs reloaded after a one-rate change: {f['reloaded_after_one_rate_change']}")
    print(f"  tariffs reloaded after the re-import:     {f['reloaded_after_import']}")
    print(f"  media clock ticks skipped: {f['ticks_skipped']}")
    print("\nlatency (ms)                 100 rates p50/p99     100,000 rates p50/p99   ratio p50")
    for kind, what in (("auth", "authorization"), ("quote", "quote (CLI path)")):
        s50, s99 = f[f"{kind}_small_p50_ms"], f[f"{kind}_small_p99_ms"]
        l50, l99 = f[f"{kind}_large_p50_ms"], f[f"{kind}_large_p99_ms"]
        print(f"  {what:<26} {s50:>8} / {s99:<8}     {l50:>8} / {l99:<8}   {l50 / s50:.3f}")
    print(f"  (loading the whole 100k tariff, as quote did before: {f['quote_whole_load_ms']} ms)")


if __name__ == "__main__":
    main()
