"""SQL for accounts and batches: the account view with names, activation, the generator's COPY.

Coroutines take a txpostgres cursor inside a transaction. ``write_batch`` is the exception:
psycopg2 cannot COPY on an asynchronous connection, so the generator's bulk write runs on a
blocking connection of its own in a worker thread (never on the reactor thread), as one
transaction: the batch row, the generator-run row and every account, or nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg2
from psycopg2 import sql

from cbserver.billing.stores import ACCOUNT_COPY_COLUMNS
from cbserver.db import audit_store
from cbserver.db.catalog_store import fetch_all, fetch_one, translate

#: The transaction-scoped advisory lock (class, key) every generator write takes first. Two
#: COPYs drawing from one id space would each insert a key the other then waits on, and
#: PostgreSQL breaks that cycle by killing one with "deadlock detected". Serialised, the
#: second COPY waits for the first to commit and fails cleanly on the first shared id, so the
#: generator draws again from what is left. (Class 20 is the per-account slot lock.)
GENERATOR_LOCK = (21, 0)

_VIEW = """
SELECT a.*, c.name AS customer, p.name AS product, p.currency AS currency, b.name AS batch
FROM accounts a
JOIN customers c ON c.id = a.customer_id
JOIN products p ON p.id = a.product_id
LEFT JOIN batches b ON b.id = a.batch_id
"""

#: Filters of the account list: name -> (SQL condition with one placeholder).
_FILTERS = {
    "customer": "c.name = %s",
    "product": "p.name = %s",
    "batch": "b.name = %s",
    "status": "a.status = %s",
    "account_type": "a.account_type = %s",
    "internal": "a.internal = %s",
    "id_prefix": "a.id LIKE %s || '%%'",
}


async def account_view(cur, account_id: str) -> dict | None:
    """An account with its customer, product, batch names and currency."""
    return await fetch_one(cur, _VIEW + " WHERE a.id = %s", [account_id])


async def account_page(cur, filters: Mapping[str, Any], limit: int, offset: int) -> tuple[list[dict], int]:
    """One page of accounts (ordered by id) matching ``filters``, and the total count."""
    where, params = [], []
    for name, value in filters.items():
        where.append(_FILTERS[name])
        if name == "id_prefix":
            value = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params.append(value)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    rows = await fetch_all(cur, _VIEW + clause + " ORDER BY a.id LIMIT %s OFFSET %s",
                           params + [limit, offset])
    total = await fetch_one(cur, "SELECT count(*) AS n FROM accounts a JOIN customers c ON "
                                 "c.id = a.customer_id JOIN products p ON p.id = a.product_id "
                                 "LEFT JOIN batches b ON b.id = a.batch_id" + clause, params)
    return rows, int(total["n"])


async def set_status(cur, status: str, *, account_id: str | None = None,
                     batch_id: int | None = None, when=None) -> int:
    """Set the status of one account or of every account of a batch; returns rows changed."""
    column, key = ("id", account_id) if account_id is not None else ("batch_id", batch_id)
    rows = await fetch_all(cur, sql.SQL("UPDATE accounts SET status = %s, updated_at = %s "
                                        "WHERE {} = %s AND status <> %s RETURNING 1").format(
                               sql.Identifier(column)), [status, when, key, status])
    return len(rows)


async def account_holds(cur, account_id: str) -> list[dict]:
    """Money held on the account's balance for its calls in progress (not expired), oldest first."""
    return await fetch_all(cur, "SELECT session_id, leg, amount, currency, created_at, expires_at "
                                "FROM balance_reservations WHERE account_id = %s "
                                "AND expires_at > now() ORDER BY created_at, leg", [account_id])


async def batch_counts(cur, batch_id: int) -> dict:
    """How many accounts of a batch are active and inactive."""
    rows = await fetch_all(cur, "SELECT status, count(*) AS n FROM accounts WHERE batch_id = %s "
                                "GROUP BY status", [batch_id])
    return {r["status"]: int(r["n"]) for r in rows}


async def count_pattern(cur, prefix: str, length: int) -> int:
    """How many accounts have an ID of ``prefix`` followed by digits, ``length`` long in all."""
    row = await fetch_one(cur, "SELECT count(*) AS n FROM accounts WHERE id LIKE %s AND "
                               "length(id) = %s AND substr(id, %s) ~ '^[0-9]+$'",
                          [_like_prefix(prefix), length, len(prefix) + 1])
    return int(row["n"])


async def ids_with_pattern(cur, prefix: str, length: int) -> set[str]:
    """The account IDs made of ``prefix`` and digits, ``length`` characters long."""
    rows = await fetch_all(cur, "SELECT id FROM accounts WHERE id LIKE %s AND length(id) = %s "
                                "AND substr(id, %s) ~ '^[0-9]+$'",
                           [_like_prefix(prefix), length, len(prefix) + 1])
    return {r["id"] for r in rows}


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


#: Columns the generator writes with COPY, in order (the order billing builds its rows in).
COPY_COLUMNS = ACCOUNT_COPY_COLUMNS


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class _Lines(io.RawIOBase):
    """A file object producing COPY text from rows, calling ``progress(n)`` as rows go out."""

    def __init__(self, rows: Sequence[Sequence[Any]], progress: Callable[[int], None] | None, every: int):
        self._rows = rows
        self._i = 0
        self._buf = b""
        self._progress = progress
        self._every = every

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while len(self._buf) < len(b) and self._i < len(self._rows):
            chunk = self._rows[self._i:self._i + self._every]
            self._i += len(chunk)
            self._buf += "".join("\t".join(map(_copy_text, r)) + "\n" for r in chunk).encode()
            if self._progress is not None:
                self._progress(self._i)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def write_batch(dsn: str, *, batch: Mapping[str, Any] | None, batch_id: int | None,
                run: Mapping[str, Any], rows: Sequence[Sequence[Any]],
                progress: Callable[[int], None] | None = None, every: int = 2000,
                audit: Mapping[str, Any] | None = None) -> int:
    """Blocking: create the batch (or use ``batch_id``), COPY ``rows``, record the run; one commit.

    ``rows`` are tuples in ``COPY_COLUMNS`` order with ``batch_id`` None (filled here).
    Returns the batch id. Integrity errors come back as the catalog's typed errors. ``audit``
    is the audit log row of the run (its ``after`` gets the batch id), written in the same commit.
    """
    conn = psycopg2.connect(dsn, connect_timeout=10)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", GENERATOR_LOCK)
            if batch is not None:
                cur.execute("INSERT INTO batches (name, customer_id) VALUES (%s, %s) RETURNING id",
                            [batch["name"], batch["customer_id"]])
                batch_id = cur.fetchone()[0]
            index = COPY_COLUMNS.index("batch_id")
            filled = _Filled(rows, index, batch_id)
            cur.copy_expert(sql.SQL("COPY accounts ({}) FROM STDIN").format(
                sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS))).as_string(conn),
                _Lines(filled, progress, every), size=1 << 16)
            cur.execute("INSERT INTO generator_runs (batch_id, quantity, parameters, csv_path) "
                        "VALUES (%s, %s, %s, %s)",
                        [batch_id, run["quantity"], run["parameters"], run.get("csv_path", "")])
            if audit is not None:
                audit_store.insert_sync(cur, {**audit, "key": str(batch_id), "after": {
                    **(audit["after"] or {}), "batch_id": batch_id}})
        return batch_id
    except (psycopg2.IntegrityError, psycopg2.DataError) as e:
        raise translate(e) from None
    finally:
        conn.close()


class _Filled(Sequence):
    """``rows`` with the batch id put in place, without copying them."""

    def __init__(self, rows: Sequence[Sequence[Any]], index: int, value: Any):
        self._rows, self._index, self._value = rows, index, value

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        row = self._rows[i]
        row = row if isinstance(row, list) else list(row)
        row[self._index] = self._value
        return row


def generator_runs(cur, batch_id: int):
    """The generator runs recorded for a batch (a coroutine)."""
    return fetch_all(cur, "SELECT id, quantity, parameters, csv_path, created_at FROM generator_runs "
                          "WHERE batch_id = %s ORDER BY id", [batch_id])

