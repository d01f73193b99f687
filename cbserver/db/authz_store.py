"""The SQL of authorization: accounts, rating lists and balance reservations.

Only this module speaks SQL for ``cbserver.billing.authorize``. A reservation is stored in
one transaction that holds the row lock of the balance it draws on (``SELECT ... FOR
UPDATE`` on the account, or on the customer for a subordinate account) and reads the
balance and the live reservations of other calls. The caller decides on the balance it
read first without the lock; ``cb_reserve`` (sql/031) stores that decision in one round
trip only if the locked balance is still the same, else the caller decides again.
The xDR writer changes balances under the same row locks, so the two never interleave.
"""

from __future__ import annotations

from decimal import Decimal

from twisted.internet import defer

from cbserver.billing.domain import (
    RESERVATION_EXPIRY,
    AccountInfo,
    Balance,
    RatingEntry,
    ReservationDecision,
)

VOICE = "voice"

ACCOUNT_SQL = (
    "SELECT a.id, a.customer_id, a.product_id, a.account_type, a.balance_control, a.balance, "
    "a.credit_limit, a.status, a.activation_date, a.expiration_date, "
    "a.avail_after_first_use_days, a.avail_after_last_use_days, "
    "least(a.first_usage, a.first_recharge), greatest(a.last_usage, a.last_recharge), "
    "a.password_hash, a.internal, "
    "EXISTS (SELECT 1 FROM product_services s WHERE s.product_id = a.product_id "
    "        AND s.service = 'voice') AS voice, "
    "c.balance_control, c.balance, c.credit_limit, c.currency, p.currency "
    "FROM accounts a JOIN customers c ON c.id = a.customer_id "
    "JOIN products p ON p.id = a.product_id WHERE a.id = %s")

# The account, what other live sessions hold on its balance, and its rating entries: the
# PL/pgSQL function cb_account_for_call (sql/031), whose plan is kept per connection.
ACCOUNT_AND_ENTRIES_SQL = "SELECT * FROM cb_account_for_call(%s, %s, %s, %s, %s)"

# The entries in force at the node: the one naming it, else the one for any node ('*').
ENTRIES_SQL = (
    "SELECT access_code, tariff_id, overdraft_protection FROM cb_node_entries(%(node)s) "
    "WHERE product_id = %(product)s AND service = 'voice' AND access_code = ANY(%(codes)s)")

LOCK_ACCOUNT = "SELECT balance, credit_limit FROM accounts WHERE id = %s FOR UPDATE"
LOCK_CUSTOMER = "SELECT balance, credit_limit FROM customers WHERE id = %s FOR UPDATE"

# What other live calls hold on a balance (``key``), leaving out ``session``'s own holds: not
# expired, of a node that runs. Read under the balance's row lock, here and by refunds.
LIVE_HOLDS = (
    "SELECT coalesce(sum(r.amount), 0) AS held, count(DISTINCT r.session_id) AS sessions "
    "FROM balance_reservations r "
    "WHERE r.owner_key = %(key)s AND r.session_id <> %(session)s AND r.expires_at > now() "
    "AND cb_node_alive(r.instance_id, %(expiry)s)")

# After the row lock (a fresh snapshot): forget reservations of dead processes and this
# session's earlier ones, and sum what other live calls hold on the same balance. The
# DELETEs and the SELECT share one snapshot; the SELECT's WHERE excludes the same rows.
PREPARE_HOLD = (
    "WITH purge AS (DELETE FROM balance_reservations r WHERE r.owner_key = %(key)s AND ("
    "  r.expires_at <= now() OR NOT cb_node_alive(r.instance_id, %(expiry)s)) RETURNING 1), "
    "mine AS (DELETE FROM balance_reservations WHERE session_id = %(session)s RETURNING 1) "
    + LIVE_HOLDS)

DROP_SESSION = "DELETE FROM balance_reservations WHERE session_id = %s"

INSERT_RESERVATIONS = (
    "INSERT INTO balance_reservations (session_id, leg, account_id, owner_key, amount, currency, "
    "instance_id, expires_at) SELECT %(session)s, v.leg, %(account)s, %(key)s, v.amount, %(currency)s, "
    "%(instance)s, now() + make_interval(secs => %(lifetime)s) "
    "FROM unnest(%(legs)s::text[], %(amounts)s::numeric[]) AS v(leg, amount)")


def _account(row) -> AccountInfo:
    """An ``AccountInfo`` from an ``ACCOUNT_SQL`` row."""
    values = list(row)
    values[20] = values[20].strip()
    values[21] = values[21].strip()
    return AccountInfo(*values)


def fetch_account_sync(cursor, account_id: str) -> AccountInfo | None:
    """The account through a psycopg2 cursor, or None."""
    cursor.execute(ACCOUNT_SQL, (account_id,))
    row = cursor.fetchone()
    return None if row is None else _account(row)


def fetch_entries_sync(cursor, product_id: int, node: str, codes) -> list[RatingEntry]:
    """The product's voice rating entries in force at ``node`` (its own, else those for any
    node) whose access code is in ``codes``."""
    cursor.execute(ENTRIES_SQL, {"node": node, "product": product_id, "codes": list(codes)})
    return [RatingEntry(*r) for r in cursor.fetchall()]


@defer.inlineCallbacks
def fetch_account(db, account_id: str):
    """Fire with the ``AccountInfo`` of ``account_id``, or None."""
    rows = yield db.runQuery(ACCOUNT_SQL, (account_id,))
    return _account(rows[0]) if rows else None


@defer.inlineCallbacks
def fetch_account_and_entries(db, account_id: str, node: str, codes, session_id: str = "",
                              expiry: int = RESERVATION_EXPIRY):
    """Fire with ``(AccountInfo, [RatingEntry], Balance)``, or ``(None, [], None)``.

    The ``Balance`` is read without a lock (what ``reserve`` checks again under it): the
    balance and credit limit of the account, or of its customer for a subordinate account,
    and what live sessions other than ``session_id`` hold on it.
    """
    rows = yield db.runQuery(ACCOUNT_AND_ENTRIES_SQL, (account_id, session_id, expiry, node,
                                                       list(codes)))
    if not rows:
        return None, [], None
    return _fetched(rows[0])


RESERVE_FN = ("SELECT done, balance, credit_limit, reserved, open_calls FROM cb_reserve("
              "%(session)s, %(account)s, %(customer)s, %(subordinate)s, %(key)s, %(expiry)s, "
              "%(balance)s, %(credit)s, %(reserved)s, %(open)s, %(min_free)s, %(spend)s, "
              "%(legs)s::text[], "
              "%(amounts)s::numeric[], %(currency)s, %(instance)s, %(lifetime)s)")

#: Optimistic attempts before ``reserve`` takes the row lock across round trips instead.
OPTIMISTIC_ATTEMPTS = 4


def _legs(decision: ReservationDecision | None) -> list[tuple[str, Decimal]]:
    """The (leg, amount) pairs of a decision worth storing (zero amounts are not)."""
    if decision is None:
        return []
    return [(leg, amount) for leg, amount in (("A", decision.amount_a), ("B", decision.amount_b))
            if amount > 0]


@defer.inlineCallbacks
def reserve(db, *, session_id: str, account: AccountInfo, instance_id: str, decide,
            expiry: int = RESERVATION_EXPIRY, balance: Balance | None = None):
    """Lock the balance, call ``decide(Balance)``, store its ``ReservationDecision``.

    ``decide`` returns ``(result, decision)`` where ``decision`` may be None (hold nothing);
    it must be a pure function of the ``Balance``. Any earlier reservation of ``session_id``
    is replaced. Fires with ``result``.

    With ``balance`` (read by ``fetch_account_and_entries``) the decision is made on it
    first and handed to ``cb_reserve`` (sql/031), which stores it only if the balance under
    the row lock is still exactly that one, or still leaves the decision's ``min_free``: one
    round trip, the same outcome as deciding under the lock. A balance that moved meanwhile
    comes back fresh and the decision is made again on it; after ``OPTIMISTIC_ATTEMPTS`` the
    lock is held across round trips instead.
    """
    for _attempt in range(OPTIMISTIC_ATTEMPTS if balance is not None else 0):
        result, decision = decide(balance)
        rows = yield db.runQuery(RESERVE_FN, _reserve_params(
            session_id, account, balance, decision, instance_id, expiry))
        done, bal, credit, reserved, open_calls = rows[0]
        if done:
            return result
        balance = Balance(bal, credit, reserved, int(open_calls))
    result = yield _reserve_locked(db, session_id=session_id, account=account,
                                   instance_id=instance_id, decide=decide, expiry=expiry)
    return result


def _reserve_params(session_id: str, account: AccountInfo, balance: Balance, decision,
                    instance_id: str, expiry: int) -> dict:
    """cb_reserve's named parameters (cb_reserve_again adds node, codes and fingerprint)."""
    legs = _legs(decision)
    return {
        "session": session_id, "account": account.id, "customer": account.customer_id,
        "subordinate": account.subordinate, "key": account.owner_key, "expiry": expiry,
        "balance": balance.balance, "credit": balance.credit_limit,
        "reserved": balance.reserved_by_others, "open": balance.open_calls,
        "min_free": decision.min_free if decision is not None else None,
        "spend": account.spend_rule,
        "legs": [leg for leg, _ in legs], "amounts": [amount for _, amount in legs],
        "currency": decision.currency if decision is not None else "XXX",
        "instance": instance_id, "lifetime": decision.lifetime if decision is not None else 0}


RESERVE_AGAIN_FN = ("SELECT done FROM cb_reserve_again(%(session)s, %(account)s, %(node)s, "
                    "%(codes)s::text[], %(fingerprint)s, %(customer)s, %(subordinate)s, %(key)s, "
                    "%(expiry)s, %(balance)s, %(credit)s, %(reserved)s, %(open)s, %(min_free)s, "
                    "%(spend)s, %(legs)s::text[], %(amounts)s::numeric[], %(currency)s, "
                    "%(instance)s, %(lifetime)s)")


@defer.inlineCallbacks
def reserve_again(db, *, session_id: str, account: AccountInfo, node: str, codes,
                  instance_id: str, decide, balance: Balance, expiry: int = RESERVATION_EXPIRY):
    """Store ``decide(balance)``'s decision in one round trip if nothing it rests on moved.

    ``account`` (with its ``fingerprint``) and ``balance`` are what an earlier
    ``fetch_account_and_entries`` read for the same session; ``cb_reserve_again``
    (sql/functions/55) stores the decision only while the account, its customer, product
    and rating entries at ``node`` for ``codes`` fingerprint the same, and under the
    balance's row lock by ``cb_reserve``'s rules. Fires with the decision's result, or with
    None when nothing was stored (the caller reads everything again).
    """
    if account.fingerprint is None:
        return None
    result, decision = decide(balance)
    params = _reserve_params(session_id, account, balance, decision, instance_id, expiry)
    params.update(node=node, codes=list(codes), fingerprint=account.fingerprint)
    rows = yield db.runQuery(RESERVE_AGAIN_FN, params)
    return result if rows and rows[0][0] else None


AUTHORIZE_LEG_FN = ("SELECT * FROM cb_authorize_leg(%(account)s, %(session)s, %(expiry)s, "
                    "%(node)s, %(codes)s::text[], %(fingerprint)s, %(customer)s, %(subordinate)s, "
                    "%(key)s, %(balance)s, %(credit)s, %(reserved)s, %(open)s, %(min_free)s, "
                    "%(spend)s, %(legs)s::text[], %(amounts)s::numeric[], %(currency)s, "
                    "%(instance)s, %(lifetime)s)")


def _fetched(row):
    """``(AccountInfo, [RatingEntry], Balance)`` from a ``cb_account_for_call`` row."""
    *fields, reserved, open_calls, entries, fingerprint = row
    account = _account([*fields, fingerprint])
    owner = ((account.customer_balance, account.customer_credit_limit) if account.subordinate
             else (account.balance, account.credit_limit))
    return account, [RatingEntry(*e) for e in entries], Balance(*owner, reserved, int(open_calls))


@defer.inlineCallbacks
def fetch_and_reserve(db, *, session_id: str, account_id: str, node: str, codes,
                      instance_id: str, guess: AccountInfo, decide, balance: Balance,
                      expiry: int = RESERVATION_EXPIRY):
    """``fetch_account_and_entries`` and, in the same round trip, ``decide(balance)``'s
    decision stored as ``reserve`` would store it, if the account still fingerprints as
    ``guess`` (an earlier read of it, for the same ``node`` and ``codes``) did.

    ``cb_authorize_leg`` (sql/functions/58). Fires with ``(account, entries, balance,
    result)``: the fresh read as ``fetch_account_and_entries`` gives it, and ``result`` the
    decision's result when it was stored, else None (nothing stored: the caller decides on
    the fresh read and calls ``reserve``, as after ``fetch_account_and_entries``).
    """
    result, decision = decide(balance)
    params = _reserve_params(session_id, guess, balance, decision, instance_id, expiry)
    params.update(node=node, codes=list(codes), fingerprint=guess.fingerprint)
    rows = yield db.runQuery(AUTHORIZE_LEG_FN, params)
    if not rows:
        return None, [], None, None
    *read, done = rows[0]
    account, entries, fresh = _fetched(read)
    return account, entries, fresh, result if done else None


def _reserve_locked(db, *, session_id: str, account: AccountInfo, instance_id: str, decide,
                    expiry: int):
    """``reserve`` holding the row lock across round trips (decide runs under the lock)."""

    @defer.inlineCallbacks
    def interaction(cur):
        if account.subordinate:
            yield cur.execute(LOCK_CUSTOMER, (account.customer_id,))
        else:
            yield cur.execute(LOCK_ACCOUNT, (account.id,))
        row = cur.fetchone()
        if row is None:
            raise LookupError(f"account {account.id} vanished")
        key = account.owner_key
        yield cur.execute(PREPARE_HOLD, {"key": key, "session": session_id, "expiry": expiry})
        reserved, open_calls = cur.fetchone()
        result, decision = decide(Balance(row[0], row[1], reserved, int(open_calls)))
        legs = _legs(decision)
        if legs:
            yield cur.execute(INSERT_RESERVATIONS, {
                "session": session_id, "account": account.id, "key": key,
                "currency": decision.currency, "instance": instance_id,
                "legs": [leg for leg, _ in legs], "amounts": [amount for _, amount in legs],
                "lifetime": decision.lifetime})
        return result

    return db.runInteraction(interaction)


def release(db, session_id: str):
    """Drop every reservation of ``session_id`` (a call that ends without xDRs)."""
    return db.runOperation(DROP_SESSION, (session_id,))
