"""Authorization against the real PostgreSQL: refusals with their reason, the maximum duration,
tariff selection by access code, reservations and overdraft protection."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import pytest_twisted
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from cbserver.billing.authorize import AuthorizationError, Authorizer, AuthRequest, IAuthorizer
from cbserver.billing.rating import price_leg
from cbserver.db.stores import PostgresAuthorizationStore
from cbserver.db.tariff_loader import TariffCache
from cbserver.errors import DatabaseUnavailable
from tests.integration.xdr.helpers import query, reservations

pytestmark = pytest.mark.integration

US = "18005550100"   # prefix 1: 60/6 at 0.10/0.05
UK = "442071234567"  # prefix 44: 1/1 at 0.60 = 1 cent a second


def req(account="cb1001", session="s1", cli=US, cld=UK, **kw):
    return AuthRequest(session_id=session, account_id=account, cli=cli, cld=cld, **kw)


async def refused(authorizer, request) -> str:
    with pytest.raises(AuthorizationError) as info:
        await authorizer.authorize(request)
    return info.value.reason


def test_authorizer_provides_the_interface(authorizer):
    assert verifyObject(IAuthorizer, authorizer)


@pytest_twisted.ensureDeferred
async def test_max_duration_is_the_largest_t_that_fits_the_debit_balance(authorizer, cat_dsn):
    auth = await authorizer.authorize(req())
    assert auth.reason is None and auth.budget == Decimal("10.00")
    t = auth.max_seconds
    a, b = auth.leg_a, auth.leg_b
    assert a.amount(t) + b.amount(t) <= Decimal(10) < a.amount(t + 1) + b.amount(t + 1)
    # 10 USD at 1 cent/s for legB plus legA (0.10 first minute, 0.05/min after) -> 918 s (0.815 + 9.18)
    assert t == 918
    assert auth.reserved_a == a.amount(t)  # above the CALLBACK_FAIL hold, 0.50 for 60 s
    assert reservations(cat_dsn) == [("s1", "A", "cb1001", a.amount(t)), ("s1", "B", "cb1001", b.amount(t))]
    assert auth.tariff.name == "Callback" and auth.currency == "USD"


@pytest_twisted.ensureDeferred
async def test_other_open_calls_reservations_reduce_the_figure(authorizer, cat_dsn):
    first = await authorizer.authorize(req(session="s1"))
    second = await authorizer.authorize(req(session="s2"))
    held = first.reserved_a + first.reserved_b
    assert second.budget == Decimal("10.00") - held
    assert second.max_seconds == 0 and second.reason == "no_balance"
    assert [r[0] for r in reservations(cat_dsn)] == ["s1", "s1"]  # s2 holds nothing


@pytest_twisted.ensureDeferred
async def test_reauthorizing_before_legb_replaces_the_sessions_reservation(authorizer, cat_dsn):
    first = await authorizer.authorize(req())
    connect = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=100)
    again = await authorizer.authorize(req(leg_a_elapsed=100, leg_a_connect=connect))
    t = again.max_seconds
    assert t < first.max_seconds
    fail = again.fail_leg_a.amount(100 + 60)  # CALLBACK_FAIL for the time so far + legB's ring time
    assert fail == Decimal("1.50000")
    assert max(again.leg_a.amount(100 + t), fail) + again.leg_b.amount(t) <= Decimal(10)
    assert max(again.leg_a.amount(101 + t), fail) + again.leg_b.amount(t + 1) > Decimal(10)
    assert (again.reserved_a, again.reserved_b) == (fail, again.leg_b.amount(t))
    assert len(reservations(cat_dsn)) == 2


@pytest_twisted.ensureDeferred
async def test_release_drops_the_sessions_reservations(authorizer, cat_dsn):
    await authorizer.authorize(req())
    await authorizer.release("s1")
    assert reservations(cat_dsn) == []


@pytest_twisted.ensureDeferred
async def test_reservations_of_a_dead_process_expire(db, cat_dsn):
    dead = Authorizer(PostgresAuthorizationStore(db), TariffCache(db, reactor), reactor, node="node1",
                      instance_id="00000000-0000-0000-0000-000000000001")
    query(cat_dsn, "INSERT INTO server_nodes (node, instance_id, hostname, pid, version, last_seen) "
                   "VALUES ('node1', '00000000-0000-0000-0000-000000000001', 'h', 1, 'x', "
                   "now() - interval '61 seconds')")
    live = Authorizer(PostgresAuthorizationStore(db), TariffCache(db, reactor), reactor, node="node1")
    # The dead node's reservation is written directly (its heartbeat is already too old).
    await dead.authorize(req(session="dead"))
    auth = await live.authorize(req(session="live"))
    assert auth.budget == Decimal("10.00")  # the dead process's hold is ignored ...
    assert [r[0] for r in reservations(cat_dsn)] == ["live", "live"]  # ... and purged


@pytest_twisted.ensureDeferred
async def test_credit_account_may_spend_limit_minus_owed(authorizer):
    auth = await authorizer.authorize(req(account="cb1002"))
    assert auth.budget == Decimal("4.00")


@pytest_twisted.ensureDeferred
async def test_subordinate_account_spends_from_its_customer(authorizer, cat_dsn):
    auth = await authorizer.authorize(req(account="cb1003"))
    assert auth.budget == Decimal("3")  # Corp: credit limit 100, owes 97
    assert query(cat_dsn, "SELECT DISTINCT owner_key FROM balance_reservations") == [("customer:2",)]


@pytest_twisted.ensureDeferred
async def test_small_balance_gives_a_short_call_and_empty_balance_gives_no_balance(db, cat_dsn):
    authorizer = Authorizer(PostgresAuthorizationStore(db),
                            TariffCache(db, reactor), reactor, node="node1")  # no CALLBACK_FAIL
    auth = await authorizer.authorize(req(account="cb1010"))  # 0.50 USD
    assert 0 < auth.max_seconds < 60
    query(cat_dsn, "UPDATE accounts SET balance = 0.05 WHERE id = 'cb1010'")
    auth = await authorizer.authorize(req(account="cb1010", session="s2"))
    assert (auth.max_seconds, auth.reason) == (0, "no_balance")


@pytest_twisted.ensureDeferred
async def test_refusals_name_their_reason(authorizer):
    assert await refused(authorizer, req(account="nobody")) == "unknown_account"
    assert await refused(authorizer, req(account="cb1004")) == "inactive"
    assert await refused(authorizer, req(account="cb1005")) == "expired"
    assert await refused(authorizer, req(account="cb1011")) == "expired"  # 30 days after first use
    assert await refused(authorizer, req(account="cb1006")) == "no_voice_service"
    assert await refused(authorizer, req(cld="4930123456")) == "not_rated"  # only a future rate
    assert await refused(authorizer, req(cld="33123456")) == "not_rated"  # no rate at all
    assert await refused(authorizer, req(cld="call me")) == "invalid_number"
    assert await refused(authorizer, req(cli="")) == "invalid_number"
    assert await refused(authorizer, req(access_code="OTHER")) == "no_tariff"


@pytest_twisted.ensureDeferred
async def test_activation_date_in_the_future_is_inactive(authorizer, cat_dsn):
    query(cat_dsn, "UPDATE accounts SET activation_date = now() + interval '1 day' WHERE id = 'cb1001'")
    assert await refused(authorizer, req()) == "inactive"


@pytest_twisted.ensureDeferred
async def test_a_call_may_not_outlast_the_accounts_expiration(authorizer, cat_dsn):
    # The balance pays for 918 s (see above), but the account expires in 5 minutes: the call
    # is cut there, and the money held is what those 300 s cost.
    query(cat_dsn, "UPDATE accounts SET expiration_date = now() + interval '300 seconds' "
                   "WHERE id = 'cb1001'")
    auth = await authorizer.authorize(req())
    assert 295 <= auth.max_seconds <= 300 and auth.reason is None
    assert auth.reserved_b == auth.leg_b.amount(auth.max_seconds)


@pytest_twisted.ensureDeferred
async def test_password_checked_only_where_the_mode_requires_it(authorizer):
    assert await refused(authorizer, req(account="cb1007", check_password=True, password="nope")) \
        == "bad_password"
    assert await refused(authorizer, req(account="cb1007", check_password=True)) == "bad_password"
    ok = await authorizer.authorize(req(account="cb1007", check_password=True, password="opensesame"))
    assert ok.max_seconds > 0
    simple = await authorizer.authorize(req(account="cb1007", session="s2"))
    assert simple.account.id == "cb1007"


@pytest_twisted.ensureDeferred
async def test_entry_with_empty_access_code_is_the_fallback(authorizer):
    auth = await authorizer.authorize(req(account="cb1008", cli=UK, cld=UK))
    assert auth.tariff.name == "Night" and auth.entry.access_code == ""


@pytest_twisted.ensureDeferred
async def test_callback_fail_tariff_is_carried_for_leg_a(authorizer, db, cat_dsn):
    auth = await authorizer.authorize(req())
    assert auth.fail_tariff.name == "CallbackFail"
    assert auth.fail_leg_a.rate.first_price == Decimal("0.50")
    # A costly CALLBACK_FAIL charge is held for legA and bounds the figure.
    await authorizer.release("s1")
    query(cat_dsn, "UPDATE rates SET first_price = 6, next_price = 6 WHERE tariff_id = 2")
    dear = await authorizer.authorize(req(session="s3"))
    assert dear.reserved_a == Decimal("6.00000")
    assert dear.reserved_a + dear.leg_b.amount(dear.max_seconds) <= dear.budget
    assert dear.max_seconds == 400  # 10 - 6 = 4 USD of legB at 1 cent a second
    plain = Authorizer(PostgresAuthorizationStore(db), TariffCache(db, reactor), reactor, node="node1")
    auth = await plain.authorize(req(session="s2"))
    assert auth.fail_tariff is None


@pytest_twisted.ensureDeferred
async def test_a_callback_fail_tariff_without_a_rate_for_lega_does_not_refuse_the_call(
        authorizer, cat_dsn):
    # The special tariff cannot price legA's number; the callback tariff can. The callback
    # goes ahead (legA would be charged by the callback tariff if legB fails).
    query(cat_dsn, "DELETE FROM rates WHERE tariff_id = 2")
    auth = await authorizer.authorize(req())
    assert auth.max_seconds == 918 and auth.reason is None
    assert auth.fail_tariff is None and auth.fail_leg_a is None
    assert auth.tariff.name == "Callback"


@pytest_twisted.ensureDeferred
async def test_overdraft_protection_allows_one_call_with_the_whole_balance(authorizer):
    first = await authorizer.authorize(req(account="cb1009", session="p1"))
    assert first.budget == Decimal("10.00") and first.max_seconds == 918
    second = await authorizer.authorize(req(account="cb1009", session="p2"))
    assert (second.max_seconds, second.reason) == (0, "concurrent_call")
    await authorizer.release("p1")
    third = await authorizer.authorize(req(account="cb1009", session="p3"))
    assert third.max_seconds == 918


@pytest_twisted.ensureDeferred
async def test_other_node_has_no_rating_entry(db):
    elsewhere = Authorizer(PostgresAuthorizationStore(db), TariffCache(db, reactor), reactor, node="node9")
    with pytest.raises(AuthorizationError) as info:
        await elsewhere.authorize(req())
    assert info.value.reason == "no_tariff"


@pytest_twisted.ensureDeferred
async def test_pricers_match_the_rating_core(authorizer, db):
    auth = await authorizer.authorize(req())
    direct = price_leg(auth.tariff.rates, UK, dt.datetime.now(dt.UTC))
    assert direct.rate == auth.leg_b.rate


@pytest_twisted.ensureDeferred
async def test_database_away_fails_with_database_unavailable(db):
    authorizer = Authorizer(PostgresAuthorizationStore(db), TariffCache(db, reactor), reactor, node="node1")
    await db.stopService()
    with pytest.raises(DatabaseUnavailable):
        await authorizer.authorize(req())
    db.startService()
    await db.when_ready()


@pytest_twisted.ensureDeferred
async def test_refused_legb_keeps_holding_what_lega_has_cost(authorizer, cat_dsn):
    await authorizer.authorize(req())
    query(cat_dsn, "UPDATE accounts SET balance = 0.10 WHERE id = 'cb1001'")
    connect = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=300)
    again = await authorizer.authorize(req(leg_a_elapsed=300, leg_a_connect=connect))
    assert (again.max_seconds, again.reason) == (0, "no_balance")
    owed = max(again.leg_a.amount(300), again.fail_leg_a.amount(360))
    assert reservations(cat_dsn) == [("s1", "A", "cb1001", owed)]
    assert again.reserved_a == owed and again.reserved_b == 0


@pytest_twisted.ensureDeferred
async def test_a_hold_outliving_its_call_expires_even_if_its_process_lives(db, cat_dsn):
    leaky = Authorizer(PostgresAuthorizationStore(db), TariffCache(db, reactor), reactor, node="node1",
                       hold_margin=-100_000)
    await leaky.authorize(req(session="leaked"))  # a hold whose lifetime is already over
    held = query(cat_dsn, "SELECT expires_at < now() FROM balance_reservations")
    assert held == [(True,), (True,)]
    live = Authorizer(PostgresAuthorizationStore(db), TariffCache(db, reactor), reactor, node="node1")
    auth = await live.authorize(req(session="fresh"))
    assert auth.budget == Decimal("10.00")
    assert [r[0] for r in reservations(cat_dsn)] == ["fresh", "fresh"]
    lifetime = query(cat_dsn, "SELECT min(expires_at - created_at) FROM balance_reservations")[0][0]
    assert lifetime.total_seconds() == pytest.approx(auth.max_seconds + 60 + 600, abs=2)


async def _stale_reserve(db, cat_dsn, stale, attempts=None, monkeypatch=None, min_free=None):
    """Reserve 1.00 for session 'late' on cb1001 deciding from ``stale``; the Balances seen."""
    from cbserver.db import authz_store

    if attempts is not None:
        monkeypatch.setattr(authz_store, "OPTIMISTIC_ATTEMPTS", attempts)
    account, _entries, fresh = await authz_store.fetch_account_and_entries(
        db, "cb1001", "node1", [""], "late")
    seen = []

    def decide(balance):
        seen.append(balance)
        decision = authz_store.ReservationDecision(Decimal("1.00"), Decimal(0), "USD",
                                                   min_free=min_free)
        return balance, decision

    await authz_store.reserve(db, session_id="late", account=account, instance_id=db.instance_id,
                              decide=decide, balance=stale(fresh))
    return fresh, seen


@pytest_twisted.ensureDeferred
async def test_a_decision_on_a_balance_that_moved_is_made_again_on_the_locked_one(
        authorizer, db, cat_dsn):
    await authorizer.authorize(req(session="other"))  # another call holds money on cb1001
    fresh, seen = await _stale_reserve(
        db, cat_dsn, lambda b: stale_copy(b, reserved_by_others=Decimal(0), open_calls=0))
    # First decision on the stale figures, refused by cb_reserve; second on the locked ones.
    assert [b.reserved_by_others for b in seen] == [Decimal(0), fresh.reserved_by_others]
    assert fresh.reserved_by_others > 0 and seen[1] == fresh
    assert sorted(r[0] for r in reservations(cat_dsn)).count("late") == 1


@pytest_twisted.ensureDeferred
async def test_without_optimistic_attempts_left_the_lock_is_held_across_round_trips(
        authorizer, db, cat_dsn, monkeypatch):
    await authorizer.authorize(req(session="other"))
    fresh, seen = await _stale_reserve(
        db, cat_dsn, lambda b: stale_copy(b, balance=Decimal("99")), attempts=1,
        monkeypatch=monkeypatch)
    assert seen[0].balance == Decimal("99")  # the optimistic try, refused
    assert seen[1] == fresh  # decided under the row lock
    assert sorted(r[0] for r in reservations(cat_dsn)).count("late") == 1


def stale_copy(fresh, **changes):
    """``fresh`` with some fields replaced (a Balance read before others moved it)."""
    import dataclasses

    return dataclasses.replace(fresh, **changes)


@pytest_twisted.ensureDeferred
async def test_a_decision_that_holds_for_any_large_enough_budget_is_not_made_again(
        authorizer, db, cat_dsn):
    query(cat_dsn, "UPDATE accounts SET balance = 1000.00 WHERE id = 'cb1001'")
    other = await authorizer.authorize(req(session="other"))  # a 4-hour call: holds ~150
    assert other.max_seconds == authorizer.max_call_seconds
    fresh, seen = await _stale_reserve(
        db, cat_dsn, lambda b: stale_copy(b, reserved_by_others=Decimal(0), open_calls=0),
        min_free=Decimal("1.00"))
    assert len(seen) == 1  # stale figures, but 1000.00 minus the others' holds still pays 1.00
    assert sorted(r[0] for r in reservations(cat_dsn)).count("late") == 1


@pytest_twisted.ensureDeferred
async def test_a_min_free_the_locked_balance_no_longer_leaves_is_decided_again(
        authorizer, db, cat_dsn):
    await authorizer.authorize(req(session="other"))  # holds almost all of cb1001's 10.00
    fresh, seen = await _stale_reserve(
        db, cat_dsn, lambda b: stale_copy(b, reserved_by_others=Decimal(0), open_calls=0),
        min_free=Decimal("5.00"))
    assert len(seen) == 2 and seen[1] == fresh
