"""SQL for the audit log (sql/044_audit_log.sql): append a row, read a page.

Coroutines take a txpostgres cursor inside the transaction of the change being recorded, so
the row commits with it. ``insert_sync`` is the same for the generator's blocking connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg2.extras import Json

from cbserver.db.catalog_store import dumps, fetch_all, fetch_one

_INSERT = ("INSERT INTO audit_log (who, source, client, kind, key, action, before, after) "
           "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id")

#: Filters of the list: name -> SQL condition with one placeholder.
_FILTERS = {
    "since": "at >= %s",
    "until": "at < %s",
    "who": "who = %s",
    "source": "source = %s",
    "kind": "kind = %s",
    "key": "key = %s",
    "action": "action = %s",
}


def _params(row: Mapping[str, Any]) -> list:
    def js(value):
        return None if value is None else Json(value, dumps=dumps)

    return [row["who"], row["source"], row["client"], row["kind"], row["key"], row["action"],
            js(row["before"]), js(row["after"])]


async def insert(cur, row: Mapping[str, Any]) -> int:
    """Append one audit row; its id."""
    found = await fetch_one(cur, _INSERT, _params(row))
    return int(found["id"])


def insert_sync(cur, row: Mapping[str, Any]) -> None:
    """Append one audit row through a blocking psycopg2 cursor."""
    cur.execute(_INSERT, _params(row))


async def page(cur, filters: Mapping[str, Any], limit: int, offset: int) -> tuple[list[dict], int]:
    """One page of audit rows (newest first) matching ``filters``, and the total count."""
    where = [_FILTERS[name] for name in filters]
    params = list(filters.values())
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    rows = await fetch_all(cur, "SELECT id, at, who, source, client, kind, key, action, before, "
                                "after FROM audit_log" + clause + " ORDER BY id DESC "
                                "LIMIT %s OFFSET %s", params + [limit, offset])
    total = await fetch_one(cur, "SELECT count(*) AS n FROM audit_log" + clause, params)
    return rows, int(total["n"])
