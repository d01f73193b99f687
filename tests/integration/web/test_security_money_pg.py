"""IVR failures and failed authentications on the real PostgreSQL: two nodes (two pools) agree.

Issue 14, items 6 and 9: the counters the attacks in test_security_money_sipp.py meet, shared
by every node through PostgreSQL.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock

from cbserver.callback.admission import RateLimited, RateLimiter
from cbserver.callback.api import CallbackRequest
from cbserver.callback.service import Lockouts
from cbserver.config import LimitsConfig
from cbserver.db.limits_store import PostgresLimitStore

pytestmark = pytest.mark.integration


@pytest_twisted.ensureDeferred
async def test_ivr_failures_on_two_nodes_lock_the_account(pools):
    a, b = Lockouts(pools[0]), Lockouts(pools[1])
    key = "account:cb1818000001"
    # Two calls on two nodes, from two numbers, each with failures below the limit of 3.
    assert await a.failed(["phone:15550001", key], 3, 900) == []
    assert await b.failed(["phone:15550002", key], 3, 900) == []
    assert not await a.locked([key])
    assert await b.failed(["phone:15550002", key], 3, 900) == [key]
    assert await a.locked([key]) and await b.locked([key])
    assert not await a.locked(["phone:15550001"])


@pytest_twisted.ensureDeferred
async def test_ivr_failures_older_than_the_lockout_period_start_again(pools):
    a = Lockouts(pools[0])
    assert await a.failed(["account:x"], 2, 0.2) == []
    d = defer.Deferred()
    reactor.callLater(0.4, d.callback, None)
    await d
    assert await a.failed(["account:x"], 2, 0.2) == []  # the first one has expired
    assert await a.failed(["account:x"], 2, 0.2) == ["account:x"]


@pytest_twisted.ensureDeferred
async def test_failed_authentications_are_counted_apart_from_the_quotas(pools):
    clock = Clock()
    clock.advance(1_800_000_000)
    limits = LimitsConfig(per_client=1000, per_phone=2, per_account=2, failures_per_client=100,
                          failures_per_account=3, window=3600)
    la = RateLimiter(PostgresLimitStore(pools[0]), limits, clock)
    lb = RateLimiter(PostgresLimitStore(pools[1]), limits, clock)
    attacker = CallbackRequest(application="A", mode="extended", phone="15550100", account="cb1",
                               client_address="198.51.100.66")
    for i in range(3):  # three wrong passwords, on either node: the quotas are given back
        limiter = la if i % 2 else lb
        window = await limiter.check(attacker)
        await limiter.failed(attacker, window)
    with pytest.raises(RateLimited) as refused:
        await la.check(attacker)
    assert refused.value.kind == "auth_account"
    owner = CallbackRequest(application="A", mode="extended", phone="15550100", account="cb1",
                            client_address="203.0.113.5")
    # The owner elsewhere still has the whole per-phone and per-account quota (2).
    await lb.check(owner)
    await la.check(owner)
    with pytest.raises(RateLimited) as over:
        await lb.check(owner)
    assert over.value.kind == "phone"
