"""SQL for payments (recharges) and refunds: lock the balance owner, move its balance, record.

Coroutines take a txpostgres cursor inside the caller's transaction. The balance owner's row
is locked ``FOR UPDATE`` first: the same lock the xDR writer and ``cb_reserve`` take, so a
payment never interleaves with a charge or a reservation decision on that balance, and two
payments to one owner are applied one after the other (both counted).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from cbserver.db.authz_store import LIVE_HOLDS
from cbserver.db.catalog_store import fetch_all, fetch_one

_LOCK_ACCOUNT = (
    "SELECT a.id, a.customer_id, a.account_type, a.balance_control, a.balance, a.credit_limit, "
    "p.currency::text AS currency FROM accounts a JOIN products p ON p.id = a.product_id "
    "WHERE a.id = %s FOR UPDATE OF a")

# A payment is a recharge for the availability rule (sql/033); a refund is not.
_MOVE_ACCOUNT = (
    "UPDATE accounts SET balance = balance + %(delta)s, "
    "first_recharge = CASE WHEN %(recharge)s THEN coalesce(first_recharge, %(at)s) "
    "                 ELSE first_recharge END, "
    "last_recharge = CASE WHEN %(recharge)s THEN greatest(last_recharge, %(at)s) "
    "                ELSE last_recharge END "
    "WHERE id = %(id)s RETURNING balance")

_MOVE_CUSTOMER = "UPDATE customers SET balance = balance + %s WHERE id = %s RETURNING balance"

_INSERT = (
    "INSERT INTO payments (account_id, customer_id, kind, amount, currency, balance_after, note, "
    "made_by, created_at) VALUES (%(account_id)s, %(customer_id)s, %(kind)s, %(amount)s, "
    "%(currency)s, %(balance_after)s, %(note)s, %(made_by)s, %(created_at)s) RETURNING *")

_NET_PAID = ("SELECT coalesce(sum(CASE kind WHEN 'payment' THEN amount ELSE -amount END), 0) "
             "AS net FROM payments WHERE {} = %s")

_COLUMNS = {"account": "account_id", "customer": "customer_id"}


async def lock_account(cur, account_id: str) -> dict | None:
    """The account (with its product's currency), locked; None if there is none."""
    return await fetch_one(cur, _LOCK_ACCOUNT, [account_id])


async def move_account(cur, account_id: str, delta: Decimal, at: dt.datetime, *,
                       recharge: bool) -> Decimal:
    """Add ``delta`` to the account's balance (a recharge also stamps it); the new balance."""
    row = await fetch_one(cur, _MOVE_ACCOUNT, {"delta": delta, "recharge": recharge, "at": at,
                                               "id": account_id})
    return row["balance"]


async def move_customer(cur, customer_id: int, delta: Decimal) -> Decimal:
    """Add ``delta`` to the customer's balance; the new balance."""
    row = await fetch_one(cur, _MOVE_CUSTOMER, [delta, customer_id])
    return row["balance"]


async def net_paid(cur, owner: str, key) -> Decimal:
    """Payments minus refunds recorded so far for one owner (``account`` or ``customer``)."""
    row = await fetch_one(cur, _NET_PAID.format(_COLUMNS[owner]), [key])
    return row["net"]


async def held(cur, owner_key: str, node_expiry: int) -> Decimal:
    """The money calls in progress hold on the balance ``owner_key`` names (0 if none): the
    live holds authorization counts (``authz_store.LIVE_HOLDS``), no session left out."""
    row = await fetch_one(cur, LIVE_HOLDS, {"key": owner_key, "session": "",
                                            "expiry": node_expiry})
    return row["held"]


async def insert(cur, row: dict) -> dict:
    """Record one payment or refund; the stored row."""
    return await fetch_one(cur, _INSERT, row)


async def page(cur, owner: str, key, limit: int, offset: int) -> tuple[list[dict], int]:
    """One page of an owner's payments, newest first, and how many there are."""
    column = _COLUMNS[owner]
    rows = await fetch_all(cur, f"SELECT * FROM payments WHERE {column} = %s "
                                "ORDER BY id DESC LIMIT %s OFFSET %s", [key, limit, offset])
    total = await fetch_one(cur, f"SELECT count(*) AS n FROM payments WHERE {column} = %s", [key])
    return rows, int(total["n"])
