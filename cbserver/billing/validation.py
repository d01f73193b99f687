"""Typed catalog errors and the field parsers every catalog object is checked with.

The service layer (catalog, accounts, generator, provisioning) describes each object as a
table of ``Field`` values and runs input through ``clean``; every refusal is a
``ValidationError`` naming the field, so the admin API (400) and the CLI can say which one.
Money is ``Decimal`` (a float is refused), times must carry a time zone.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cbserver.billing.currencies import is_currency


class CatalogError(Exception):
    """Base of the errors the catalog service layer raises."""


class ValidationError(CatalogError, ValueError):
    """Bad input: ``field`` names the offending field, ``reason`` says what is wrong."""

    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class ConflictError(CatalogError):
    """The request contradicts stored state (duplicate, forbidden change, object in use)."""

    def __init__(self, message: str, field: str | None = None):
        self.field = field
        self.reason = message
        super().__init__(message)


class NotFound(CatalogError):
    """No ``kind`` object is known by ``key``."""

    def __init__(self, kind: str, key: object):
        self.kind = kind
        self.key = key
        self.field = None
        self.reason = f"no {kind} {key!r}"
        super().__init__(self.reason)


Parser = Callable[[str, Any], Any]
_MISSING = object()


@dataclass(frozen=True)
class Field:
    """One input field: its parser, whether it is required, its default, whether it may change."""

    parse: Parser
    required: bool = False
    default: Any = _MISSING
    mutable: bool = True


def clean(fields: Mapping[str, Field], data: object, *, partial: bool = False) -> dict:
    """Parse ``data`` against ``fields``; fill defaults unless ``partial`` (an update)."""
    if not isinstance(data, Mapping):
        raise ValidationError("body", "must be an object of fields")
    for key in data:
        if key not in fields:
            raise ValidationError(str(key), f"unknown field (known: {', '.join(sorted(fields))})")
    out: dict = {}
    for name, spec in fields.items():
        if name in data:
            out[name] = spec.parse(name, data[name])
        elif partial:
            continue
        elif spec.required:
            raise ValidationError(name, "is required")
        elif spec.default is not _MISSING:
            out[name] = spec.default() if callable(spec.default) else spec.default
    return out


def check_immutable(fields: Mapping[str, Field], changes: Mapping, current: Mapping) -> None:
    """Raise ``ConflictError`` when an update changes a field that is set once."""
    for name, value in changes.items():
        if not fields[name].mutable and value != current.get(name):
            raise ConflictError(f"{name} cannot be changed once set (it is {current.get(name)!r})",
                                name)


# -- parsers ---------------------------------------------------------------------------------


def optional(parse: Parser) -> Parser:
    """A parser that also accepts None (and an empty string) as "not set"."""

    def run(field: str, value: Any) -> Any:
        if value is None or value == "":
            return None
        return parse(field, value)

    return run


def text(max_len: int = 100, *, allow_empty: bool = False, pattern: str | None = None) -> Parser:
    """A string of at most ``max_len`` characters, stripped; optionally matching ``pattern``."""
    regex = re.compile(pattern) if pattern else None

    def run(field: str, value: Any) -> str:
        if not isinstance(value, str):
            raise ValidationError(field, f"must be text, got {type(value).__name__}")
        value = value.strip()
        if not value and not allow_empty:
            raise ValidationError(field, "must not be empty")
        if len(value) > max_len:
            raise ValidationError(field, f"must be at most {max_len} characters")
        if regex is not None and not regex.fullmatch(value):
            raise ValidationError(field, f"{value!r} is not allowed here (expected {pattern})")
        return value

    return run


def choice(*values: str, aliases: Mapping[str, str] | None = None) -> Parser:
    """One of ``values`` (case-insensitive; the manual's labels accepted through ``aliases``)."""
    table = {v.lower(): v for v in values}
    table.update({k.lower(): v for k, v in (aliases or {}).items()})

    def run(field: str, value: Any) -> str:
        if isinstance(value, str) and value.strip().lower() in table:
            return table[value.strip().lower()]
        raise ValidationError(field, f"must be one of {', '.join(values)}, got {value!r}")

    return run


def currency(field: str, value: Any) -> str:
    """An ISO 4217 code such as ``USD``."""
    if not is_currency(value):
        raise ValidationError(field, f"unknown currency {value!r} (an ISO 4217 code such as USD)")
    return value


def decimal(minimum: Decimal | None = Decimal(0), places: int = 10) -> Parser:
    """A ``Decimal`` from a Decimal, an int or a numeric string; floats are refused."""

    def run(field: str, value: Any) -> Decimal:
        if isinstance(value, bool) or isinstance(value, float):
            raise ValidationError(field, "must be an exact decimal (a string or integer), not a float")
        if isinstance(value, str):
            try:
                value = Decimal(value.strip())
            except InvalidOperation:
                raise ValidationError(field, f"{value!r} is not a number") from None
        if not isinstance(value, Decimal | int):
            raise ValidationError(field, f"must be a number, got {type(value).__name__}")
        number = Decimal(value)
        if not number.is_finite():
            raise ValidationError(field, "must be a finite number")
        if minimum is not None and number < minimum:
            raise ValidationError(field, f"must be {minimum} or more, got {number}")
        if -number.as_tuple().exponent > places:
            raise ValidationError(field, f"must have at most {places} decimal places")
        # Compare exponents, not values: abs() of 1E+999999999 overflows the decimal context
        # (decimal.Overflow, found by fuzzing the rates CSV); adjusted() is the exponent of the
        # leading digit, so |number| >= 10**15 exactly when it is 15 or more.
        if number and number.adjusted() >= 15:
            raise ValidationError(field, "is too large")
        return number

    return run


def parse_decimal(text: str) -> Decimal:
    """``parse_float`` for the JSON and TOML readers: the exact ``Decimal`` of a number literal.

    ``Decimal("2E44444444444444444444")`` raises ``decimal.InvalidOperation`` (the exponent is
    beyond its range), which no reader expects from a body (found by fuzzing the admin API);
    this raises ``ValueError`` instead, which both readers report as a syntax error."""
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValueError(f"number out of range: {text[:40]}") from None


def integer(minimum: int = 1, maximum: int = 2**31 - 1) -> Parser:
    """A whole number from ``minimum`` to ``maximum`` (an int or a string of digits)."""

    def run(field: str, value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(field, f"must be a whole number, got {value!r}")
        if not minimum <= value <= maximum:
            raise ValidationError(field, f"must be from {minimum} to {maximum}, got {value}")
        return value

    return run


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def boolean(field: str, value: Any) -> bool:
    """True/false (also the strings yes/no, on/off, 1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValidationError(field, f"must be true or false, got {value!r}")


def aware_datetime(field: str, value: Any) -> dt.datetime:
    """A timezone-aware datetime, or an ISO 8601 string with an offset; naive ones are refused."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValidationError(field, f"{value!r} is not an ISO 8601 date-time") from None
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        raise ValidationError(field, "must be a date-time with a time zone, not a bare date")
    if not isinstance(value, dt.datetime):
        raise ValidationError(field, f"must be a date-time, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(field, "must carry a time zone (e.g. 2026-01-01T00:00:00+00:00)")
    return value


def timezone(field: str, value: Any) -> str:
    """An IANA time zone name such as ``America/Sao_Paulo``."""
    if isinstance(value, str) and value.strip():
        try:
            ZoneInfo(value.strip())
            return value.strip()
        except (ZoneInfoNotFoundError, ValueError):
            pass
    raise ValidationError(field, f"unknown IANA time zone {value!r}")


def language(field: str, value: Any) -> str:
    """A language tag such as ``en`` or ``pt-BR``."""
    if isinstance(value, str) and re.fullmatch(r"[a-z]{2}(-[A-Za-z]{2})?", value.strip()):
        return value.strip()
    raise ValidationError(field, f"must be a language code such as en or pt-BR, got {value!r}")


def reference(field: str, value: Any) -> int | str:
    """Another object named by its id (an integer) or its name (a string)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError(field, f"must be a name or an id, got {value!r}")
    if isinstance(value, str) and not value.strip():
        raise ValidationError(field, "must not be empty")
    return value.strip() if isinstance(value, str) else value


def string_list(item: Parser, *, min_items: int = 0) -> Parser:
    """A list of values, each checked by ``item``."""

    def run(field: str, value: Any) -> list:
        if not isinstance(value, list | tuple):
            raise ValidationError(field, "must be a list")
        if len(value) < min_items:
            raise ValidationError(field, f"must hold at least {min_items} item(s)")
        return [item(f"{field}[{i}]", v) for i, v in enumerate(value)]

    return run


def page_args(limit: Any = 50, offset: Any = 0) -> tuple[int, int]:
    """Pagination arguments: 1 <= limit <= 1000, offset >= 0."""
    return integer(1, 1000)("limit", limit), integer(0)("offset", offset)


def jsonable(value: Any) -> Any:
    """``value`` with Decimals as strings and datetimes as ISO 8601, ready for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(val) for k, val in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(val) for val in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value
