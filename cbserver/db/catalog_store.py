"""SQL for the billing catalog: generic row access over a fixed set of tables, and transactions.

Every function but ``transaction`` takes a txpostgres cursor (inside one transaction) and is
a coroutine. Table and column names come only from ``TABLES`` below (never from input) and
every value is a query parameter. ``transaction`` runs a coroutine function in one
transaction and turns PostgreSQL integrity errors into the catalog's typed errors.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg2
from psycopg2 import errors as pgerrors
from psycopg2 import sql
from psycopg2.extras import Json
from twisted.internet import defer

from cbserver.billing.validation import ConflictError, ValidationError
from cbserver.errors import TransactionAborted

#: The tables of the catalog, each with its key column and the columns input may write.
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "destinations": ("prefix", ("prefix", "country", "description")),
    "tariffs": ("id", ("name", "currency", "service", "applied_to", "managed_by",
                       "offpeak_timezone", "offpeak_periods", "split_at_boundary", "updated_at")),
    "rates": ("id", ("tariff_id", "prefix", "rating_mode", "first_interval", "next_interval",
                     "first_price", "next_price", "offpeak_first_interval", "offpeak_next_interval",
                     "offpeak_first_price", "offpeak_next_price", "formula", "effective_from")),
    "products": ("id", ("name", "end_user_name", "product_type", "currency", "managed_by",
                        "default_acl", "account_role", "updated_at")),
    "customers": ("id", ("name", "balance_control", "currency", "credit_limit", "balance",
                         "business_model", "customer_class", "billing_period",
                         "billing_period_timezone", "updated_at")),
    "batches": ("id", ("name", "customer_id", "created_at")),
    "accounts": ("id", ("id", "customer_id", "product_id", "batch_id", "role", "account_type",
                        "balance_control", "balance", "opening_balance", "credit_limit", "status",
                        "activation_date", "expiration_date", "avail_after_first_use_days",
                        "avail_after_last_use_days", "first_usage", "last_usage", "password_hash",
                        "web_login", "web_password_hash", "time_zone", "language", "distributor",
                        "ecommerce", "internal", "created_at", "updated_at")),
    "applications": ("id", ("name", "callback_page_address", "path", "hosts", "second_number",
                            "access_code", "internal_account", "special_charge_if_legb_fails",
                            "account_id_translation_rule", "prompts", "language",
                            "use_account_id_as_ani", "hosted_allowed_clients",
                            "allowed_destinations", "denied_destinations", "updated_at")),
}

_JSON_COLUMNS = {"offpeak_periods", "parameters"}
_OPS = {"=": "{} = {}", "prefix": "{} LIKE {} || '%%'", "contains": "{} ILIKE '%%' || {} || '%%'"}


def _table(name: str) -> tuple[str, tuple[str, ...]]:
    return TABLES[name]


def _value(column: str, value: Any) -> Any:
    return Json(value) if column in _JSON_COLUMNS and value is not None else value


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def fetch_all(cur, query, params: Sequence | Mapping | None = None) -> list[dict]:
    """Run ``query`` and return its rows as dicts."""
    await cur.execute(query, params)
    if cur.description is None:
        return []
    names = [d.name for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


async def fetch_one(cur, query, params: Sequence | Mapping | None = None) -> dict | None:
    """Run ``query`` and return its first row as a dict, or None."""
    rows = await fetch_all(cur, query, params)
    return rows[0] if rows else None


async def insert(cur, table: str, row: Mapping[str, Any]) -> dict:
    """Insert ``row`` into ``table`` and return the stored row."""
    _key, columns = _table(table)
    names = [c for c in row if c in columns]
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING *").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.Placeholder() * len(names)))
    return await fetch_one(cur, query, [_value(c, row[c]) for c in names])


async def get(cur, table: str, key: Any, *, lock: bool = False) -> dict | None:
    """The row of ``table`` whose key is ``key`` (optionally locked FOR UPDATE)."""
    key_col, _ = _table(table)
    query = sql.SQL("SELECT * FROM {} WHERE {} = %s" + (" FOR UPDATE" if lock else "")).format(
        sql.Identifier(table), sql.Identifier(key_col))
    return await fetch_one(cur, query, [key])


async def get_by(cur, table: str, column: str, value: Any) -> dict | None:
    """The row of ``table`` whose ``column`` (a writable column) equals ``value``."""
    if column not in _table(table)[1]:
        raise KeyError(column)
    query = sql.SQL("SELECT * FROM {} WHERE {} = %s").format(sql.Identifier(table),
                                                              sql.Identifier(column))
    return await fetch_one(cur, query, [value])


async def update(cur, table: str, key: Any, changes: Mapping[str, Any]) -> dict | None:
    """Apply ``changes`` to the row with ``key``; return the new row (None if there is none)."""
    key_col, columns = _table(table)
    names = [c for c in changes if c in columns]
    if not names:
        return await get(cur, table, key)
    query = sql.SQL("UPDATE {} SET {} WHERE {} = %s RETURNING *").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in names),
        sql.Identifier(key_col))
    return await fetch_one(cur, query, [_value(c, changes[c]) for c in names] + [key])


async def delete(cur, table: str, key: Any) -> bool:
    """Delete the row with ``key``; True if there was one."""
    key_col, _ = _table(table)
    query = sql.SQL("DELETE FROM {} WHERE {} = %s RETURNING 1").format(
        sql.Identifier(table), sql.Identifier(key_col))
    return bool(await fetch_all(cur, query, [key]))


async def page(cur, table: str, filters: Sequence[tuple[str, str, Any]], order: Sequence[str],
               limit: int, offset: int) -> tuple[list[dict], int]:
    """One page of ``table`` matching ``filters`` (column, op, value), and the total count."""
    key_col, columns = _table(table)
    allowed = set(columns) | {key_col}
    where, params = [], []
    for column, op, value in filters:
        if column not in allowed or op not in _OPS:
            raise KeyError((column, op))
        where.append(sql.SQL(_OPS[op]).format(sql.Identifier(column), sql.Placeholder()))
        params.append(_escape_like(value) if op != "=" else value)
    clause = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(where) if where else sql.SQL("")
    order_by = sql.SQL(", ").join(sql.Identifier(c) for c in order)
    rows = await fetch_all(cur, sql.SQL("SELECT * FROM {}{} ORDER BY {} LIMIT %s OFFSET %s").format(
        sql.Identifier(table), clause, order_by), params + [limit, offset])
    total = await fetch_one(cur, sql.SQL("SELECT count(*) AS n FROM {}{}").format(
        sql.Identifier(table), clause), params)
    return rows, int(total["n"])


# -- specific queries --------------------------------------------------------------------------


async def product_services(cur, product_id: int) -> list[str]:
    """The services included in a product."""
    rows = await fetch_all(cur, "SELECT service FROM product_services WHERE product_id = %s "
                                "ORDER BY service", [product_id])
    return [r["service"] for r in rows]


async def replace_product_services(cur, product_id: int, services: Sequence[str]) -> None:
    """Make ``services`` the product's included services."""
    await cur.execute("DELETE FROM product_services WHERE product_id = %s", [product_id])
    for service in services:
        await cur.execute("INSERT INTO product_services (product_id, service) VALUES (%s, %s)",
                          [product_id, service])


async def rating_entries(cur, product_id: int) -> list[dict]:
    """A product's rating list, with each entry's tariff name and currency."""
    return await fetch_all(
        cur, "SELECT e.id, e.service, e.node, e.access_code, e.tariff_id, t.name AS tariff, "
             "t.currency AS tariff_currency, e.overdraft_protection FROM rating_entries e "
             "JOIN tariffs t ON t.id = e.tariff_id WHERE e.product_id = %s "
             "ORDER BY e.service, e.node, e.access_code", [product_id])


async def replace_rating_entries(cur, product_id: int, entries: Sequence[Mapping]) -> None:
    """Make ``entries`` (service, node, access_code, tariff_id, overdraft_protection) the list."""
    await cur.execute("DELETE FROM rating_entries WHERE product_id = %s", [product_id])
    for e in entries:
        await cur.execute(
            "INSERT INTO rating_entries (product_id, service, node, access_code, tariff_id, "
            "overdraft_protection) VALUES (%s, %s, %s, %s, %s, %s)",
            [product_id, e["service"], e["node"], e["access_code"], e["tariff_id"],
             e["overdraft_protection"]])


async def tariff_in_rating_lists(cur, tariff_id: int) -> bool:
    """Whether any product's rating list points at the tariff."""
    row = await fetch_one(cur, "SELECT EXISTS (SELECT 1 FROM rating_entries WHERE tariff_id = %s) "
                               "AS used", [tariff_id])
    return bool(row["used"])


async def rating_entry_currencies(cur, product_id: int) -> list[str]:
    """Currencies of the tariffs a product's rating list points at."""
    rows = await fetch_all(cur, "SELECT DISTINCT t.currency FROM rating_entries e JOIN tariffs t "
                                "ON t.id = e.tariff_id WHERE e.product_id = %s", [product_id])
    return [r["currency"] for r in rows]


async def count_accounts(cur, column: str, value: Any) -> int:
    """How many accounts have ``column`` (customer_id, product_id, batch_id) equal to ``value``."""
    if column not in ("customer_id", "product_id", "batch_id"):
        raise KeyError(column)
    row = await fetch_one(cur, sql.SQL("SELECT count(*) AS n FROM accounts WHERE {} = %s").format(
        sql.Identifier(column)), [value])
    return int(row["n"])


async def rate_versions(cur, tariff_id: int) -> list[dict]:
    """Every rate of a tariff, ordered by prefix and effective_from (for export and compare)."""
    return await fetch_all(cur, "SELECT * FROM rates WHERE tariff_id = %s "
                                "ORDER BY prefix, effective_from", [tariff_id])


async def find_rate(cur, tariff_id: int, prefix: str, effective_from) -> dict | None:
    """The rate of a tariff for ``prefix`` effective from exactly ``effective_from``."""
    return await fetch_one(cur, "SELECT * FROM rates WHERE tariff_id = %s AND prefix = %s "
                                "AND effective_from = %s", [tariff_id, prefix, effective_from])


async def tariff_users(cur, tariff_id: int) -> list[dict]:
    """The rating list entries naming a tariff: product name, service, node, access code."""
    return await fetch_all(cur, "SELECT p.name AS product, e.service, e.node, e.access_code "
                                "FROM rating_entries e JOIN products p ON p.id = e.product_id "
                                "WHERE e.tariff_id = %s ORDER BY p.name, e.node, e.access_code",
                           [tariff_id])


async def destination_users(cur, prefix: str) -> list[dict]:
    """The tariffs with rates for a prefix, and how many rate versions each has for it."""
    return await fetch_all(cur, "SELECT t.name AS tariff, count(*) AS rates FROM rates r "
                                "JOIN tariffs t ON t.id = r.tariff_id WHERE r.prefix = %s "
                                "GROUP BY t.name ORDER BY t.name", [prefix])


async def missing_prefixes(cur, prefixes: Sequence[str]) -> list[str]:
    """Those of ``prefixes`` that are not in the destination register."""
    rows = await fetch_all(cur, "SELECT p FROM unnest(%s::text[]) AS p WHERE NOT EXISTS "
                                "(SELECT 1 FROM destinations d WHERE d.prefix = p) ORDER BY p",
                           [list(prefixes)])
    return [r["p"] for r in rows]


async def applications(cur, *, lock: bool = False) -> list[dict]:
    """Every voice application, oldest first (so the default instance, the first one when
    none is at ``/``, stays the same as applications are added: the config's first one once
    seeded); ``lock`` takes the table against concurrent changes (two creations could
    otherwise each miss the other's path or host name)."""
    if lock:
        await cur.execute("LOCK TABLE applications IN SHARE ROW EXCLUSIVE MODE")
    return await fetch_all(cur, "SELECT * FROM applications ORDER BY id")


# -- transactions and error translation ---------------------------------------------------------


def _field_of(diag, table_hint: str = "") -> str:
    """Guess the field an integrity error is about from its constraint or column name."""
    if getattr(diag, "column_name", None):
        return diag.column_name
    name = getattr(diag, "constraint_name", None) or ""
    table = getattr(diag, "table_name", None) or table_hint
    if name == f"{table}_pkey" and table in TABLES:
        return TABLES[table][0]
    if name.startswith(table + "_"):
        name = name[len(table) + 1:]
    for suffix in ("_check", "_key", "_fkey", "_pkey"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or "body"


#: What a table's row is called in a refusal.
KINDS = {"destinations": "destination", "tariffs": "tariff", "rates": "rate", "products": "product",
         "product_services": "product's service", "rating_entries": "product's rating list entry",
         "customers": "customer", "batches": "batch", "generator_runs": "generator run",
         "accounts": "account", "payments": "payment", "xdrs": "call record (xDR)",
         "reservations": "live call's hold"}

_KEY = re.compile(r'Key \((?P<cols>[^)]*)\)=\((?P<vals>.*)\) (?P<what>is still referenced from table '
                  r'"(?P<user>\w+)"|is not present in table "(?P<target>\w+)"|already exists)')
_ON_TABLE = re.compile(r'(?:update or delete on|insert or update on) table "(?P<table>\w+)"')


def _kind(table: str | None) -> str:
    return KINDS.get(table or "", (table or "object").rstrip("s"))


def conflict_message(exc: psycopg2.Error) -> str:
    """A refusal naming the objects, from an integrity error's detail (never PostgreSQL's text).

    ``Key (id)=(1) is still referenced from table "rating_entries"`` on ``tariffs`` becomes
    "tariff with id 1 is still used by a product's rating list entry". The service layer
    names objects by name where it checks first (``Catalog.delete_tariff``...); this is what
    is left for a rule only the database enforces.
    """
    diag = exc.diag
    found = _KEY.search(diag.message_detail or "")
    on = _ON_TABLE.search(diag.message_primary or "")
    table = on.group("table") if on else diag.table_name
    if found is None:
        return f"{_kind(table)}: refused by a database rule ({diag.constraint_name or 'integrity'})"
    cols, vals = found.group("cols"), found.group("vals")
    key = f"{cols} {vals!r}" if "," not in cols else f"({cols}) = ({vals})"
    if found.group("user"):
        return f"{_kind(table)} with {key} is still used by a {_kind(found.group('user'))}"
    if found.group("target"):
        return f"no {_kind(found.group('target'))} with {key}"
    return f"a {_kind(diag.table_name)} with {key} already exists"


def translate(exc: psycopg2.Error) -> Exception:
    """The catalog error a PostgreSQL integrity error stands for (or ``exc`` itself)."""
    diag = exc.diag
    if isinstance(exc, pgerrors.UniqueViolation | pgerrors.ForeignKeyViolation):
        return ConflictError(conflict_message(exc), _field_of(diag))
    if isinstance(exc, pgerrors.CheckViolation | pgerrors.NotNullViolation):
        return ValidationError(_field_of(diag), diag.message_primary or str(exc))
    if isinstance(exc, pgerrors.DataError):
        return ValidationError("body", (diag.message_primary or str(exc)).strip())
    return exc


#: How many times a transaction PostgreSQL aborted to break a deadlock or a serialization
#: conflict is run in all.
ATTEMPTS = 3


def transaction(db, fn, *args, **kwargs) -> defer.Deferred:
    """Run the coroutine function ``fn(cursor, ...)`` in one transaction on ``db``.

    A deadlock (40P01) or serialization failure (40001) rolled the transaction back, so it
    changed nothing: it is run again, up to ``ATTEMPTS`` times in all, as PostgreSQL's
    documentation advises (13.2.3, 13.3.4), instead of failing an admin request with 500.
    """

    def run(cur):
        return defer.ensureDeferred(fn(cur, *args, **kwargs))

    def attempt(n: int) -> defer.Deferred:
        def again(f):
            if n < ATTEMPTS and f.check(psycopg2.extensions.TransactionRollbackError):
                return attempt(n + 1)
            return f

        return db.runInteraction(run).addErrback(again)

    def failed(f):
        if f.check(psycopg2.extensions.TransactionRollbackError):
            raise TransactionAborted(str(f.value).strip()) from f.value  # still aborted after ATTEMPTS
        f.trap(psycopg2.IntegrityError, psycopg2.DataError)
        raise translate(f.value)

    return attempt(1).addErrback(failed)


def dumps(value: Any) -> str:
    """JSON text of a parameter record (used for generator_runs.parameters)."""
    return json.dumps(value, default=str, sort_keys=True)
