"""legA's authorization in one round trip (``cb_authorize_leg``, sql/functions/58) on the real
PostgreSQL: decided on the node's last read of the account and stored only while that read
still holds (fingerprint, and ``cb_reserve``'s rules under the row lock), else decided on
the fresh read the same round trip returned, with the same answer and holds as before."""

from __future__ import annotations

from decimal import Decimal

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from cbserver.billing.authorize import AuthorizationError, Authorizer, AuthRequest
from cbserver.db.stores import PostgresAuthorizationStore
from cbserver.db.tariff_loader import TariffCache
from tests.integration.xdr.helpers import query, reservations
from tests.integration.xdr.test_authz_again import Counting

pytestmark = pytest.mark.integration

US = "18005550100"
UK = "442071234567"


def new_authorizer(pool):
    """An authorizer on node1 with no earlier read of any account (its tariffs are read
    past the counting pool: only the authorization's statements are counted)."""
    tariffs = TariffCache(getattr(pool, "db", pool), reactor, ttl=0)
    return Authorizer(PostgresAuthorizationStore(pool), tariffs, reactor, node="node1",
                      special_charge=True)


@pytest.fixture
def counted(db):
    """(authorizer, counting pool)."""
    pool = Counting(db)
    return new_authorizer(pool), pool


def leg_a(session, **kw):
    return AuthRequest(session_id=session, account_id="cb1001", cli=US, cld=UK, **kw)


def held(cat_dsn, session):
    """(leg, amount) of a session's holds."""
    return [(r[1], r[3]) for r in reservations(cat_dsn) if r[0] == session]


def figures(auth):
    return auth.max_seconds, auth.reserved_a, auth.reserved_b, auth.budget, auth.reason


@pytest_twisted.ensureDeferred
async def test_a_second_lega_on_an_unchanged_account_is_one_statement(counted, db, cat_dsn):
    authorizer, pool = counted
    first = await authorizer.authorize(leg_a("s1"))
    assert pool.sent == ["cb_account_for_call", "cb_reserve"]  # nothing read before: two
    await authorizer.release("s1")
    pool.sent.clear()
    second = await authorizer.authorize(leg_a("s2"))
    assert pool.sent == ["cb_authorize_leg"]
    assert figures(second) == figures(first)
    assert held(cat_dsn, "s2") == [("A", second.reserved_a), ("B", second.reserved_b)]
    # legB re-authorizes on what this one decided on, in one round trip as before.
    assert second.basis is not None and second.basis.account.fingerprint
    # A node that never read the account decides the same, in two round trips.
    await authorizer.release("s2")
    fresh = await new_authorizer(pool).authorize(leg_a("s3"))
    assert pool.sent[1:] == ["cb_account_for_call", "cb_reserve"]
    assert figures(fresh) == figures(second)
    assert held(cat_dsn, "s3") == [("A", second.reserved_a), ("B", second.reserved_b)]


@pytest_twisted.ensureDeferred
async def test_other_calls_holds_are_counted_the_guess_refused_then_the_fresh_read_decides(
        counted, cat_dsn):
    authorizer, pool = counted
    first = await authorizer.authorize(leg_a("s1"))  # holds most of the 10 USD
    pool.sent.clear()
    second = await authorizer.authorize(leg_a("s2"))
    # The guess (nothing held) was refused under the lock; the same round trip's fresh read
    # decided, stored by cb_reserve: two round trips, as before.
    assert pool.sent == ["cb_authorize_leg", "cb_reserve"]
    assert second.budget == Decimal("10.00") - first.reserved_a - first.reserved_b
    total = sum(r[3] for r in reservations(cat_dsn))
    assert total <= Decimal("10.00")


@pytest_twisted.ensureDeferred
async def test_a_balance_spent_by_another_node_is_decided_on_the_locked_figures(counted, cat_dsn):
    authorizer, pool = counted
    await authorizer.authorize(leg_a("s1"))
    await authorizer.release("s1")
    query(cat_dsn, "UPDATE accounts SET balance = balance - 9 WHERE id = 'cb1001'")
    pool.sent.clear()
    second = await authorizer.authorize(leg_a("s2"))
    assert pool.sent == ["cb_authorize_leg", "cb_reserve"]
    assert second.budget == Decimal("1.00")
    assert sum(amount for _leg, amount in held(cat_dsn, "s2")) <= Decimal("1.00")


@pytest_twisted.ensureDeferred
async def test_an_account_suspended_since_the_last_read_is_refused_and_nothing_is_held(
        counted, cat_dsn):
    authorizer, pool = counted
    await authorizer.authorize(leg_a("s1"))
    await authorizer.release("s1")
    query(cat_dsn, "UPDATE accounts SET status = 'inactive' WHERE id = 'cb1001'")
    pool.sent.clear()
    with pytest.raises(AuthorizationError) as info:
        await authorizer.authorize(leg_a("s2"))
    assert info.value.reason == "inactive"
    assert pool.sent == ["cb_authorize_leg"] and reservations(cat_dsn) == []
    # The refusal's read is remembered: the next request is decided on it (refused) and the
    # round trip only reads.
    pool.sent.clear()
    with pytest.raises(AuthorizationError):
        await authorizer.authorize(leg_a("s3"))
    assert pool.sent == ["cb_authorize_leg"] and reservations(cat_dsn) == []


@pytest_twisted.ensureDeferred
async def test_a_rating_entry_changed_since_the_last_read_is_decided_afresh(counted, cat_dsn):
    authorizer, pool = counted
    first = await authorizer.authorize(leg_a("s1"))
    await authorizer.release("s1")
    query(cat_dsn, "UPDATE rating_entries SET overdraft_protection = NOT overdraft_protection "
                   "WHERE access_code = 'WEBCALLBACK'")
    pool.sent.clear()
    second = await authorizer.authorize(leg_a("s2"))
    assert pool.sent == ["cb_authorize_leg", "cb_reserve"]  # fingerprint differed: not tried
    assert second.entry.overdraft_protection != first.entry.overdraft_protection


@pytest_twisted.ensureDeferred
async def test_a_request_with_a_password_never_uses_the_last_read(counted, cat_dsn):
    authorizer, pool = counted
    await authorizer.authorize(leg_a("s1"))
    await authorizer.release("s1")
    pool.sent.clear()
    auth = await authorizer.authorize(leg_a("s2", check_password=True))  # cb1001 has none
    assert pool.sent == ["cb_account_for_call", "cb_reserve"] and auth.max_seconds > 0


@pytest_twisted.ensureDeferred
async def test_time_capped_decisions_stand_beside_other_calls_in_one_statement(counted, cat_dsn):
    authorizer, pool = counted
    query(cat_dsn, "UPDATE accounts SET balance = 1000000 WHERE id = 'cb1001'")
    first = await authorizer.authorize(leg_a("s1"))
    assert first.max_seconds == authorizer.max_call_seconds
    pool.sent.clear()
    # s1 still holds: the guess's figures are not the locked ones, but a decision capped by
    # time stands for any free budget that pays for it (cb_reserve's p_min_free).
    second = await authorizer.authorize(leg_a("s2"))
    assert pool.sent == ["cb_authorize_leg"]
    assert figures(second)[:3] == figures(first)[:3]
    assert len(held(cat_dsn, "s1")) == len(held(cat_dsn, "s2")) == 2


@pytest_twisted.ensureDeferred
async def test_two_nodes_deciding_on_their_last_reads_never_overspend(db, cat_dsn):
    nodes = [new_authorizer(db), new_authorizer(db)]
    for i, node in enumerate(nodes):  # each node reads the account once
        await node.authorize(leg_a(f"prime{i}"))
        await node.release(f"prime{i}")
    query(cat_dsn, "UPDATE accounts SET balance = 3 WHERE id = 'cb1001'")
    results = await defer.DeferredList(
        [nodes[i % 2].authorize(leg_a(f"race{i}")) for i in range(8)], consumeErrors=True)
    auths = [r for ok, r in results if ok]
    assert len(auths) == 8  # every one authorized (some with no time left), none failed
    rows = reservations(cat_dsn)
    assert sum(r[3] for r in rows) <= Decimal("3.00")
    for i, auth in enumerate(auths):
        mine = dict(held(cat_dsn, f"race{i}"))
        assert mine.get("A", Decimal(0)) == auth.reserved_a
        assert mine.get("B", Decimal(0)) == auth.reserved_b


@pytest_twisted.ensureDeferred
async def test_the_function_reads_like_cb_account_for_call_and_stores_nothing_unasked(
        db, cat_dsn):
    row = query(cat_dsn, "SELECT * FROM cb_account_for_call('cb1001', 'x', 60, 'node1', "
                         "ARRAY['WEBCALLBACK', '', 'CALLBACK_FAIL'])")[0]
    fused = query(cat_dsn, "SELECT * FROM cb_authorize_leg('cb1001', 'x', 60, 'node1', "
                           "ARRAY['WEBCALLBACK', '', 'CALLBACK_FAIL'], NULL, 1, false, "
                           "'account:cb1001', 10, NULL, 0, 0, NULL, 'balance', ARRAY['A'], "
                           "ARRAY[1.0], 'USD', %s, 60)", (db.instance_id,))[0]
    assert fused[:-1] == row and fused[-1] is None and reservations(cat_dsn) == []
    wrong = query(cat_dsn, "SELECT done FROM cb_authorize_leg('cb1001', 'x', 60, 'node1', "
                           "ARRAY['WEBCALLBACK', '', 'CALLBACK_FAIL'], 'not-the-fingerprint', 1, "
                           "false, 'account:cb1001', 10, NULL, 0, 0, NULL, 'balance', "
                           "ARRAY['A'], ARRAY[1.0], 'USD', %s, 60)", (db.instance_id,))
    assert wrong == [(None,)] and reservations(cat_dsn) == []
    right = query(cat_dsn, "SELECT done FROM cb_authorize_leg('cb1001', 'x', 60, 'node1', "
                           "ARRAY['WEBCALLBACK', '', 'CALLBACK_FAIL'], %s, 1, false, "
                           "'account:cb1001', 10, NULL, 0, 0, NULL, 'balance', ARRAY['A'], "
                           "ARRAY[1.0], 'USD', %s, 60)", (row[-1], db.instance_id))
    assert right == [(True,)] and [r[:2] for r in reservations(cat_dsn)] == [("x", "A")]
    gone = query(cat_dsn, "SELECT * FROM cb_authorize_leg('nobody', 'y', 60, 'node1', "
                          "ARRAY['WEBCALLBACK'], %s, 1, false, 'account:nobody', 10, NULL, 0, 0, "
                          "NULL, 'balance', ARRAY['A'], ARRAY[1.0], 'USD', %s, 60)",
                 (row[-1], db.instance_id))
    assert gone == [] and len(reservations(cat_dsn)) == 1

