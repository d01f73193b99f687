"""The catalog's rules: what a destination, tariff, rate and product row may hold, and the row
look-ups every billing service shares.

The field tables (``DESTINATION``, ``TARIFF``, ``RATE``, ``RATING_ENTRY``, ``PRODUCT``) are read
by ``validation.clean`` (so a refusal names the field), by the admin API's OpenAPI document and
by the CLI's help; ``check_rate`` and ``check_tariff`` check a row's fields together.
``resolve``, ``lookup`` and ``delete_unused`` find and delete rows inside one transaction
(``ICatalogStore.transaction``) for the catalog, accounts, payments and the generator;
``upsert_rate`` is the rate write shared by imports and provisioning. The service that uses
them is ``cbserver.billing.catalog.Catalog``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from cbserver.billing import validation as v
from cbserver.billing.audit import audit_row
from cbserver.billing.formula import FormulaError, parse_formula
from cbserver.billing.model import OffPeakPeriod, OffPeakWindow, Rate, RateDefinitionError
from cbserver.billing.validation import ConflictError, Field, NotFound, ValidationError

SERVICES = ("voice",)
_SERVICE = v.choice(*SERVICES, aliases={"voice calls": "voice"})

DESTINATION = {
    "prefix": Field(v.text(20, pattern=r"[0-9]{1,20}|\|"), required=True, mutable=False),
    "country": Field(v.text(100, allow_empty=True), default=""),
    "description": Field(v.text(200, allow_empty=True), default=""),
}


def _window(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, "must be text such as 'mon-fri 18:00-23:59'")
    try:
        OffPeakWindow.parse(value)
    except RateDefinitionError as e:
        raise ValidationError(field, e.reason) from None
    return " ".join(value.split()).lower()


TARIFF = {
    "name": Field(v.text(100), required=True),
    "currency": Field(v.currency, required=True, mutable=False),
    "service": Field(_SERVICE, default="voice"),
    "applied_to": Field(v.choice("customer", "vendor"), default="customer"),
    "managed_by": Field(v.choice("administrator", aliases={"administrator only": "administrator"}),
                        default="administrator"),
    "offpeak_timezone": Field(v.optional(v.timezone), default=None),
    "offpeak_periods": Field(v.optional(v.string_list(_window, min_items=1)), default=None),
    "split_at_boundary": Field(v.boolean, default=False),
}

_INTERVAL = v.integer(1, 86400)
_PRICE = v.decimal(Decimal(0))
RATE = {
    "prefix": Field(v.text(20, pattern=r"[0-9]{1,20}|\|"), required=True),
    "rating_mode": Field(v.choice("flat", "peak_offpeak", aliases={
        "flat rate": "flat", "separate peak / off-peak rate": "peak_offpeak"}), default="flat"),
    "first_interval": Field(_INTERVAL, required=True),
    "next_interval": Field(_INTERVAL, required=True),
    "first_price": Field(_PRICE, required=True),
    "next_price": Field(_PRICE, required=True),
    "offpeak_first_interval": Field(v.optional(_INTERVAL), default=None),
    "offpeak_next_interval": Field(v.optional(_INTERVAL), default=None),
    "offpeak_first_price": Field(v.optional(_PRICE), default=None),
    "offpeak_next_price": Field(v.optional(_PRICE), default=None),
    "formula": Field(v.optional(v.text(500)), default=None),
    "effective_from": Field(v.aware_datetime),
}

RATING_ENTRY = {
    "service": Field(_SERVICE, default="voice"),
    "node": Field(v.text(100), required=True),
    "access_code": Field(v.text(64, allow_empty=True, pattern=r"[A-Za-z0-9_.-]*"), default=""),
    "tariff": Field(v.reference, required=True),
    "overdraft_protection": Field(v.boolean, default=False),
}


def _entries(field: str, value: Any) -> list[dict]:
    if not isinstance(value, list | tuple):
        raise ValidationError(field, "must be a list of rating entries")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(v.clean(RATING_ENTRY, item))
        except ValidationError as e:
            raise ValidationError(f"{field}[{i}].{e.field}", e.reason) from None
    return out


PRODUCT = {
    "name": Field(v.text(100), required=True),
    "end_user_name": Field(v.text(100, allow_empty=True), default=""),
    "product_type": Field(v.choice("main", aliases={"main product": "main"}), default="main"),
    "currency": Field(v.currency, required=True, mutable=False),
    "managed_by": TARIFF["managed_by"],
    "default_acl": Field(v.text(100, allow_empty=True), default=""),
    "account_role": Field(v.choice("universal"), default="universal"),
    "services": Field(v.string_list(_SERVICE), default=lambda: ["voice"]),
    "rating_list": Field(_entries, default=list),
}


def now(clock) -> dt.datetime:
    """The clock's current time as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(clock.seconds(), dt.UTC)


def check_rate(row: Mapping[str, Any]) -> None:
    """Check a rate's fields together (off-peak fields by mode, formula syntax)."""
    if row.get("formula") is not None:
        try:
            parse_formula(row["formula"])
        except FormulaError as e:
            where = f" at column {e.column}" if e.column else ""
            raise ValidationError("formula", f"{e.reason}{where}") from None
    try:
        Rate(prefix=row["prefix"], mode=row["rating_mode"],
             first_interval=row["first_interval"], next_interval=row["next_interval"],
             first_price=row["first_price"], next_price=row["next_price"],
             offpeak_first_interval=row.get("offpeak_first_interval"),
             offpeak_next_interval=row.get("offpeak_next_interval"),
             offpeak_first_price=row.get("offpeak_first_price"),
             offpeak_next_price=row.get("offpeak_next_price"),
             effective_from=row["effective_from"])
    except RateDefinitionError as e:
        raise ValidationError("rating_mode" if e.field == "mode" else e.field, e.reason) from None


def check_tariff(row: Mapping[str, Any]) -> None:
    """Check a tariff's off-peak fields together (both or neither, and a valid period)."""
    if (row.get("offpeak_timezone") is None) != (row.get("offpeak_periods") is None):
        missing = "offpeak_periods" if row.get("offpeak_periods") is None else "offpeak_timezone"
        raise ValidationError(missing, "an off-peak period needs both a time zone and windows")
    if row.get("offpeak_timezone"):
        OffPeakPeriod(row["offpeak_timezone"],
                      tuple(OffPeakWindow.parse(w) for w in row["offpeak_periods"]))


async def resolve(tx, table: str, ref: int | str, field: str, *, kind: str) -> dict:
    """The row of ``table`` named by an id (int) or a name (str); ValidationError naming field."""
    row = await (tx.get(table, ref) if isinstance(ref, int)
                 else tx.get_by(table, "name", ref))
    if row is None:
        raise ValidationError(field, f"no {kind} {ref!r}")
    return row


async def lookup(tx, table: str, key: int | str, *, kind: str, lock: bool = False) -> dict:
    """The row named by a path key: digits are an id, anything else a name; else NotFound."""
    if isinstance(key, str) and key.isdigit():
        key = int(key)
    row = await (tx.get(table, key, lock=lock) if isinstance(key, int)
                 else tx.get_by(table, "name", key))
    if row is None:
        raise NotFound(kind, key)
    return row


async def delete_unused(tx, table: str, key: int | str, *, kind: str, column: str,
                        in_use: str) -> dict:
    """Delete the row named by ``key`` unless an account refers to it through ``column``.

    The row is locked first, so no account can be pointed at it meanwhile; ConflictError
    ("<kind> '<name>' <in_use>") names the ``kind`` field when accounts still use it.
    Returns the deleted row.
    """
    current = await lookup(tx, table, key, kind=kind, lock=True)
    if await tx.count_accounts(column, current["id"]):
        raise ConflictError(f"{kind} {current['name']!r} {in_use}", kind)
    await tx.delete(table, current["id"])
    return current


def page_filters(given: Mapping[str, Any], allowed: Mapping[str, tuple[str, str]]) -> list:
    """A list page's filters as (column, operator, value), the empty ones left out;
    ValidationError naming a filter ``allowed`` does not know."""
    out = []
    for name, value in given.items():
        if value is None or value == "":
            continue
        if name not in allowed:
            raise ValidationError(name, f"unknown filter (known: {', '.join(sorted(allowed))})")
        column, op = allowed[name]
        out.append((column, op, value))
    return out


def check_services(services: list[str]) -> None:
    """A product offers at least one service."""
    if not services:
        raise ValidationError("services", "a product must include at least one service (voice)")


class RowErrors(ValidationError):
    """Several rows of an import are bad: ``problems`` is a list of (line, field, reason)."""

    def __init__(self, problems: list[tuple[int, str, str]]):
        self.problems = problems
        line, field, reason = problems[0]
        super().__init__(field, f"line {line}: {reason} ({len(problems)} bad row(s))")


async def upsert_rate(tx, tariff_id: int, row: Mapping, actor) -> str:
    """Insert the rate, or replace the version with the same prefix and effective_from.

    Each rate created or changed gets its own audit row, made by ``actor``.
    """
    current = await tx.find_rate(tariff_id, row["prefix"], row["effective_from"])
    if current is None:
        new = await tx.insert("rates", {**row, "tariff_id": tariff_id})
        await tx.audit(audit_row(actor, "rate", new["id"], "create", None, new))
        return "created"
    if all(current[k] == row[k] for k in RATE):
        return "unchanged"
    new = await tx.update("rates", current["id"], dict(row))
    await tx.audit(audit_row(actor, "rate", current["id"], "update", current, new))
    return "updated"
