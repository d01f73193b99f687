"""legB's re-authorization in one round trip (``cb_reserve_again``) on the real PostgreSQL:
the same answer and the same holds as a fresh read when nothing moved, and a fresh read (as
strict as before) whenever the account, its entries or its balance moved since legA."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest
import pytest_twisted
from twisted.internet import reactor

from cbserver.billing.authorize import AuthorizationError, Authorizer, AuthRequest
from cbserver.db.stores import PostgresAuthorizationStore
from cbserver.db.tariff_loader import TariffCache
from tests.integration.xdr.helpers import query, reservations

pytestmark = pytest.mark.integration

US = "18005550100"
UK = "442071234567"


class Counting:
    """The pool, counting the statements (round trips) the store sends through it."""

    def __init__(self, db):
        self.db, self.sent = db, []

    def __getattr__(self, name):
        return getattr(self.db, name)

    def runQuery(self, sql, *args, **kw):  # noqa: N802 - the pool's own name
        self.sent.append(sql.split("(")[0].split()[-1])
        return self.db.runQuery(sql, *args, **kw)

    def runInteraction(self, fn, *args, **kw):  # noqa: N802
        self.sent.append("interaction")
        return self.db.runInteraction(fn, *args, **kw)


@pytest.fixture
def counted(db):
    """(authorizer, counting pool) on node1, as the conftest's authorizer."""
    pool = Counting(db)
    auth = Authorizer(PostgresAuthorizationStore(pool), TariffCache(db, reactor, ttl=0), reactor,
                      node="node1", special_charge=True)
    return auth, pool


def leg_b(first, session="s1", elapsed=30):
    connect = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=elapsed)
    return AuthRequest(session_id=session, account_id="cb1001", cli=US, cld=UK,
                       leg_a_elapsed=elapsed, leg_a_connect=connect, basis=first.basis)


async def fresh_answer(authorizer, request):
    """What a fresh read decides for ``request`` (its basis dropped, and by an authorizer
    with no earlier read of the account to decide on: two round trips)."""
    fresh = Authorizer(authorizer.store, authorizer.tariffs, reactor, node="node1",
                       special_charge=True)
    return await fresh.authorize(dataclasses.replace(request, basis=None))


@pytest_twisted.ensureDeferred
async def test_unchanged_is_one_statement_with_the_fresh_reads_answer_and_holds(counted, cat_dsn):
    authorizer, pool = counted
    first = await authorizer.authorize(AuthRequest(session_id="s1", account_id="cb1001",
                                                   cli=US, cld=UK))
    assert first.basis is not None and first.basis.account.fingerprint
    pool.sent.clear()
    request = leg_b(first)
    again = await authorizer.authorize(request)
    assert pool.sent == ["cb_reserve_again"]
    held = reservations(cat_dsn)
    # A fresh read of the same state decides the same figure and the same holds.
    fresh = await fresh_answer(authorizer, request)
    assert pool.sent[1:] == ["cb_account_for_call", "cb_reserve"]
    assert (again.max_seconds, again.reserved_a, again.reserved_b) == (
        fresh.max_seconds, fresh.reserved_a, fresh.reserved_b)
    assert held == reservations(cat_dsn) and len(held) == 2


@pytest_twisted.ensureDeferred
async def test_an_account_suspended_after_lega_is_refused_at_legb(counted, cat_dsn):
    authorizer, pool = counted
    first = await authorizer.authorize(AuthRequest(session_id="s1", account_id="cb1001",
                                                   cli=US, cld=UK))
    before = reservations(cat_dsn)
    query(cat_dsn, "UPDATE accounts SET status = 'inactive' WHERE id = 'cb1001'")
    pool.sent.clear()
    with pytest.raises(AuthorizationError) as info:
        await authorizer.authorize(leg_b(first))
    assert info.value.reason == "inactive"
    # The fingerprint differed: nothing stored, then the fresh read refused, as before.
    assert pool.sent == ["cb_reserve_again", "cb_account_for_call"]
    assert reservations(cat_dsn) == before


@pytest_twisted.ensureDeferred
async def test_a_rating_entry_changed_after_lega_is_read_afresh(counted, cat_dsn):
    authorizer, pool = counted
    first = await authorizer.authorize(AuthRequest(session_id="s1", account_id="cb1001",
                                                   cli=US, cld=UK))
    query(cat_dsn, "UPDATE rating_entries SET overdraft_protection = NOT overdraft_protection "
                   "WHERE access_code = 'WEBCALLBACK'")
    pool.sent.clear()
    again = await authorizer.authorize(leg_b(first))
    assert pool.sent[:2] == ["cb_reserve_again", "cb_account_for_call"]
    assert again.entry.overdraft_protection != first.entry.overdraft_protection


@pytest_twisted.ensureDeferred
async def test_a_balance_spent_meanwhile_is_decided_again_on_the_locked_balance(counted, cat_dsn):
    authorizer, pool = counted
    first = await authorizer.authorize(AuthRequest(session_id="s1", account_id="cb1001",
                                                   cli=US, cld=UK))
    # Another node's xDR took 9 of the 10 USD: legA's figures no longer hold.
    query(cat_dsn, "UPDATE accounts SET balance = balance - 9 WHERE id = 'cb1001'")
    pool.sent.clear()
    request = leg_b(first)
    again = await authorizer.authorize(request)
    assert pool.sent[0] == "cb_reserve_again" and "cb_account_for_call" in pool.sent
    assert again.budget == Decimal("1.00")
    assert again.max_seconds < first.max_seconds
    fresh = await fresh_answer(authorizer, request)
    assert again.max_seconds == fresh.max_seconds
    total = sum(r[3] for r in reservations(cat_dsn))
    assert total <= Decimal("1.00")
