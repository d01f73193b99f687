"""``cbserver rates import|export``: a tariff's rates to and from CSV.

The CSV has a header row naming its columns (see ``COLUMNS``; the first five are required,
the others may be left out or empty). An import is all rows or none: every bad row is
reported with its line number and the reason (wrong columns, bad numbers, bad encoding,
a prefix missing from the destination register...), and then nothing is written. The file
goes to the database with COPY (see ``cbserver.billing.imports``).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from cbserver.billing.imports import RATE_COLUMNS, RATE_REQUIRED, export_cell, parse_csv
from cbserver.cli import CommandError
from cbserver.commands.catalog import run_service
from cbserver.commands.db import add_dsn_arguments

COLUMNS = RATE_COLUMNS
REQUIRED = RATE_REQUIRED
__all__ = ["COLUMNS", "REQUIRED", "parse_csv", "register"]


def register(sub) -> None:
    """Add ``rates import`` and ``rates export``."""
    p = sub.add_parser("rates", help="import or export a tariff's rates as CSV")
    s = p.add_subparsers(dest="action", metavar="ACTION")
    s.required = True
    imp = s.add_parser("import", help="insert or replace rates from a CSV file (all or nothing)")
    imp.add_argument("--tariff", required=True, help="tariff name or id")
    imp.add_argument("file", help="CSV file (UTF-8) with a header row")
    add_dsn_arguments(imp)
    imp.set_defaults(func=_import)
    exp = s.add_parser("export", help="write a tariff's rates as CSV")
    exp.add_argument("--tariff", required=True, help="tariff name or id")
    exp.add_argument("--output", "-o", help="file to write (default: standard output)")
    add_dsn_arguments(exp)
    exp.set_defaults(func=_export)


def read_file(path: str) -> bytes:
    """The bytes of ``path``, or a one-line ``CommandError``."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror}") from None


def print_counts(counts: dict, what: str) -> None:
    """One line: how many rows were read and what became of them."""
    read = counts["created"] + counts["updated"] + counts["unchanged"]
    print(f"{read} {what} read: {counts['created']} created, {counts['updated']} updated, "
          f"{counts['unchanged']} unchanged")


def _import(args) -> int:
    """Read, check and import the file (``Catalog.import_rates_csv``: COPY, all or nothing)."""
    data = read_file(args.file)

    async def go(services):
        return await services.catalog.import_rates_csv(args.tariff, data)

    print_counts(run_service(args, go), "rate(s)")
    return 0


def _export(args) -> int:
    """Write every rate version of the tariff."""

    async def go(services):
        return await services.catalog.export_rates(args.tariff)

    _tariff, rates = run_service(args, go)
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in rates:
            writer.writerow([export_cell(r[c]) for c in COLUMNS])
    finally:
        if out is not sys.stdout:
            out.close()
    return 0
