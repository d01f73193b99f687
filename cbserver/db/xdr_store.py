"""The SQL of the xDR writer: one transaction writes a batch of legs with their charges.

``write_batch(cursor, records)`` (a txpostgres interaction) locks the balance rows the batch
touches in a fixed order (accounts by id, then customers by id: two writers never deadlock),
skips legs already stored (idempotent on ``(session_id, leg)``), inserts the rest with
``INSERT ... ON CONFLICT DO NOTHING``, applies to each balance exactly the amounts of the rows
that were inserted, records the balance after each leg, updates first/last usage, and
releases the legs' reservations. Records are any objects with the ``LegRecord`` fields.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

from twisted.internet import defer

COLUMNS = ("session_id", "leg", "account_id", "customer_id", "cli", "cld", "access_code", "node",
           "tariff_id", "tariff_name", "prefix", "rate_id", "rate_version", "peak", "connect_time",
           "disconnect_time", "duration", "charged_seconds", "amount", "currency", "sip_code",
           "sip_reason", "trigger_mode", "balance_after")
_TYPES = ("text", "text", "text", "text", "text", "text", "text", "text",
          "bigint", "text", "text", "bigint", "integer", "boolean", "timestamptz",
          "timestamptz", "integer", "integer", "numeric", "text", "integer",
          "text", "text", "numeric")

LOCK_ACCOUNTS = ("SELECT id, customer_id, account_type, balance_control, balance FROM accounts "
                 "WHERE id = ANY(%s) ORDER BY id FOR UPDATE")
LOCK_CUSTOMERS = "SELECT id, balance FROM customers WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
EXISTING = ("SELECT x.session_id, x.leg FROM xdrs x JOIN unnest(%s::text[], %s::text[]) AS k(s, l) "
            "ON x.session_id = k.s AND x.leg = k.l")
INSERT = ("INSERT INTO xdrs ({cols}) SELECT * FROM unnest({arrays}) "
          "ON CONFLICT (session_id, leg) DO NOTHING RETURNING session_id, leg").format(
    cols=", ".join(COLUMNS), arrays=", ".join(f"%s::{t}[]" for t in _TYPES))
UPDATE_ACCOUNTS = (
    "UPDATE accounts a SET balance = a.balance + v.delta, "
    "first_usage = coalesce(a.first_usage, v.used), "
    "last_usage = CASE WHEN v.used IS NULL THEN a.last_usage ELSE greatest(a.last_usage, v.used) END "
    "FROM unnest(%s::text[], %s::numeric[], %s::timestamptz[]) AS v(id, delta, used) WHERE a.id = v.id")
UPDATE_CUSTOMERS = ("UPDATE customers c SET balance = c.balance + v.delta "
                    "FROM unnest(%s::integer[], %s::numeric[]) AS v(id, delta) WHERE c.id = v.id")
RELEASE = ("DELETE FROM balance_reservations r USING unnest(%s::text[], %s::text[]) AS k(s, l) "
           "WHERE r.session_id = k.s AND r.leg = k.l")
COPY_COLUMNS = COLUMNS


def _plan(records, accounts: dict, customers: dict):
    """Per record: the customer id and balance after; per balance row: the delta and usage time.

    ``accounts`` maps id -> (customer_id, account_type, balance_control, balance) and
    ``customers`` maps id -> balance, both as locked. Debit accounts pay from their balance;
    credit accounts and customers (subordinate accounts) owe more.
    """
    acc_delta: dict[str, Decimal] = defaultdict(Decimal)
    acc_used: dict = {}
    cust_delta: dict[int, Decimal] = defaultdict(Decimal)
    running_acc = {k: v[3] for k, v in accounts.items()}
    running_cust = dict(customers)
    rows = []
    for rec in records:
        info = accounts.get(rec.account_id)
        customer_id = rec.customer_id
        after = None
        if info is not None:
            cust, kind, control, _balance = info
            customer_id = str(cust)
            if control == "subordinate":
                running_cust[cust] += rec.amount
                cust_delta[cust] += rec.amount
                after = running_cust[cust]
            else:
                step = -rec.amount if kind == "debit" else rec.amount
                running_acc[rec.account_id] += step
                after = running_acc[rec.account_id]
            acc_delta[rec.account_id] += 0 if control == "subordinate" else step
            if rec.duration > 0 and rec.connect_time is not None:
                prev = acc_used.get(rec.account_id)
                acc_used[rec.account_id] = rec.connect_time if prev is None else max(prev, rec.connect_time)
            else:
                acc_used.setdefault(rec.account_id, None)
        rows.append((customer_id, after))
    return rows, acc_delta, acc_used, cust_delta


@defer.inlineCallbacks
def write_batch(cur, records):
    """Write ``records`` (distinct keys) in the caller's transaction; fire with the keys stored."""
    keys_s = [r.session_id for r in records]
    keys_l = [r.leg for r in records]
    account_ids = sorted({r.account_id for r in records})
    yield cur.execute(LOCK_ACCOUNTS, (account_ids,))
    accounts = {row[0]: row[1:] for row in cur.fetchall()}
    customer_ids = sorted({v[0] for v in accounts.values() if v[2] == "subordinate"})
    customers = {}
    if customer_ids:
        yield cur.execute(LOCK_CUSTOMERS, (customer_ids,))
        customers = {row[0]: row[1] for row in cur.fetchall()}
    yield cur.execute(EXISTING, (keys_s, keys_l))
    done = set(cur.fetchall())
    fresh = [r for r in records if (r.session_id, r.leg) not in done]
    stored = set()
    if fresh:
        rows, acc_delta, acc_used, cust_delta = _plan(fresh, accounts, customers)
        columns = [[] for _ in COLUMNS]
        for rec, (customer_id, after) in zip(fresh, rows, strict=True):
            values = [getattr(rec, c) for c in COLUMNS[:-1]]
            values[3] = customer_id
            values.append(after)
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        yield cur.execute(INSERT, columns)
        stored = set(cur.fetchall())
        if len(stored) != len(fresh):
            # A concurrent writer stored some of these keys after our check: charge nothing
            # twice by retrying the whole transaction (the caller sees a serialization error).
            raise ConcurrentWrite(len(fresh) - len(stored))
        if acc_delta:
            ids = sorted(acc_delta)
            yield cur.execute(UPDATE_ACCOUNTS, (ids, [acc_delta[i] for i in ids],
                                                [acc_used.get(i) for i in ids]))
        if cust_delta:
            ids = sorted(cust_delta)
            yield cur.execute(UPDATE_CUSTOMERS, (ids, [cust_delta[i] for i in ids]))
    yield cur.execute(RELEASE, (keys_s, keys_l))
    return stored


class ConcurrentWrite(RuntimeError):
    """Another writer stored some legs of this batch meanwhile; the batch must be retried."""


def copy_rows(records):
    """Rows of ``records`` in ``COPY_COLUMNS`` order (for the COPY baseline of the benchmark)."""
    return [[getattr(r, c, None) for c in COPY_COLUMNS] for r in records]
