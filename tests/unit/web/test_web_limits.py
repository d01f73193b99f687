"""Rate limits and the concurrency cap: windows, kinds, slots, refusals logged and counted."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from cbserver.callback.admission import (
    ConcurrencyGauge,
    IConcurrencyGauge,
    IRateLimiter,
    RateLimited,
    RateLimiter,
    retry_after,
    sliding_count,
)
from cbserver.callback.api import CallbackRequest, ICallbackService
from cbserver.config import LimitsConfig
from cbserver.db.limits_store import ILimitStore, PostgresLimitStore
from tests.support.fake_callbacks import ScriptedCallbackService
from tests.support.metrics import sample
from tests.unit.web.fakes import MemoryLimitStore
from tests.unit.web.harness import Harness


def result(d):
    out = []
    d.addBoth(out.append)
    assert out, "not finished"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def req(client="192.0.2.1", phone="15550100", account=None):
    return CallbackRequest(application="A", mode="simple" if account else "hosted", phone=phone,
                           account=account, client_address=client)


def limiter(**limits):
    clock = Clock()
    clock.advance(1_000_000)  # a window boundary when window divides it
    store = MemoryLimitStore()
    return RateLimiter(store, LimitsConfig(**limits), clock), clock, store


def test_fakes_and_real_classes_provide_their_interfaces():
    clock = Clock()
    store = MemoryLimitStore()
    assert verifyObject(ILimitStore, store)
    assert verifyObject(ILimitStore, PostgresLimitStore(db=None))
    assert verifyObject(IRateLimiter, RateLimiter(store, LimitsConfig(), clock))
    assert verifyObject(IConcurrencyGauge, ConcurrencyGauge(store, LimitsConfig()))
    assert verifyObject(ICallbackService, ScriptedCallbackService(clock))


def test_per_client_limit_refuses_until_the_earlier_requests_slide_out():
    rl, clock, _ = limiter(per_client=3, per_phone=100, window=100)
    for i in range(3):
        result(rl.check(req(phone=f"1555010{i}")))
    clock.advance(30)
    with pytest.raises(RateLimited) as e:
        result(rl.check(req(phone="15550199")))
    # 4 hits in this window: in the next one they weigh 4 * (1 - f); one more fits at f = 0.5
    assert e.value.kind == "client" and e.value.retry_after == 120 and e.value.code == "rate_limited"
    result(rl.check(req(client="192.0.2.2", phone="15550198")))  # another client is fine
    clock.advance(120)
    result(rl.check(req(phone="15550197")))


def test_no_burst_at_a_window_boundary():
    rl, clock, _ = limiter(per_client=3, per_phone=100, window=100)
    clock.advance(99)
    for i in range(3):
        result(rl.check(req(phone=f"1555010{i}")))
    clock.advance(2)  # a new fixed window, but the last three requests are 3 s old
    with pytest.raises(RateLimited):
        result(rl.check(req(phone="15550103")))


def test_sliding_count_and_retry_after_arithmetic():
    assert sliding_count(2, 4, 25, 100) == 5.0
    assert sliding_count(2, 4, 100, 100) == 2.0
    # room in this window once enough of the previous one slid out: 4*(1-f) + 2 + 1 <= 4
    assert retry_after(2, 4, 4, 10, 100) == 65
    # this window full: next window, 5*(1-f) + 1 <= 4 -> f >= 0.4
    assert retry_after(5, 0, 4, 10, 100) == 130
    assert retry_after(2, 0, 1, 99.5, 100) == 101
    assert retry_after(1, 0, 5, 100, 100) >= 1


def test_per_phone_limit_protects_a_number_from_many_clients():
    rl, _, _ = limiter(per_phone=2, per_client=100)
    result(rl.check(req(client="192.0.2.1")))
    result(rl.check(req(client="192.0.2.2")))
    with pytest.raises(RateLimited) as e:
        result(rl.check(req(client="192.0.2.3")))
    assert e.value.kind == "phone"


def test_per_account_limit_counts_across_numbers_and_clients():
    rl, _, _ = limiter(per_account=2, per_client=100, per_phone=100)
    result(rl.check(req(client="192.0.2.1", phone="111", account="cb1")))
    result(rl.check(req(client="192.0.2.2", phone="222", account="cb1")))
    result(rl.check(req(client="192.0.2.2", phone="333", account="cb2")))
    with pytest.raises(RateLimited) as e:
        result(rl.check(req(client="192.0.2.3", phone="444", account="cb1")))
    assert e.value.kind == "account"


def test_old_windows_are_pruned_from_the_store():
    rl, clock, store = limiter(window=10, per_client=1000, per_phone=1000)
    result(rl.check(req()))
    clock.advance(50)
    rl._checks = 0  # the next check prunes
    result(rl.check(req()))
    assert {k[2] for k in store.counters} == {1_000_050}


def gauge(cap=1, open_ids=None):
    clock = Clock()
    clock.advance(5000)
    open_ids = set() if open_ids is None else open_ids
    store = MemoryLimitStore(lambda cid: cid in open_ids, clock)  # the database's clock
    return ConcurrencyGauge(store, LimitsConfig(concurrent_per_account=cap)), clock, store


def test_slot_is_held_while_the_callback_runs_and_frees_itself_when_it_ends():
    open_ids = {"cb-1"}
    g, _, _ = gauge(cap=1, open_ids=open_ids)
    slot = result(g.acquire("cb1001"))
    result(g.bind(slot, "cb-1"))
    assert result(g.in_use("cb1001")) == 1
    with pytest.raises(RateLimited) as e:
        result(g.acquire("cb1001"))
    assert e.value.kind == "concurrent"
    result(g.acquire("cb2002"))  # another account has its own cap
    open_ids.clear()  # the callback ended
    assert result(g.in_use("cb1001")) == 0
    result(g.acquire("cb1001"))


def test_unbound_slot_counts_for_a_minute_only():
    g, clock, _ = gauge(cap=1)
    result(g.acquire("cb1001"))  # a request being started
    with pytest.raises(RateLimited):
        result(g.acquire("cb1001"))
    clock.advance(61)  # its node died before binding it
    result(g.acquire("cb1001"))


def test_cancel_and_release_free_a_slot_at_once():
    g, _, store = gauge(cap=1, open_ids={"cb-1"})
    slot = result(g.acquire("cb1001"))
    result(g.cancel(slot))
    slot = result(g.acquire("cb1001"))
    result(g.bind(slot, "cb-1"))
    assert result(g.release("cb-1")) == "cb1001"
    assert result(g.release("cb-1")) is None  # idempotent
    assert store.slots == {}


def test_prune_forgets_very_old_slots():
    g, clock, store = gauge(cap=5, open_ids={"cb-1"})
    result(g.bind(result(g.acquire("cb1001")), "cb-1"))
    clock.advance(25 * 3600)
    result(g.prune())
    assert store.slots == {}


def test_refused_request_gives_its_slot_back():
    h = Harness(limits=LimitsConfig(concurrent_per_account=1))
    r = h.post_json("/api/v1/callbacks", {"mode": "extended", "account": "cb1001", "password": "bad",
                                          "phone": "15550100", "destination": "15550101"})
    assert r.code == 401
    assert h.store.slots == {}
    ok = h.post_json("/api/v1/callbacks", {"mode": "simple", "account": "cb1001", "phone": "15550100"})
    assert ok.code == 202
    (slot,) = h.store.slots.values()
    assert slot["callback_id"] == ok.json()["id"]
    h.finish()


def test_concurrency_cap_through_the_api_is_429_concurrent_until_the_callback_ends():
    h = Harness(limits=LimitsConfig(concurrent_per_account=1))
    body = {"mode": "simple", "account": "cb1001", "phone": "15550100"}
    assert h.post_json("/api/v1/callbacks", body).code == 202
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        r = h.post_json("/api/v1/callbacks", body)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert r.code == 429 and r.json()["error"]["code"] == "rate_limited"
    assert sample(h.metrics, "cbserver_rate_limit_refusals_total", kind="concurrent") == 1
    (line,) = [e for e in events if e.get("log_format", "").startswith("callback refused")]
    assert line["code"] == "rate_limited" and line["kind"] == "concurrent"
    assert line["client"] == "127.0.0.1"
    h.clock.pump([1] * 7)  # the first callback ends
    assert h.post_json("/api/v1/callbacks", body).code == 202
    h.finish()


def test_database_lost_during_the_checks_is_503_counted_and_frees_the_slot():
    from twisted.internet import defer

    from cbserver.errors import DatabaseUnavailable

    h = Harness()
    h.service.request_callback = lambda req: defer.fail(DatabaseUnavailable("server closed the connection"))
    r = h.post_json("/api/v1/callbacks", {"mode": "simple", "account": "cb1001", "phone": "15550100"})
    assert r.code == 503 and r.json()["error"]["code"] == "not_ready"
    assert r.header("retry-after") == "5"
    assert sample(h.metrics, "cbserver_callback_refusals_total", mode="simple", code="not_ready") == 1
    assert h.store.slots == {}
    h.store.count_hits = lambda keys, start, previous: defer.fail(DatabaseUnavailable("down"))
    r = h.post_json("/api/v1/callbacks", {"mode": "hosted", "phone": "15550100"})
    assert r.code == 503
    assert sample(h.metrics, "cbserver_callback_refusals_total", mode="hosted", code="not_ready") == 1
    h.finish()
