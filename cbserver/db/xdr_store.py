"""The SQL of the xDR writer: one transaction writes a batch of legs with their charges.

``write_batch(cursor, records)`` (a txpostgres interaction) skips legs already stored
(idempotent on ``(session_id, leg)``) and locks the balance rows the batch touches in a fixed
order (accounts by id, then customers by id: two writers never deadlock), in one statement;
then in one more statement
inserts them (each with the balance after it; ``UNIQUE (session_id, leg)`` guards), applies
to each balance exactly their amounts, updates first/last usage, and releases the legs'
reservations. A leg stored meanwhile by someone else rolls the batch back for a retry.
Records are any objects with the ``LegRecord`` fields.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import operator
from collections import defaultdict
from decimal import Decimal

from twisted.internet import defer

from cbserver.errors import ConcurrentWrite

COLUMNS = ("session_id", "leg", "account_id", "customer_id", "cli", "cld", "access_code", "node",
           "tariff_id", "tariff_name", "prefix", "rate_id", "rate_version", "peak", "connect_time",
           "disconnect_time", "duration", "charged_seconds", "amount", "currency", "sip_code",
           "sip_reason", "trigger_mode", "call_id", "instance_id", "balance_after")
_TYPES = ("text", "text", "text", "text", "text", "text", "text", "text",
          "bigint", "text", "text", "bigint", "integer", "boolean", "timestamptz",
          "timestamptz", "integer", "integer", "numeric", "text", "integer",
          "text", "text", "text", "uuid", "numeric")

# One round trip for the three reads a batch starts with: the legs already stored, the accounts
# locked in id order, then the customers of subordinate accounts locked in id order (one order
# for every writer: no deadlock). A PL/pgSQL function (sql/functions/70) so that its plan is
# kept per connection. Rows are tagged: ('x', session, leg), ('a', id, customer, type, control,
# balance), ('c', id, balance). A leg another writer commits while this statement waits for a
# lock is not seen here; the INSERT then fails on the unique key and the batch is retried.
READ_AND_LOCK = "SELECT * FROM cb_xdr_read_and_lock(%(sessions)s::text[], %(accounts)s::text[])"
# The rows travel as one JSON document (a bound parameter; json.dumps escapes), an array of
# arrays in COLUMNS order: far cheaper for Python and PostgreSQL than 26 arrays of literals.
# A plain INSERT (the legs already stored were skipped under the same snapshot): twice as fast
# as ON CONFLICT's speculative insertion; a leg another writer stored meanwhile raises
# unique_violation, and the batch is retried (the writer treats it like a deadlock).
_INSERT = ("INSERT INTO xdrs ({cols}) SELECT {values} FROM jsonb_array_elements(%s::jsonb) AS e "
           "RETURNING session_id, leg").format(
    cols=", ".join(COLUMNS),
    values=", ".join(f"(e->>{i})::{t}" for i, t in enumerate(_TYPES)))
_UPDATE_ACCOUNTS = (
    "UPDATE accounts a SET balance = a.balance + v.delta, "
    "first_usage = coalesce(a.first_usage, v.used), "
    "last_usage = CASE WHEN v.used IS NULL THEN a.last_usage ELSE greatest(a.last_usage, v.used) END "
    "FROM unnest(%s::text[], %s::numeric[], %s::timestamptz[]) AS v(id, delta, used) WHERE a.id = v.id "
    "RETURNING 1")
_UPDATE_CUSTOMERS = ("UPDATE customers c SET balance = c.balance + v.delta "
                     "FROM unnest(%s::integer[], %s::numeric[]) AS v(id, delta) WHERE c.id = v.id "
                     "RETURNING 1")
RELEASE = ("DELETE FROM balance_reservations r USING unnest(%s::text[], %s::char(1)[]) AS k(s, l) "
           "WHERE r.session_id = k.s AND r.leg = k.l")
# Insert, balances and release in one statement, so the row locks are held for one round trip:
# cb_xdr_apply (sql/functions/75), whose plan PostgreSQL keeps per connection. It is the
# statement below (APPLY_STATEMENT, kept to check the function against: same columns, same
# casts, see tests/integration/xdr/test_xdr_writer.py).
APPLY_STATEMENT = (f"WITH ins AS ({_INSERT}), acc AS ({_UPDATE_ACCOUNTS}), cus AS ({_UPDATE_CUSTOMERS}), "
                   f"rel AS ({RELEASE} RETURNING 1) SELECT session_id, leg FROM ins")
APPLY = ("SELECT * FROM cb_xdr_apply(%s::jsonb, %s::text[], %s::numeric[], %s::timestamptz[], "
         "%s::integer[], %s::numeric[], %s::text[], %s::char(1)[])")


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


def _json_default(value):
    """JSON for what ``json`` does not know: Decimal and datetime as exact text."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"cannot put {type(value).__name__} in an xDR")


_FIELDS = operator.attrgetter(*COLUMNS[:-1])
_CUSTOMER = COLUMNS.index("customer_id")


def _document(records, plan_rows) -> str:
    """The JSON array of rows (arrays in ``COLUMNS`` order) for ``INSERT``."""
    out = []
    for rec, (customer_id, after) in zip(records, plan_rows, strict=True):
        row = list(_FIELDS(rec))
        row[_CUSTOMER] = customer_id
        row.append(after)
        out.append(row)
    return json.dumps(out, separators=(",", ":"), default=_json_default)


@defer.inlineCallbacks
def write_batch(cur, records):
    """Write ``records`` (distinct keys) in the caller's transaction; fire with the keys stored."""
    keys_s = [r.session_id for r in records]
    keys_l = [r.leg for r in records]
    # Locks the accounts of every leg, even one found stored already: harmless (the lock is
    # what a fresh leg of that account would take) and it keeps this to one round trip.
    yield cur.execute(READ_AND_LOCK, {"sessions": sorted(set(keys_s)),
                                      "accounts": sorted({r.account_id for r in records})})
    done, accounts, customers = set(), {}, {}
    for tag, key, leg, customer_id, kind, control, balance in cur.fetchall():
        if tag == "x":
            done.add((key, leg))
        elif tag == "a":
            accounts[key] = (customer_id, kind, control, balance)
        else:
            customers[int(key)] = balance
    fresh = [r for r in records if (r.session_id, r.leg) not in done]
    if not fresh:
        yield cur.execute(RELEASE, (keys_s, keys_l))
        return set()
    rows, acc_delta, acc_used, cust_delta = _plan(fresh, accounts, customers)
    acc_ids, cust_ids = sorted(acc_delta), sorted(cust_delta)
    yield cur.execute(APPLY, (_document(fresh, rows), acc_ids, [acc_delta[i] for i in acc_ids],
                              [acc_used.get(i) for i in acc_ids], cust_ids, [cust_delta[i] for i in cust_ids],
                              keys_s, keys_l))
    stored = set(cur.fetchall())
    if len(stored) != len(fresh):
        # Another writer stored some of these legs after our check: roll back and retry, so
        # that nothing is charged twice.
        raise ConcurrentWrite(len(fresh) - len(stored))
    return stored


BASELINE_TABLE = "CREATE TEMP TABLE xdrs_copy_baseline (LIKE xdrs INCLUDING DEFAULTS) ON COMMIT DROP"
BASELINE_COPY = "COPY xdrs_copy_baseline ({cols}) FROM STDIN WITH (FORMAT csv, NULL '\\N')".format(
    cols=", ".join(COLUMNS))


def copy_baseline(conn, records) -> None:
    """Benchmark baseline: ``COPY`` the same rows into a scratch table (psycopg2, one commit).

    No lock, no idempotency check, no balance change: the floor a writer is measured against.
    """
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    for rec in records:
        out.writerow(["\\N" if v is None else v for v in (getattr(rec, c, None) for c in COLUMNS)])
    buf.seek(0)
    with conn, conn.cursor() as cur:
        cur.execute(BASELINE_TABLE)
        cur.copy_expert(BASELINE_COPY, buf)
