"""The request's limits and its account's slot in one statement (``cb_admit``), on the real
PostgreSQL: the database's refusal is the limiter's (``sliding_count``), a refused request
takes no slot, and two nodes racing never take more slots than the cap."""

from __future__ import annotations

import uuid
from dataclasses import replace as dataclasses_replace

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from cbserver.callback.admission import (
    ConcurrencyGauge,
    RateLimited,
    RateLimiter,
    SlotClaim,
    sliding_count,
)
from cbserver.callback.api import CallbackRequest
from cbserver.config import LimitsConfig
from cbserver.db.limits_store import PostgresLimitStore

pytestmark = pytest.mark.integration

WINDOW = 600


def slot_rows(dsn, account: str) -> int:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM callback_slots WHERE account_id = %s", (account,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def seed(dsn, kind: str, key: str, hits: int, previous: int, start: int) -> None:
    """Counters of ``(kind, key)``: ``hits`` in the window at ``start``, ``previous`` before."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for window, n in ((start, hits), (start - WINDOW, previous)):
                if n:
                    cur.execute("INSERT INTO rate_limit_counters (kind, key, window_start, hits) "
                                "VALUES (%s, %s, %s, %s)", (kind, key, window, n))
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_the_database_refuses_exactly_when_the_limiter_arithmetic_does(pools, pg_dsn):
    store = PostgresLimitStore(pools[0])
    start = 1_800_000_000 - 1_800_000_000 % WINDOW
    caps = {"client": 5, "auth_client": 3}
    # Elapsed times on and around the points where a weighted previous window crosses a cap.
    elapsed_values = [0.0, 0.1, 120.0, 199.99999, 200.0, 299.5, 300.0, 400.0, 599.999]
    seen = {True: 0, False: 0}
    n = 0
    for hits in (0, 2, 4, 5):
        for previous in (0, 3, 6, 9):
            for elapsed in elapsed_values:
                n += 1
                key = f"198.51.100.{n}"
                seed(pg_dsn, "client", key, hits, previous, start)
                seed(pg_dsn, "auth_client", key, max(0, hits - 2), previous // 3, start)
                account = f"cbadmit{n}"
                claim = SlotClaim(str(uuid.uuid4()), account, 10, 60, None)
                counted, peeked, refused, taken = await store.admit(
                    [("client", key)], [("auth_client", key)], start, start - WINDOW, elapsed,
                    caps, claim)
                assert counted == {"client": (hits + 1, previous)}
                assert peeked == {"auth_client": (max(0, hits - 2), previous // 3)}
                expect = (sliding_count(*counted["client"], elapsed, WINDOW) > caps["client"]
                          or sliding_count(*peeked["auth_client"], elapsed, WINDOW) + 1
                          > caps["auth_client"])
                assert refused == expect, (hits, previous, elapsed)
                # A refused request takes no slot; an admitted one takes its slot.
                assert taken is (None if expect else True)
                assert slot_rows(pg_dsn, account) == (0 if expect else 1)
                seen[expect] += 1
    assert seen[True] > 20 and seen[False] > 20  # both answers were exercised


def requests(phone: str, n: int, account: str = "cb1001"):
    return [CallbackRequest(application="A", mode="simple", phone=phone, account=account,
                            client_address="192.0.2.44") for _ in range(n)]


async def answers(calls):
    """(kind, retry_after), or 'ok', for each call, one after the other."""
    out = []
    for call in calls:
        try:
            await call()
            out.append("ok")
        except RateLimited as e:
            out.append((e.kind, e.retry_after))
    return out


@pytest_twisted.ensureDeferred
async def test_check_and_claim_answers_as_check_then_acquire(pools, pg_dsn):
    limits = LimitsConfig(per_client=1000, per_phone=4, per_account=1000, window=WINDOW,
                          concurrent_per_account=1000)
    store = PostgresLimitStore(pools[0])
    clock = Clock()
    clock.advance(1_800_000_000 + 450.5)
    limiter, gauge = RateLimiter(store, limits, clock), ConcurrencyGauge(store, limits)
    old = [lambda r=r: limiter.check(r) for r in requests("15550101", 7, "cbold")]
    new = [lambda r=r: limiter.check_and_claim(r, gauge.claim("cbnew"))
           for r in requests("15550102", 7, "cbnew")]
    before = await answers(old)
    after = await answers(new)
    assert before == after
    assert before[:4] == ["ok"] * 4 and all(a[0] == "phone" and a[1] >= 1 for a in before[4:])
    # Only the admitted ones hold a slot.
    assert slot_rows(pg_dsn, "cbnew") == 4


@pytest_twisted.ensureDeferred
async def test_two_nodes_admitting_at_once_never_take_more_slots_than_the_cap(pools, pg_dsn):
    limits = LimitsConfig(per_client=1000, per_phone=1000, per_account=1000, window=WINDOW,
                          concurrent_per_account=3)
    clock = Clock()
    clock.advance(1_800_000_000)
    nodes = [(RateLimiter(PostgresLimitStore(p), limits, clock),
              ConcurrencyGauge(PostgresLimitStore(p), limits)) for p in pools]
    ds = []
    for i, r in enumerate(requests("15550103", 12, "cbrace")):
        limiter, gauge = nodes[i % 2]
        ds.append(limiter.check_and_claim(r, gauge.claim("cbrace", uuid.uuid4().hex)))
    results = await defer.DeferredList(ds, consumeErrors=True)
    ok = [v for good, v in results if good]
    refused = [v.value for good, v in results if not good]
    assert len(ok) == 3 and len(refused) == 9
    assert all(isinstance(e, RateLimited) and e.kind == "concurrent" and e.retry_after == 30
               for e in refused)
    assert slot_rows(pg_dsn, "cbrace") == 3
    assert await nodes[1][1].in_use("cbrace") == 3


@pytest_twisted.ensureDeferred
async def test_after_failed_sign_ins_both_refuse_alike_and_take_nothing(pools, pg_dsn):
    limits = LimitsConfig(per_client=1000, per_phone=1000, per_account=1000, window=WINDOW,
                          failures_per_client=2, concurrent_per_account=1000)
    store = PostgresLimitStore(pools[0])
    clock = Clock()
    clock.advance(1_800_000_000 + 100.25)
    limiter, gauge = RateLimiter(store, limits, clock), ConcurrencyGauge(store, limits)

    async def fail_twice(address):
        for _ in range(2):
            request = CallbackRequest(application="A", mode="simple", phone="15550104",
                                      account="cbfail", client_address=address)
            window = await limiter.check(request)
            await limiter.failed(request, window)

    old = CallbackRequest(application="A", mode="simple", phone="15550105", account="cbfailold",
                          client_address="192.0.2.60")
    new = dataclasses_replace(old, account="cbfailnew", client_address="192.0.2.61")
    await fail_twice("192.0.2.60")
    await fail_twice("192.0.2.61")
    before = await answers([lambda: limiter.check(old)])
    after = await answers([lambda: limiter.check_and_claim(new, gauge.claim("cbfailnew"))])
    assert before == after and before[0][0] == "auth_client" and before[0][1] >= 1
    assert slot_rows(pg_dsn, "cbfailnew") == 0
    # The refused request's phone and account hits were given back, as check does.
    peeked = await store.peek_hits([("phone", "15550105"), ("account", "cbfailnew")],
                                   1_800_000_000 - 1_800_000_000 % WINDOW,
                                   1_800_000_000 - 1_800_000_000 % WINDOW - WINDOW)
    assert peeked == {"phone": (0, 0), "account": (0, 0)}
