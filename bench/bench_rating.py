"""Benchmark: legs rated per second in-process, beside a bare ``Decimal`` loop baseline.

Run from the repository root::

    .venv/bin/python bench/bench_rating.py [--legs 200000] [--prefixes 5000] [--repeat 3]

The measured path is the whole of ``cbserver.billing.rating.rate_leg``: number
normalisation, longest-prefix selection with effective-from versions, peak or
off-peak, the interval rule and the single rounding. The baseline computes the
same charge formula inline over pre-selected rates (no selection, no checks).
Both run in this one process on one core; the best of ``--repeat`` runs counts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import time
from decimal import ROUND_HALF_UP, Decimal

from cbserver.billing.model import OffPeakPeriod, OffPeakWindow, Rate, TariffRates
from cbserver.billing.rating import rate_leg

UTC = dt.UTC


def build_tariff(
    rng: random.Random, prefixes: int, offpeak: bool, split: bool, formula: str | None = None
) -> TariffRates:
    """A tariff of ``prefixes`` random prefixes, a third with a second (later) version."""
    rates = []
    seen = set()
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    while len(seen) < prefixes:
        prefix = str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 6)))
        if prefix in seen:
            continue
        seen.add(prefix)
        f, n = rng.choice([(1, 1), (30, 6), (60, 60), (60, 6)])
        price = Decimal(rng.randint(1, 50000)).scaleb(-5)
        extra: dict[str, object] = {"formula": formula}
        if offpeak:
            extra |= {
                "mode": "peak_offpeak",
                "offpeak_first_interval": f,
                "offpeak_next_interval": n,
                "offpeak_first_price": price / 2,
                "offpeak_next_price": price / 2,
            }
        rates.append(Rate(prefix, f, n, price, price, start, version=1, **extra))
        if rng.random() < 0.33:
            later = start + dt.timedelta(days=rng.randint(1, 360))
            rates.append(Rate(prefix, f, n, price * 2, price * 2, later, version=2, **extra))
    period = None
    if offpeak:
        period = OffPeakPeriod(
            "Europe/Berlin",
            (OffPeakWindow.parse("mon-fri 00:00-07:59"), OffPeakWindow.parse("sat-sun 00:00-23:59")),
        )
    return TariffRates("EUR", tuple(rates), offpeak=period, split_at_boundary=split)


def build_calls(rng: random.Random, tariff: TariffRates, legs: int) -> list[tuple]:
    """Random calls to numbers that extend the tariff's prefixes to 11 digits."""
    prefixes = [r.prefix for r in tariff.rates]
    calls = []
    start = dt.datetime(2024, 1, 1, tzinfo=UTC)
    for _ in range(legs):
        prefix = rng.choice(prefixes)
        digits = prefix + "".join(rng.choice("0123456789") for _ in range(11 - len(prefix)))
        number = f"+{digits[:1]} {digits[1:4]}-{digits[4:]}"
        duration = rng.choice([0, rng.randint(1, 60), rng.randint(1, 3600)])
        connect = start + dt.timedelta(seconds=rng.randint(0, 365 * 86400))
        calls.append((number, duration, connect))
    return calls


def run_rating(tariff: TariffRates, calls: list[tuple]) -> float:
    """Seconds to rate every call through ``rate_leg``."""
    begin = time.perf_counter()
    for number, duration, connect in calls:
        rate_leg(tariff, number, duration, connect)
    return time.perf_counter() - begin


def run_baseline(rows: list[tuple]) -> float:
    """Seconds for the bare Decimal loop: the charge formula inline, rates pre-selected."""
    places, sixty, zero = Decimal("0.00001"), Decimal(60), Decimal(0)
    begin = time.perf_counter()
    for d, f, n, p1, p2 in rows:
        if d == 0:
            amount = zero
        else:
            c = f + -(-max(0, d - f) // n) * n
            amount = ((p1 * f + p2 * (c - f)) / sixty).quantize(places, rounding=ROUND_HALF_UP)
        del amount
    return time.perf_counter() - begin


def baseline_rows(tariff: TariffRates, calls: list[tuple]) -> list[tuple]:
    """The (d, f, n, P1, P2) of each call's selected rate, for the baseline loop."""
    rows = []
    for number, duration, connect in calls:
        rate = rate_leg(tariff, number, max(duration, 1), connect).rate
        rows.append((duration, rate.first_interval, rate.next_interval, rate.first_price, rate.next_price))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legs", type=int, default=200_000)
    parser.add_argument("--prefixes", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    rng = random.Random(20240601)
    print(f"legs per run: {args.legs}, prefixes: {args.prefixes}, best of {args.repeat}")
    configs = [
        ("flat, no off-peak", False, False, None),
        ("flat, formula 'amount + 0.10'", False, False, "amount + 0.10"),
        ("peak/off-peak (Europe/Berlin)", True, False, None),
        ("peak/off-peak, split at boundary", True, True, None),
    ]
    for label, offpeak, split, formula in configs:
        tariff = build_tariff(rng, args.prefixes, offpeak, split, formula)
        calls = build_calls(rng, tariff, args.legs)
        rows = baseline_rows(tariff, calls)
        rated = min(run_rating(tariff, calls) for _ in range(args.repeat))
        bare = min(run_baseline(rows) for _ in range(args.repeat))
        rate_ps, bare_ps = args.legs / rated, args.legs / bare
        print(f"[{label}] {len(tariff.rates)} rates")
        print(f"  rate_leg:          {rate_ps:12,.0f} legs/s")
        print(f"  bare Decimal loop: {bare_ps:12,.0f} legs/s")
        print(
            f"  ratio (rate_leg / bare): {rate_ps / bare_ps:.3f}  target >= 50,000 legs/s: "
            f"{'met' if rate_ps >= 50_000 else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
