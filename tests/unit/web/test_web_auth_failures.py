"""Failed authentications and token guesses in the admission limiter (issue 14, items 5, 9)."""

from __future__ import annotations

import pytest

from cbserver.callback.admission import RateLimited
from cbserver.callback.api import CallbackRequest
from tests.unit.web.test_web_limits import limiter, result


def extended(client="192.0.2.1", account="cb1", phone="15550100"):
    return CallbackRequest(application="A", mode="extended", phone=phone, account=account,
                           client_address=client)


def fail(rl, request):
    window = result(rl.check(request))
    result(rl.failed(request, window))


def test_a_failure_gives_its_phone_and_account_hits_back():
    rl, _clock, store = limiter(per_phone=2, per_account=2, failures_per_account=50,
                                failures_per_client=50, window=100)
    for _ in range(10):
        fail(rl, extended())
    assert store.counters[("phone", "15550100", 1_000_000)] == 0
    assert store.counters[("account", "cb1", 1_000_000)] == 0
    assert store.counters[("auth_account", "cb1 192.0.2.1", 1_000_000)] == 10
    result(rl.check(extended(client="203.0.113.9")))
    result(rl.check(extended(client="203.0.113.9")))
    with pytest.raises(RateLimited) as e:
        result(rl.check(extended(client="203.0.113.9")))
    assert e.value.kind == "phone"


def test_failures_per_account_from_one_client_refuse_that_client_only():
    rl, clock, store = limiter(failures_per_account=3, failures_per_client=10, window=100)
    for _ in range(3):
        fail(rl, extended())
    with pytest.raises(RateLimited) as e:
        result(rl.check(extended()))
    assert e.value.kind == "auth_account" and e.value.retry_after >= 1
    # The refused request used no quota either.
    assert store.counters[("phone", "15550100", 1_000_000)] == 0
    result(rl.check(extended(client="203.0.113.9")))  # the owner elsewhere
    result(rl.check(extended(account="cb2")))  # another account from the same client
    clock.advance(200)  # both windows slid out
    result(rl.check(extended()))


def test_failures_per_client_count_every_account_it_tries():
    rl, _clock, _store = limiter(failures_per_account=3, failures_per_client=4, window=100)
    for i in range(4):
        fail(rl, extended(account=f"cb{i}"))
    with pytest.raises(RateLimited) as e:
        result(rl.check(extended(account="cb9")))
    assert e.value.kind == "auth_client"
