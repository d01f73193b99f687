"""``cbserver report NAME --from --to [--account ID] [--csv]``: run an operator report."""

from __future__ import annotations

import sys

from cbserver.billing.reports import (
    ReportError,
    available,
    format_csv,
    format_table,
    parse_bound,
    run_report,
)
from cbserver.cli import CommandError
from cbserver.commands.db import add_dsn_arguments, dsn_from_args
from cbserver.db.stores import CursorReports
from cbserver.db.sync import sync_cursor
from cbserver.errors import DatabaseError, DatabaseUnavailable


def register(sub) -> None:
    """Add the ``report`` sub-command."""
    names = ", ".join(available()) or "none installed"
    p = sub.add_parser("report", help=f"run a report ({names}); NAME 'list' lists them")
    p.add_argument("name", metavar="NAME", help="report name, or 'list'")
    p.add_argument("--from", dest="start", metavar="DATE", help="start, inclusive (YYYY-MM-DD = 00:00 UTC)")
    p.add_argument("--to", dest="end", metavar="DATE", help="end, exclusive")
    p.add_argument("--account", metavar="ID", help="only this account (required by 'statement')")
    p.add_argument("--csv", action="store_true", help="CSV with a header line instead of a table")
    add_dsn_arguments(p)  # not needed by 'list'
    p.set_defaults(func=run)


def run(args) -> int:
    """Print the report."""
    if args.name == "list":
        for name, text in available().items():
            print(f"{name:12} {text}")
        return 0
    if not args.start or not args.end:
        raise CommandError("--from and --to are required")
    try:
        start = parse_bound("--from", args.start)
        end = parse_bound("--to", args.end)
        if args.name not in available():
            raise ReportError(f"unknown report {args.name!r}; known: {', '.join(available())}")
    except ReportError as e:
        raise CommandError(str(e)) from None
    dsn = dsn_from_args(args)
    try:
        with sync_cursor(dsn, timeout=10) as cur:
            columns, rows = run_report(CursorReports(cur), args.name, start, end, args.account)
    except DatabaseUnavailable as e:
        raise CommandError(f"cannot connect: {str(e).splitlines()[0]}") from None
    except ReportError as e:
        raise CommandError(str(e)) from None
    except DatabaseError as e:
        raise CommandError(f"database error: {str(e).splitlines()[0]} "
                           "(is the schema current? `cbserver db upgrade`)") from None
    sys.stdout.write(format_csv(columns, rows) if args.csv else format_table(columns, rows))
    return 0
