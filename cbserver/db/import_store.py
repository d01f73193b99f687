"""Bulk imports into the catalog: COPY into a staging table, check and upsert set-based.

Blocking (run in a thread): one connection, one transaction. The rows arrive already checked
field by field (``cbserver.billing.imports``) as COPY text whose first column is the file's
line number; what only the database knows (is the prefix in the destination register?) is
checked here with one query over the whole staging table, and the rows are written with one
``INSERT … ON CONFLICT DO UPDATE`` statement. If any line is bad nothing is written and the
problems come back, with their line numbers, for the caller to report together with its own.
The thread mostly waits on PostgreSQL (libpq releases the GIL), so the reactor keeps running.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import psycopg2
from psycopg2 import sql

from cbserver.billing.imports import RATE_STAGE
from cbserver.billing.validation import NotFound
from cbserver.db import audit_store
from cbserver.db.catalog_store import translate

#: Rate columns as staged and written (after the line number), in the COPY text's order.
RATE_COLUMNS = RATE_STAGE
_RATE_TYPES = ("text", "text", "integer", "integer", "numeric", "numeric", "integer", "integer",
               "numeric", "numeric", "text", "timestamptz")
DESTINATION_COLUMNS = ("prefix", "country", "description")

# Two imports of one tariff wait for each other (the tariff row is locked), and destination
# imports take an advisory lock of their own, so two files never interleave.
_DESTINATIONS_LOCK = (0x63620046, 1)


def _stage(cur, name: str, columns: Sequence[str], types: Sequence[str], data: bytes) -> None:
    cur.execute(sql.SQL("CREATE TEMP TABLE {} (line integer NOT NULL, {}) ON COMMIT DROP").format(
        sql.Identifier(name),
        sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t))
                           for c, t in zip(columns, types, strict=True))))
    cur.copy_expert(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(name)).as_string(cur),
                    io.BytesIO(data), size=1 << 18)


def _missing_destinations(cur, stage: str) -> list[tuple[int, str, str]]:
    cur.execute(sql.SQL("SELECT s.line, s.prefix FROM {} s WHERE NOT EXISTS "
                        "(SELECT 1 FROM destinations d WHERE d.prefix = s.prefix) "
                        "ORDER BY s.line").format(sql.Identifier(stage)))
    return [(line, "prefix", f"{prefix!r} is not in the destination register")
            for line, prefix in cur.fetchall()]


def _upsert(cur, table: str, stage: str, key: Sequence[str], columns: Sequence[str],
            fixed: dict) -> tuple[int, int]:
    """Write the staged rows: replace rows with the same ``key`` that differ, insert the others.

    Returns (created, updated). Two plain statements rather than ``INSERT … ON CONFLICT``: a
    speculative insertion per row costs about twice a plain one, and the caller holds a lock
    that keeps other imports of the same rows out meanwhile (a single create racing in is
    refused by the unique constraint, and the whole import with it).
    """
    t, s = sql.Identifier(table), sql.Identifier(stage)
    params = list(fixed.values())
    match = sql.SQL(" AND ").join(
        [sql.SQL("{}.{} = %s").format(t, sql.Identifier(c)) for c in fixed]
        + [sql.SQL("{}.{} = s.{}").format(t, sql.Identifier(c), sql.Identifier(c)) for c in key])
    changing = [c for c in columns if c not in key]
    updated = 0
    if changing:
        names = sql.SQL(", ").join(map(sql.Identifier, changing))
        cur.execute(sql.SQL("UPDATE {t} SET ({names}) = ROW({new}) FROM {s} AS s WHERE {match} "
                            "AND ({old}) IS DISTINCT FROM ({new})").format(
            t=t, s=s, names=names, match=match,
            new=sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in changing),
            old=sql.SQL(", ").join(sql.SQL("{}.{}").format(t, sql.Identifier(c)) for c in changing)),
            params)
        updated = cur.rowcount
    names = list(fixed) + list(columns)
    cur.execute(sql.SQL("INSERT INTO {t} ({names}) SELECT {values} FROM {s} AS s "
                        "WHERE NOT EXISTS (SELECT 1 FROM {t} WHERE {match})").format(
        t=t, s=s, names=sql.SQL(", ").join(map(sql.Identifier, names)),
        values=sql.SQL(", ").join([sql.Placeholder()] * len(fixed)
                                  + [sql.SQL("s.{}").format(sql.Identifier(c)) for c in columns]),
        match=match), params + params)
    return cur.rowcount, updated


#: After writing this many rows, refresh the table's statistics (PostgreSQL's advice after a
#: bulk load, 14.4.9): until autovacuum gets to it the planner may believe a tariff small and
#: scan all its rates where the (tariff_id, prefix, effective_from) index finds a number's few.
ANALYZE_AFTER = 5000


def _run(dsn: str, body, table: str):
    conn = psycopg2.connect(dsn, connect_timeout=10)
    try:
        with conn, conn.cursor() as cur:
            result = body(cur)
            if isinstance(result, list):  # problems: roll back, write nothing
                conn.rollback()
        if isinstance(result, dict) and result["created"] + result["updated"] >= ANALYZE_AFTER:
            conn.autocommit = True
            try:
                with conn.cursor() as cur:
                    cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
            except psycopg2.Error:
                pass  # the rows are committed; autovacuum will analyze the table in its time
        return result
    except (psycopg2.IntegrityError, psycopg2.DataError) as e:
        raise translate(e) from None
    finally:
        conn.close()


def import_rates(dsn: str, tariff: int | str, data: bytes, count: int, write: bool = True,
                 audit=None):
    """Blocking: stage and write ``count`` rates of COPY text ``data`` into ``tariff``.

    Returns ``{"created", "updated", "unchanged"}``, or the list of (line, field, reason) the
    database refuses (then nothing was written; nor when ``write`` is false, for a file the
    caller already found bad lines in). ``NotFound`` when there is no such tariff.
    ``audit(tariff_id, counts)`` gives the audit row written in the same commit.
    """

    def body(cur):
        column = "id" if isinstance(tariff, int) else "name"
        cur.execute(sql.SQL("SELECT id FROM tariffs WHERE {} = %s FOR UPDATE").format(
            sql.Identifier(column)), [tariff])
        row = cur.fetchone()
        if row is None:
            raise NotFound("tariff", tariff)
        _stage(cur, "rate_import", RATE_COLUMNS, _RATE_TYPES, data)
        problems = _missing_destinations(cur, "rate_import")
        if problems or not write:
            return problems
        created, updated = _upsert(cur, "rates", "rate_import", ("prefix", "effective_from"),
                                   RATE_COLUMNS, {"tariff_id": row[0]})
        counts = {"created": created, "updated": updated, "unchanged": count - created - updated}
        if audit is not None:
            audit_store.insert_sync(cur, audit(row[0], counts))
        return counts

    return _run(dsn, body, "rates")


def import_destinations(dsn: str, columns: Sequence[str], data: bytes, count: int, audit=None):
    """Blocking: stage and write ``count`` destinations; ``columns`` are those the file gave.

    A prefix already registered gets the given columns replaced; the others keep their value.
    Returns ``{"created", "updated", "unchanged"}``; ``audit(counts)`` gives the audit row
    written in the same commit.
    """
    given = [c for c in DESTINATION_COLUMNS if c == "prefix" or c in columns]

    def body(cur):
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", _DESTINATIONS_LOCK)
        _stage(cur, "destination_import", given, ["text"] * len(given), data)
        created, updated = _upsert(cur, "destinations", "destination_import", ("prefix",), given, {})
        counts = {"created": created, "updated": updated, "unchanged": count - created - updated}
        if audit is not None:
            audit_store.insert_sync(cur, audit(counts))
        return counts

    return _run(dsn, body, "destinations")
