"""Bulk imports of rate decks and destination registers: read a CSV, check it, hand it over.

A carrier's deck has 20,000 to 100,000 prefixes. The work is split so that it never holds the
reactor for long (the admin API runs in the server, beside the media clock and SIP timers):

1. ``read_csv`` walks the file row by row (line numbers are the file's physical lines);
2. ``check_rows`` runs each row through the same field checks as a single create
   (``validation.clean`` and ``catalogrules.check_rate``), so the per-line messages are those of
   one object, and collects every problem;
3. the checked rows become ``COPY`` text (``copy_text``) and the store loads them into a
   temporary staging table, checks what only the database knows (the destination register)
   set-based, and upserts them with one statement, in one transaction (``ICatalogStore``).

Steps 1 and 2 run in slices of at most ``SLICE`` seconds of CPU, each followed by a return to
the reactor (``cooperate``); step 3 runs in a thread that mostly waits on PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from twisted.internet import task

from cbserver.billing.validation import ValidationError

RATE_COLUMNS = ("prefix", "first_interval", "next_interval", "first_price", "next_price", "rating_mode",
                "offpeak_first_interval", "offpeak_next_interval", "offpeak_first_price",
                "offpeak_next_price", "formula", "effective_from")
RATE_REQUIRED = RATE_COLUMNS[:5]
DESTINATION_COLUMNS = ("prefix", "country", "description")
#: The order of a rate's fields in the COPY text handed to the store (after the line number).
RATE_STAGE = ("prefix", "rating_mode", "first_interval", "next_interval", "first_price",
              "next_price", "offpeak_first_interval", "offpeak_next_interval",
              "offpeak_first_price", "offpeak_next_price", "formula", "effective_from")
DESTINATION_REQUIRED = ("prefix",)

#: Longest stretch of CPU work between two returns to the reactor (seconds).
SLICE = 0.003

Problem = tuple[int, str, str]


class HeaderError(ValueError):
    """The file cannot be read at all (encoding, header): ``problems`` holds one entry."""

    def __init__(self, problem: Problem):
        self.problems = [problem]
        super().__init__(f"line {problem[0]}: {problem[1]}: {problem[2]}")


def export_cell(value) -> str:
    """A rate's field as a cell of an exported rates CSV (``cbserver rates export`` and the
    console's export write the same text): dates in ISO form, decimals without exponent."""
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return format(value, "f") if not isinstance(value, int | str) else str(value)


def read_csv(data: bytes, columns: tuple[str, ...], required: tuple[str, ...]) -> Iterator:
    """Yield ``(line, fields)`` for each row and ``(line, field, reason)`` for each unreadable one.

    Raises ``HeaderError`` (on the first ``next``) when the file is not UTF-8 or its header
    names unknown, missing or repeated columns. Blank rows are skipped; empty cells are left
    out of ``fields``.
    """
    yield from open_csv(data, columns, required)


def open_csv(data: bytes, columns: tuple[str, ...], required: tuple[str, ...]) -> Iterator:
    """``read_csv``, but the header is checked now (``HeaderError``), the rows read lazily."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise HeaderError((line, "encoding", f"not UTF-8 (byte 0x{data[e.start]:02x} at offset "
                                             f"{e.start})")) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise HeaderError((1, "header", "the file is empty")) from None
    except csv.Error as e:
        raise HeaderError((1, "header", f"malformed CSV: {e}")) from None
    unknown = [h for h in header if h not in columns]
    missing = [c for c in required if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        why = []
        if unknown:
            why.append(f"unknown column(s) {', '.join(unknown)}")
        if missing:
            why.append(f"missing column(s) {', '.join(missing)}")
        if len(set(header)) != len(header):
            why.append("a column is named twice")
        raise HeaderError((1, "header", "; ".join(why) + f" (columns: {', '.join(columns)})"))
    return _rows(reader, header)


def _rows(reader, header: list[str]) -> Iterator:
    width = len(header)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield (reader.line_num, "csv", f"malformed CSV: {e}")
            return
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != width:
            yield (reader.line_num, "columns", f"{len(cells)} fields, the header has {width}")
            continue
        fields = {}
        for name, cell in zip(header, cells, strict=True):
            cell = cell.strip()
            if cell:
                fields[name] = cell
        yield (reader.line_num, fields)


def header_of(data: bytes) -> list[str]:
    """The column names of a CSV that ``read_csv`` accepted (its first row)."""
    first = data.split(b"\n", 1)[0].decode("utf-8-sig")  # the first line only: no copy of it all
    return [h.strip() for h in next(csv.reader([first]), [])]


def parse_csv(data: bytes, columns: tuple[str, ...] = RATE_COLUMNS,
              required: tuple[str, ...] = RATE_REQUIRED) -> tuple[list, list[Problem]]:
    """Rows ``(line, fields)`` of a CSV, and the problems found reading it (all at once)."""
    rows: list = []
    problems: list[Problem] = []
    try:
        for item in read_csv(data, columns, required):
            (rows if len(item) == 2 else problems).append(item)
    except HeaderError as e:
        return [], e.problems
    return rows, problems


def _slices(items: Iterable, work: Callable[[Any], None]) -> Iterator:
    """Call ``work`` on each item, yielding to the cooperator every ``SLICE`` seconds."""
    deadline = time.perf_counter() + SLICE
    for item in items:
        work(item)
        if time.perf_counter() >= deadline:
            yield None
            deadline = time.perf_counter() + SLICE


def cooperate(items: Iterable, work: Callable[[Any], None], clock):
    """Run ``work`` over ``items`` in slices of ``SLICE`` s, back to the reactor between them.

    Returns a Deferred firing when every item was handled. ``clock`` is the reactor (or a
    ``task.Clock`` in tests, which must then be advanced).
    """
    cooperator = task.Cooperator(terminationPredicateFactory=lambda: _once(),
                                 scheduler=lambda f: clock.callLater(0, f))
    return cooperator.coiterate(_slices(items, work)).addCallback(lambda _: None)


def _once():
    """A termination predicate ending each cooperator tick after one step (one slice)."""
    done = [False]

    def predicate():
        if done[0]:
            return True
        done[0] = True
        return False

    return predicate


def split_rows(items: Iterator, problems: list[Problem]) -> Iterator:
    """The ``(line, fields)`` items of ``items``; the problems go to ``problems`` as met.

    Lets a deck stream from the file through the checks into COPY text without a list of
    100,000 row dicts alive at once (each one more object for the collector to walk).
    """
    for item in items:
        if len(item) == 2:
            yield item
        else:
            problems.append(item)


async def check_rows(rows: Iterable[tuple[int, Any]], convert: Callable[[Any], tuple[Any, str]],
                     clock, *, duplicate: str) -> tuple[list[str], list[Problem]]:
    """Check every row with ``convert``; report bad rows and rows repeating an earlier key.

    ``convert(fields)`` returns ``(key, copy fields)`` or raises ``ValidationError``. Returns
    ``(lines, problems)``: ``lines`` are the COPY lines of the good rows, each starting with
    its line number.
    """
    lines: list[str] = []
    problems: list[Problem] = []
    seen: dict[Any, int] = {}

    def one(item):
        line, data = item
        try:
            key, text = convert(data)
        except ValidationError as e:
            problems.append((line, e.field, e.reason))
            return
        first = seen.setdefault(key, line)
        if first != line:
            problems.append((line, "prefix", f"{duplicate} as line {first}"))
        else:
            lines.append(f"{line}\t{text}")

    await cooperate(rows, one, clock)
    await release(seen, clock)
    return lines, problems


async def release(container: dict | list, clock) -> None:
    """Empty ``container`` in slices: freeing 100,000 keys or strings at once is a stall."""
    if isinstance(container, dict):
        await cooperate(iter(lambda: container.popitem() if container else None, None),
                        lambda _item: None, clock)
    else:
        def chop(_):
            del container[-1000:]

        await cooperate(range(-(-len(container) // 1000)), chop, clock)


def _copy_value(value: Any) -> str:
    """One field in PostgreSQL's COPY text format (``\\N`` for NULL, backslash escapes)."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                    .replace("\r", "\\r"))
        return value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return format(value, "f")


def copy_fields(row: dict, columns: tuple[str, ...]) -> str:
    """The COPY text of ``row``'s ``columns`` (tab-separated, without the line number)."""
    return "\t".join([_copy_value(row.get(c)) for c in columns])


async def copy_text(lines: list[str], clock) -> bytes:
    """The COPY data of ``lines`` (``check_rows``'s), encoded 2,000 lines per slice."""
    chunks: list[bytes] = []

    def one(start: int) -> None:
        chunks.append(("\n".join(lines[start:start + 2000]) + "\n").encode("utf-8"))

    await cooperate(range(0, len(lines), 2000), one, clock)
    return b"".join(chunks)


# The common shape of a deck's row, checked without the general field machinery: anything
# else (or anything doubtful) goes the full way (``validation.clean`` and ``check_rate``),
# which also words every refusal, so both ways accept and refuse exactly the same rows.
_FAST_KEYS = frozenset(("prefix", "first_interval", "next_interval", "first_price", "next_price",
                        "effective_from", "rating_mode"))
_PREFIX = re.compile(r"[0-9]{1,20}|\|")
_INTERVAL = re.compile(r"[0-9]{1,5}")
_PRICE = re.compile(r"[0-9]{1,14}(\.[0-9]{1,10})?")
_NULLS = "\t".join(["\\N"] * 5)  # the four off-peak fields and the formula


def fast_rate(fields: dict, default_from: dt.datetime) -> tuple[Any, str] | None:
    """``(key, copy fields)`` of a plain flat rate in ``RATE_STAGE`` order, or None (go the
    full way). ``fields`` are a CSV row's stripped, non-empty cells."""
    if not _FAST_KEYS.issuperset(fields) or not all(type(x) is str for x in fields.values()):
        return None
    mode = fields.get("rating_mode")
    if mode is not None and mode.lower() not in ("flat", "flat rate"):
        return None
    try:
        prefix = fields["prefix"]
        f, n = fields["first_interval"], fields["next_interval"]
        p1, p2 = fields["first_price"], fields["next_price"]
    except KeyError:
        return None
    if not (_PREFIX.fullmatch(prefix) and _INTERVAL.fullmatch(f) and _INTERVAL.fullmatch(n)
            and _PRICE.fullmatch(p1) and _PRICE.fullmatch(p2)):
        return None
    f_i, n_i = int(f), int(n)
    if not (0 < f_i <= 86400 and 0 < n_i <= 86400):
        return None
    since = fields.get("effective_from")
    if since is None:
        when = default_from
    else:
        try:
            when = dt.datetime.fromisoformat(since)
        except ValueError:
            return None
        if when.tzinfo is None or when.utcoffset() is None:
            return None
    return (prefix, when), (f"{prefix}\tflat\t{f_i}\t{n_i}\t{p1}\t{p2}\t{_NULLS}\t"
                            f"{when.isoformat()}")


_LIMITS = {"prefix": 20, "country": 100, "description": 200}
_SPECIAL = re.compile(r"[\\\t\n\r]")


def fast_destination(fields: dict, given: tuple[str, ...]) -> tuple[Any, str] | None:
    """``(key, copy fields)`` of a plain destination row in ``given`` order, or None (go the
    full way, ``validation.clean``): the same acceptance, the same stored values."""
    if not set(given).issuperset(fields) or not all(type(x) is str for x in fields.values()):
        return None
    prefix = fields.get("prefix")
    if prefix is None or not _PREFIX.fullmatch(prefix):
        return None
    out = []
    for name in given:
        value = fields.get(name, "")
        if (len(value) > _LIMITS[name] or value != value.strip() or _SPECIAL.search(value)
                or (name != "prefix" and not value.isprintable())):
            return None
        out.append(value)
    return prefix, "\t".join(out)
