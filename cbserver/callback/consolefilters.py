"""The operator console's query parameters, checked (pure): xDR filters, keyset cursors, reports.

Every parameter a console list takes is parsed here, once, for the admin API and the CLI
alike. Anything else is refused with ``ValidationError`` naming the parameter, so a typo
(``acount=``) is a 400, never a silently unfiltered month of xDRs. Values are checked by
shape before they reach SQL (they go there as bound parameters all the same).

A page of xDRs is read newest first in the keyset order ``(disconnect_time, id)``: the
``next`` cursor names the last row shown, and the next page starts strictly below it, so
rows inserted meanwhile (newer ones) neither shift nor repeat what is paged through.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass

from cbserver.billing.validation import ValidationError

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
DEFAULT_REPORT_DAYS = 30

_DIGITS = re.compile(r"^[0-9]{1,20}$")
_CODE = re.compile(r"^[a-z0-9_]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9._:@+-]{1,64}$")
_CURSOR = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(?:\d{3})?Z)~([0-9A-Za-z_-]{1,64})$")

XDR_PARAMS = ("from", "to", "account", "customer", "prefix", "cause", "node", "leg", "limit",
              "after", "format")
REPORT_PARAMS = ("from", "to", "account", "format")
CALLBACK_PARAMS = ("state", "limit", "after", "account", "node")


@dataclass(frozen=True)
class XdrFilter:
    """What an xDR list shows: every field None means "any"."""

    start: dt.datetime | None = None  # disconnect_time >= start
    end: dt.datetime | None = None  # disconnect_time < end
    account: str | None = None
    customer: str | None = None
    prefix: str | None = None  # digits the destination (cld) starts with
    cause: str | None = None  # the callback's cause code (callback_sessions)
    node: str | None = None
    leg: str | None = None  # "A" or "B"
    limit: int = DEFAULT_LIMIT
    after: tuple[dt.datetime, int] | None = None  # keyset: rows strictly older than this


@dataclass(frozen=True)
class ReportRange:
    """A report's period and optional account."""

    start: dt.datetime
    end: dt.datetime
    account: str | None = None


def parse_time(field: str, text: str) -> dt.datetime:
    """An ISO 8601 date (00:00 UTC) or date-time (UTC when it names no offset)."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(field, "must be an ISO 8601 date or date-time, e.g. 2026-06-01 "
                                     "or 2026-06-01T10:00:00Z") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    if not 1970 <= value.year <= 9998:
        raise ValidationError(field, "is out of range")
    return value.astimezone(dt.UTC)


def _match(field: str, text: str, pattern: re.Pattern, what: str) -> str:
    if not pattern.match(text):
        raise ValidationError(field, f"must be {what}")
    return text


def _opt(args: dict, field: str, pattern: re.Pattern, what: str) -> str | None:
    """The parameter ``field`` checked against ``pattern``, or None when absent or empty."""
    return _match(field, args[field], pattern, what) if args.get(field) else None


def parse_limit(text: str | int, default: int = DEFAULT_LIMIT) -> int:
    """A page size between 1 and ``MAX_LIMIT``."""
    if text in ("", None):
        return default
    try:
        value = int(str(text), 10)
    except ValueError:
        raise ValidationError("limit", "must be a whole number") from None
    if not 1 <= value <= MAX_LIMIT:
        raise ValidationError("limit", f"must be between 1 and {MAX_LIMIT}")
    return value


def encode_cursor(at: str, row_id) -> str:
    """The opaque ``after`` token of a row: its exact time (UTC, to the ms or the µs) and id."""
    raw = f"{at}~{row_id}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(token: str, numeric: bool = True) -> tuple[dt.datetime, int | str]:
    """The inverse of ``encode_cursor`` (a numeric id: an xDR's; else a callback's);
    ``ValidationError`` on anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    m = _CURSOR.match(raw)
    if len(token) > 120 or m is None or (numeric and not m.group(2).isdigit()) \
            or (numeric and len(m.group(2)) > 18):
        raise ValidationError("after", "is not a cursor this API returned (use the list's next)")
    return parse_time("after", m.group(1)), int(m.group(2)) if numeric else m.group(2)


def _unknown(args: dict, known) -> None:
    for name in sorted(args):
        if name not in known:
            raise ValidationError(name, f"unknown parameter; known: {', '.join(known)}")


def _range(args: dict) -> tuple[dt.datetime | None, dt.datetime | None]:
    start = parse_time("from", args["from"]) if args.get("from") else None
    end = parse_time("to", args["to"]) if args.get("to") else None
    if start is not None and end is not None and end <= start:
        raise ValidationError("to", "must be after from")
    return start, end


def parse_xdr_filter(args: dict) -> XdrFilter:
    """An ``XdrFilter`` from query parameters (str -> str); see the module docstring."""
    _unknown(args, XDR_PARAMS)
    start, end = _range(args)
    leg = args.get("leg") or None
    if leg is not None and leg not in ("A", "B"):
        raise ValidationError("leg", "must be A or B")
    if args.get("format", "json") not in ("json", "csv"):
        raise ValidationError("format", "must be json or csv")
    return XdrFilter(
        start=start, end=end,
        account=_opt(args, "account", _NAME, "an account ID"),
        customer=_opt(args, "customer", _NAME, "a customer ID"),
        prefix=_opt(args, "prefix", _DIGITS, "1 to 20 digits"),
        cause=_opt(args, "cause", _CODE, "a cause code such as legb_busy"),
        node=_opt(args, "node", _NAME, "a node name"),
        leg=leg, limit=parse_limit(args.get("limit")),
        after=decode_cursor(args["after"]) if args.get("after") else None)


def parse_report_range(args: dict, now: dt.datetime) -> ReportRange:
    """A report's ``from``/``to`` (default: the last 30 days up to ``now``) and ``account``."""
    _unknown(args, REPORT_PARAMS)
    if args.get("format", "json") not in ("json", "csv"):
        raise ValidationError("format", "must be json or csv")
    start, end = _range(args)
    end = end or now
    start = start or end - dt.timedelta(days=DEFAULT_REPORT_DAYS)
    if end <= start:
        raise ValidationError("to", "must be after from")
    account = _opt(args, "account", _NAME, "an account ID")
    return ReportRange(start, end, account)


def parse_callback_query(args: dict) -> dict:
    """The callbacks list's parameters: state (live/past), limit, after (a callback's
    creation as a cursor), account, node."""
    _unknown(args, CALLBACK_PARAMS)
    state = args.get("state") or "live"
    if state not in ("live", "past"):
        raise ValidationError("state", "must be live or past")
    return {"state": state, "limit": parse_limit(args.get("limit")),
            "after": decode_cursor(args["after"], numeric=False) if args.get("after") else None,
            "account": _opt(args, "account", _NAME, "an account ID"),
            "node": _opt(args, "node", _NAME, "a node name")}
