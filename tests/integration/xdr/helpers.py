"""Test-only helpers: load the fixture catalog and read balances and xDRs back (psycopg2)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import psycopg2

FIXTURE = Path(__file__).with_name("fixture.sql")


def load_fixture(dsn: str) -> None:
    """Insert the test catalog (tariffs Callback/CallbackFail/Night, products, accounts)."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(FIXTURE.read_text())
    conn.close()


def query(dsn: str, sql: str, params=()):
    """Run one query and return all rows."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def balance(dsn: str, account_id: str) -> Decimal:
    """An account's balance column."""
    return query(dsn, "SELECT balance FROM accounts WHERE id = %s", (account_id,))[0][0]


def xdr_total(dsn: str, account_id: str) -> tuple[int, Decimal]:
    """How many xDRs an account has and the sum of their amounts."""
    n, total = query(dsn, "SELECT count(*), coalesce(sum(amount), 0) FROM xdrs WHERE account_id = %s",
                     (account_id,))[0]
    return n, total


def reservations(dsn: str) -> list:
    """All reservation rows: (session_id, leg, account_id, amount)."""
    return query(dsn, "SELECT session_id, leg, account_id, amount FROM balance_reservations "
                      "ORDER BY session_id, leg")


def at(text: str) -> dt.datetime:
    """An aware datetime from ISO text."""
    return dt.datetime.fromisoformat(text)
