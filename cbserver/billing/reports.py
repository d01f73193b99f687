"""Operator reports: the queries in ``sql/reports/*.sql``, run and formatted as text or CSV.

Each report is one SQL file whose first comment line describes it; every report takes the
period ``from`` (inclusive) and ``to`` (exclusive) and an optional ``account``. Money is
printed exactly as stored (``numeric``), never through a float.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

from cbserver.resources import reports_dir

#: Reports that make sense only for one account.
NEEDS_ACCOUNT = frozenset({"statement"})


class ReportError(ValueError):
    """An unknown report or an unusable parameter."""


def available() -> dict[str, str]:
    """Report name -> its one-line description."""
    out = {}
    for path in sorted(reports_dir().glob("*.sql")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        out[path.stem] = first.lstrip("- ").strip()
    return out


def report_sql(name: str) -> str:
    """The SQL text of report ``name``."""
    if name not in available():
        raise ReportError(f"unknown report {name!r}; known: {', '.join(available())}")
    return (reports_dir() / f"{name}.sql").read_text(encoding="utf-8")


def parse_bound(option: str, text: str) -> dt.datetime:
    """A period bound: ``YYYY-MM-DD`` (midnight UTC) or an ISO-8601 date-time with its zone."""
    try:
        if len(text) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC)
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(f"{option}: expected YYYY-MM-DD or an ISO-8601 date-time, got {text!r}") from None
    if value.utcoffset() is None:
        raise ReportError(f"{option}: {text!r} has no time zone (add Z or an offset)")
    return value


def run_report(source, name: str, start: dt.datetime, end: dt.datetime, account: str | None = None):
    """Run report ``name`` on ``source`` (an ``IReportSource``); return ``(columns, rows)``."""
    sql = report_sql(name)
    if end <= start:
        raise ReportError("--to must be after --from")
    if name in NEEDS_ACCOUNT and not account:
        raise ReportError(f"report {name!r} needs --account")
    return source.run(sql, {"from": start, "to": end, "account": account})


def _text(value) -> str:
    """A cell as text: exact decimals, ISO dates, empty for NULL."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return str(value)


def format_csv(columns, rows) -> str:
    """The rows as CSV with a header line."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_text(v) for v in row] for row in rows)
    return buf.getvalue()


def format_table(columns, rows) -> str:
    """The rows as an aligned text table (numbers right-aligned)."""
    cells = [[_text(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(r[i], int | Decimal) or r[i] is None for r in rows)
               for i in range(len(columns))]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    out = [line(columns), line(["-" * w for w in widths])]
    out.extend(line(r) for r in cells)
    out.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(out) + "\n"
