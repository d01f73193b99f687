"""``cbserver rates import|export``: a tariff's rates to and from CSV.

The CSV has a header row naming its columns (see ``COLUMNS``; the first five are required,
the others may be left out or empty). An import is all rows or none: every bad row is
reported with its line number and the reason (wrong columns, bad numbers, bad encoding,
a prefix missing from the destination register...), and then nothing is written.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from cbserver.cli import CommandError
from cbserver.commands.catalog import run_service
from cbserver.commands.db import add_dsn_arguments

COLUMNS = ("prefix", "first_interval", "next_interval", "first_price", "next_price", "rating_mode",
           "offpeak_first_interval", "offpeak_next_interval", "offpeak_first_price",
           "offpeak_next_price", "formula", "effective_from")
REQUIRED = COLUMNS[:5]


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


def parse_csv(data: bytes) -> tuple[list[tuple[int, dict]], list[tuple[int, str, str]]]:
    """Rows (line number, fields) of a rates CSV, and the problems found reading it."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        return [], [(line, "encoding", f"not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})")]
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return [], [(1, "header", "the file is empty")]
    except csv.Error as e:
        return [], [(1, "header", f"malformed CSV: {e}")]
    problems = []
    unknown = [h for h in header if h not in COLUMNS]
    missing = [c for c in REQUIRED if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        why = []
        if unknown:
            why.append(f"unknown column(s) {', '.join(unknown)}")
        if missing:
            why.append(f"missing column(s) {', '.join(missing)}")
        if len(set(header)) != len(header):
            why.append("a column is named twice")
        return [], [(1, "header", "; ".join(why) + f" (columns: {', '.join(COLUMNS)})")]
    rows = []
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            problems.append((reader.line_num, "csv", f"malformed CSV: {e}"))
            break
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            problems.append((reader.line_num, "columns",
                             f"{len(cells)} fields, the header has {len(header)}"))
            continue
        rows.append((reader.line_num, {h: c.strip() for h, c in zip(header, cells, strict=True)
                                       if c.strip() != ""}))
    return rows, problems


def _import(args) -> int:
    """Read, check and import the file."""
    try:
        data = Path(args.file).read_bytes()
    except OSError as e:
        raise CommandError(f"cannot read {args.file}: {e.strerror}") from None
    rows, problems = parse_csv(data)
    if problems and problems[0][1] in ("encoding", "header"):
        raise _fail(problems)
    if not rows and not problems:
        raise CommandError(f"{args.file} holds no rates")

    async def go(services):
        # Rows that could not even be read are reported together with the rows the
        # service refuses, so one run lists every bad line.
        return await services.catalog.import_rates(args.tariff, rows, problems)

    counts = run_service(args, go)
    print(f"{len(rows)} rate(s) read: {counts['created']} created, {counts['updated']} updated, "
          f"{counts['unchanged']} unchanged")
    return 0


def _fail(problems) -> CommandError:
    for line, field, reason in problems:
        print(f"line {line}: {field}: {reason}", file=sys.stderr)
    return CommandError(f"{len(problems)} bad row(s): nothing was written")


def _cell(value) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return format(value, "f") if not isinstance(value, int | str) else str(value)


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
            writer.writerow([_cell(r[c]) for c in COLUMNS])
    finally:
        if out is not sys.stdout:
            out.close()
    return 0
