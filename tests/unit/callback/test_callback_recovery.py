"""Crash recovery on a task.Clock: rows kept on answer and dropped on end, and a survivor (or
the node restarted) ending and billing a dead node's callbacks once, exactly as a normal end
at the last heartbeat would have."""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import uuid
from decimal import Decimal
from fractions import Fraction
from types import SimpleNamespace

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cbserver.billing.model import OffPeakPeriod, OffPeakWindow, Rate, RatingMode, TariffRates
from cbserver.billing.rating import price_leg
from cbserver.billing.xdr import LegRecord
from cbserver.callback.recovery import (
    IRecoveryStore,
    RecoveryKeeper,
    RecoveryService,
    closed_state,
    lost_records,
    pricer_from_dict,
    pricer_to_dict,
)
from cbserver.callback.session import CallbackSession, SessionContext
from tests.unit.callback.fakes import FakeAuthorizer, FakeMedia, FakeRecorder, FakeUA, Request, app

OLD = str(uuid.uuid4())  # the process that dies
SURVIVOR = str(uuid.uuid4())


@implementer(IRecoveryStore)
class MemoryRecoveryStore:
    """``IRecoveryStore`` in dicts: ``alive`` stands for the heartbeat check, ``last_seen``
    for the heartbeats; what would be the PostgreSQL transaction runs at once. ``gate``: make
    ``orphans`` wait, so that two survivors can race."""

    def __init__(self):
        self.rows: dict[str, tuple[str, str, dict]] = {}
        self.last_seen: dict[str, float] = {}
        self.alive: set[str] = set()
        self.xdrs: list[LegRecord] = []
        self.states: dict[str, dict] = {}
        self.gates: list[defer.Deferred] | None = None
        self.closed_unanswered: list[str] = []

    def save(self, session_id, node, instance_id, data):
        self.rows[session_id] = (node, instance_id, json.loads(json.dumps(data)))  # as jsonb
        return defer.succeed(None)

    def remove(self, session_id):
        self.rows.pop(session_id, None)
        return defer.succeed(None)

    def remove_ended(self):
        ended = sorted(s for s in self.rows
                       if self.states.get(s, {}).get("status") in ("ended", "refused"))
        for sid in ended:
            del self.rows[sid]
        return defer.succeed(ended)

    def _orphan(self, sid, node, instance_id) -> bool:
        row_node, row_instance, _ = self.rows[sid]
        return row_instance != instance_id and (row_node == node or row_instance not in self.alive)

    def orphans(self, node, instance_id, stale_after):
        found = sorted(s for s in self.rows if self._orphan(s, node, instance_id))
        if self.gates is None:
            return defer.succeed(found)
        d = defer.Deferred()
        self.gates.append((d, found))
        return d

    def close_unanswered(self, node, instance_id, stale_after, reason):
        self.closed_unanswered.append(reason)
        return defer.succeed([])

    def settle(self, session_id, node, instance_id, stale_after, settle):
        if session_id not in self.rows or not self._orphan(session_id, node, instance_id):
            return defer.succeed(None)
        _, row_instance, data = self.rows.pop(session_id)
        if self.states.get(session_id, {}).get("status") in ("ended", "refused"):
            return defer.succeed(None)
        records, state = settle(data, self.last_seen[row_instance], self.states.get(session_id))
        self.xdrs.extend(records)
        self.states[session_id] = state
        return defer.succeed(data)


class RecoveringUA(FakeUA):
    """FakeUA whose calls have a dialog once answered, and which records recovery BYEs."""

    def __init__(self):
        super().__init__()
        self.byes: list[tuple[dict, list]] = []

    def place_call(self, number, **kw):
        call = super().place_call(number, **kw)
        n = len(self.calls)
        call.dialog_state = lambda: None if call.state == "calling" else {
            "dialog": {"call_id": call.call_id, "local_tag": f"l{n}", "remote_tag": f"r{n}",
                       "local_party": f"<sip:cb@x>;tag=l{n}", "remote_party": f"<sip:{number}@t>;tag=r{n}",
                       "remote_target": f"sip:{number}@127.0.0.9:5080", "route_set": [], "local_seq": 1,
                       "remote_seq": None, "secure": False, "state": "confirmed"},
            "destination": ["127.0.0.9", 5080], "transport": "UDP"}
        return call

    def end_recovered(self, dialog_dict, destination):
        self.byes.append((dialog_dict, destination))
        return defer.succeed(200)


class Node:
    """One session on a node with crash-recovery rows (``store``) or without (``None``)."""

    def __init__(self, clock, store=None, request=None, retry: bool = False):
        self.clock = clock
        self.ua = RecoveringUA()
        self.recorder = FakeRecorder()
        self.authorizer = FakeAuthorizer(clock)
        self.request = request or Request()
        keeper = (RecoveryKeeper(store, "node1", OLD, clock if retry else None)
                  if store is not None else None)
        ctx = SessionContext(ua=self.ua, media=FakeMedia(clock), authorizer=self.authorizer,
                             recorder=self.recorder, clock=clock, node="node1", no_answer_timeout=60,
                             instance_id=OLD, keeper=keeper)
        from cbserver.billing.authorize import AuthRequest

        app_ = app()
        first = AuthRequest(session_id="s1", account_id=self.request.account, cli=self.request.phone,
                            cld=self.request.destination)
        self.session = CallbackSession("s1", self.request, app_, self.authorizer.authorize(first).result, ctx)
        self.session.start()

    @property
    def a(self):
        return self.ua.calls[0]

    @property
    def b(self):
        return self.ua.calls[1]


def connected(clock, store=None, ring_a=3.0, ring_b=5.0):
    node = Node(clock, store)
    clock.advance(ring_a)
    node.a.answer()
    clock.advance(ring_b)
    node.b.answer()
    assert node.session.status == "connected"
    return node


def clock_at(t=1_780_000_000.0):
    clock = Clock()
    clock.advance(t)
    return clock


def test_the_memory_store_provides_the_interface():
    assert verifyObject(IRecoveryStore, MemoryRecoveryStore())


def test_the_row_is_written_on_each_answer_and_deleted_when_the_callback_ends():
    clock, store = clock_at(), MemoryRecoveryStore()
    node = Node(clock, store)
    assert store.rows == {}  # nothing to end before an answer
    clock.advance(2)
    node.a.answer()
    node_name, instance, data = store.rows["s1"]
    assert (node_name, instance) == ("node1", OLD)
    assert [leg["leg"] for leg in data["legs"]] == ["A"]
    assert data["legs"][0]["dialog"]["call_id"] == node.a.call_id
    assert data["legs"][0]["destination"] == ["127.0.0.9", 5080]
    assert data["legs"][0]["answered_at"] == clock.seconds()
    clock.advance(4)
    node.b.answer()
    assert [leg["leg"] for leg in store.rows["s1"][2]["legs"]] == ["A", "B"]
    clock.advance(30)
    node.b.bye()
    assert node.session.status == "ended"
    assert store.rows == {}


def test_the_row_is_deleted_when_the_xdrs_are_refused_too():
    clock, store = clock_at(), MemoryRecoveryStore()
    node = connected(clock, store)
    node.recorder.record = lambda leg: defer.fail(OSError("disk full"))
    node.b.bye()
    assert node.session.status == "ended"
    assert store.rows == {}


def test_a_failing_store_never_disturbs_the_call():
    clock = clock_at()
    store = MemoryRecoveryStore()
    store.save = lambda *a: defer.fail(RuntimeError("db away"))
    node = connected(clock, store)
    clock.advance(10)
    node.a.bye()
    assert node.session.status == "ended" and len(node.recorder.records) == 2


def test_a_save_that_failed_is_tried_again_with_the_newest_snapshot_until_stored():
    """PostgreSQL away when the legs answer: the row is saved once it is back, with both
    legs, so a node killed afterwards still has its calls ended and billed."""
    clock, store = clock_at(), MemoryRecoveryStore()
    real_save, away = store.save, [True]
    tries = []

    def save(*args):
        tries.append(clock.seconds())
        return defer.fail(RuntimeError("db away")) if away[0] else real_save(*args)

    store.save = save
    node = Node(clock, store, retry=True)
    clock.advance(2)
    node.a.answer()
    clock.advance(1)
    node.b.answer()
    for _ in range(5):
        clock.advance(1)
    assert store.rows == {} and len(tries) >= 3, tries
    away[0] = False
    clock.advance(2)
    assert [leg["leg"] for leg in store.rows["s1"][2]["legs"]] == ["A", "B"]
    settled = len(tries)
    for _ in range(20):
        clock.advance(1)
    assert len(tries) == settled  # stored: no more tries
    node.b.bye()
    assert store.rows == {}


def test_retries_stop_when_the_callback_ends_and_its_delete_follows():
    clock, store = clock_at(), MemoryRecoveryStore()
    tries, removed = [], []
    store.save = lambda *a: tries.append(1) or defer.fail(RuntimeError("db away"))
    store.remove = lambda sid: removed.append(sid) or defer.succeed(None)
    node = Node(clock, store, retry=True)
    clock.advance(2)
    node.a.answer()
    clock.advance(1)
    node.b.answer()
    clock.advance(3)
    node.b.bye()
    assert node.session.status == "ended"
    for _ in range(10):
        clock.advance(1)
    n = len(tries)
    clock.advance(30)
    assert len(tries) == n and removed == ["s1"]


def survivor(clock, store, node="node2", instance=SURVIVOR, ua=None):
    svc = RecoveryService(store, SimpleNamespace(ua=ua or RecoveringUA()), clock, node, instance,
                          interval=5.0, stale_after=15)
    svc.startService()
    return svc


def test_a_survivor_ends_and_bills_a_dead_nodes_call_as_a_normal_end_at_the_last_heartbeat():
    clock, store = clock_at(), MemoryRecoveryStore()
    node = connected(clock, store)
    store.alive.add(OLD)
    svc = survivor(clock, store)
    clock.advance(41.3)
    assert store.rows and not svc.sip.ua.byes  # alive: nothing touched
    last_seen = clock.seconds() - 0.7  # its last heartbeat, then kill -9
    store.last_seen[OLD] = last_seen
    store.alive.discard(OLD)
    clock.advance(5)
    assert store.rows == {}
    assert store.closed_unanswered  # and the callbacks with no leg answered are closed too
    # A BYE on each leg that was up, from the stored dialogs.
    assert sorted(d["call_id"] for d, _ in svc.sip.ua.byes) == sorted([node.a.call_id, node.b.call_id])
    assert all(dest == ["127.0.0.9", 5080] for _, dest in svc.sip.ua.byes)
    # The reference: the same call ended normally at the last heartbeat.
    ref_clock = clock_at()
    ref = connected(ref_clock)
    ref_clock.advance(last_seen - ref_clock.seconds())
    ref.b.bye()
    got = {r.leg: r for r in store.xdrs}
    want = {r.leg: r for r in ref.recorder.records}
    for leg in ("A", "B"):
        assert got[leg].sip_reason == "node_lost"
        for name in ("amount", "duration", "charged_seconds", "connect_time", "disconnect_time",
                     "tariff_id", "rate_id", "prefix", "account_id", "cli", "cld", "instance_id",
                     "currency", "peak", "node", "customer_id", "access_code", "trigger_mode"):
            assert getattr(got[leg], name) == getattr(want[leg], name), (leg, name)
    assert got["A"].call_id == node.a.call_id and got["B"].call_id == node.b.call_id
    state = store.states["s1"]
    assert state["status"] == "ended" and state["cause"]["code"] == "node_lost"
    assert Decimal(state["charges"]["total"]) == got["A"].amount + got["B"].amount


@pytest.mark.parametrize("seed", range(40))
def test_billed_seconds_are_exactly_answer_to_last_heartbeat_rounded_up(seed):
    rnd = random.Random(seed)
    clock, store = clock_at(1_780_000_000 + rnd.random() * 1000), MemoryRecoveryStore()
    node = connected(clock, store, ring_a=rnd.uniform(0.1, 30), ring_b=rnd.uniform(0.1, 30))
    answered = {"A": node.session.a.answered_at, "B": node.session.b.answered_at}
    clock.advance(rnd.uniform(0, 600))
    last_seen = clock.seconds()
    store.last_seen[OLD] = last_seen
    clock.advance(rnd.uniform(0, 5))  # killed within one heartbeat interval
    survivor(clock, store)
    got = {r.leg: r for r in store.xdrs}
    for leg in ("A", "B"):
        exact = Fraction(last_seen) - Fraction(answered[leg])
        # Leg.duration's rule: a started second is charged (1 µs of float noise aside).
        assert got[leg].duration == max(0, math.ceil(exact - Fraction(1, 10**6)))
        # Priced by the stored rate exactly as the rating core prices it.
        pricer = price_leg(node.authorizer.tariff.rates, node.request.phone if leg == "A"
                           else node.request.destination, got[leg].connect_time)
        assert got[leg].amount == pricer.charge(got[leg].duration).amount


def test_dead_while_legb_rings_bills_lega_and_writes_a_zero_legb():
    clock, store = clock_at(), MemoryRecoveryStore()
    node = Node(clock, store)
    clock.advance(2)
    node.a.answer()
    clock.advance(20)
    store.last_seen[OLD] = clock.seconds()
    svc = survivor(clock, store)
    got = {r.leg: r for r in store.xdrs}
    assert got["A"].duration == 20 and got["A"].amount > 0
    assert got["A"].access_code != "CALLBACK_FAIL"  # a node lost is not legB failing
    assert got["B"].duration == 0 and got["B"].amount == 0 and got["B"].cld == "18185550123"
    assert [d["call_id"] for d, _ in svc.sip.ua.byes] == [node.a.call_id]


def test_two_survivors_racing_recover_each_callback_once():
    clock, store = clock_at(), MemoryRecoveryStore()
    connected(clock, store)
    clock.advance(10)
    store.last_seen[OLD] = clock.seconds()
    store.gates = []
    one = survivor(clock, store, "node2", str(uuid.uuid4()))
    two = survivor(clock, store, "node3", str(uuid.uuid4()))
    assert len(store.gates) == 2  # both found it
    for d, found in list(store.gates):
        d.callback(found)
    assert len(store.xdrs) == 2
    assert len(one.sip.ua.byes) + len(two.sip.ua.byes) == 2
    assert {len(one.sip.ua.byes), len(two.sip.ua.byes)} == {0, 2}


def test_the_node_restarted_recovers_its_own_leftovers_at_once_and_others_wait():
    clock, store = clock_at(), MemoryRecoveryStore()
    connected(clock, store)
    clock.advance(10)
    store.last_seen[OLD] = clock.seconds()
    store.alive.add(OLD)  # its heartbeat is still fresh: killed a moment ago
    other = survivor(clock, store, "node2")
    assert store.rows and not other.sip.ua.byes
    restarted = survivor(clock, store, "node1", str(uuid.uuid4()))
    assert store.rows == {} and len(restarted.sip.ua.byes) == 2


def test_no_sweep_before_the_ua_runs_nor_while_the_database_is_away():
    clock, store = clock_at(), MemoryRecoveryStore()
    connected(clock, store)
    store.last_seen[OLD] = clock.seconds()
    up = [False]
    sip = SimpleNamespace(ua=None)
    svc = RecoveryService(store, sip, clock, "node2", SURVIVOR, interval=5.0, ready=lambda: up[0])
    svc.startService()
    clock.advance(5)
    sip.ua = RecoveringUA()
    clock.advance(5)
    assert store.rows
    up[0] = True
    clock.advance(5)
    assert store.rows == {} and len(sip.ua.byes) == 2
    svc.stopService()
    sweeps = len(store.closed_unanswered)  # one entry per sweep
    clock.advance(30)
    assert len(store.closed_unanswered) == sweeps  # no look after the stop


def test_closed_state_keeps_the_page_fields_and_says_node_lost():
    data = {"session_id": "s1", "mode": "simple", "node": "node1",
            "legs": [{"leg": "A"}]}
    recs = [SimpleNamespace(amount=Decimal("0.60000"), currency="USD"),
            SimpleNamespace(amount=Decimal(0), currency="USD")]
    state = {"id": "s1", "status": "calling_destination", "node_lost": True,
             "legs": {"A": {"state": "answered", "number": "1"}, "B": {"state": "ringing"}}}
    out = closed_state(state, data, recs, 1_780_000_000.0)
    assert out["status"] == "ended" and "node_lost" not in out
    assert out["legs"]["A"] == {"state": "ended", "reason": "node_lost", "number": "1"}
    assert out["legs"]["B"]["state"] == "failed"
    assert out["charges"] == {"A": "0.60000", "B": "0", "total": "0.60000", "currency": "USD"}


@pytest.mark.parametrize("seed", range(30))
def test_a_stored_pricer_prices_every_duration_as_the_original(seed):
    rnd = random.Random(seed)
    price = lambda: Decimal(rnd.randrange(0, 200000)) / Decimal(100000)  # noqa: E731
    offpeak = OffPeakPeriod("Europe/Paris", (OffPeakWindow.parse("mon-fri 18:00-23:59"),
                                             OffPeakWindow.parse("sat-sun 00:00-23:59")))
    flat = rnd.random() < 0.3
    extra = {} if flat else dict(offpeak_first_interval=30, offpeak_next_interval=6,
                                 offpeak_first_price=price(), offpeak_next_price=price())
    rate = Rate("55", rnd.choice([1, 6, 30, 60]), rnd.choice([1, 6, 60]), price(), price(),
                dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                mode=RatingMode.FLAT if flat else RatingMode.PEAK_OFFPEAK,
                rate_id=rnd.randrange(1, 99), version=rnd.randrange(1, 5), **extra)
    tariff = TariffRates("EUR", (rate,), offpeak, rnd.random() < 0.5, "T")
    connect = dt.datetime(2026, 3, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rnd.randrange(0, 7 * 86400))
    original = price_leg(tariff, "5511999", connect)
    stored = pricer_from_dict(json.loads(json.dumps(pricer_to_dict(original))))
    for duration in [0, 1, rnd.randrange(1, 100000)]:
        assert stored.charge(duration) == original.charge(duration)


def test_lost_records_never_bill_before_the_answer():
    clock, store = clock_at(), MemoryRecoveryStore()
    connected(clock, store)
    data = store.rows["s1"][2]
    recs = lost_records(data, data["legs"][0]["answered_at"] - 50)
    assert [r.duration for r in recs] == [0, 0] and all(r.amount == 0 for r in recs)


def test_hosted_identification_moves_the_stored_lega_to_the_identified_account():
    from cbserver.billing.authorize import AuthRequest

    clock, store = clock_at(), MemoryRecoveryStore()
    node = Node(clock, store)
    clock.advance(2)
    node.a.answer()
    assert store.rows["s1"][2]["account_id"] == "cb1818000001"
    other = node.authorizer.authorize(AuthRequest(session_id="s1", account_id="cb-internal",
                                                  cli=node.request.phone, cld="18185550123")).result
    node.session.caller_identified(other)
    data = store.rows["s1"][2]
    assert data["account_id"] == "cb-internal"
    assert data["legs"][0]["record"]["account_id"] == "cb-internal"


def test_the_snapshot_selects_each_legs_rate_once_and_stores_what_leg_record_gives(monkeypatch):
    from cbserver.billing import xdr
    from cbserver.callback.recovery import snapshot

    clock = clock_at()
    node = connected(clock, MemoryRecoveryStore())
    s = node.session
    selected = []
    real = xdr.price_leg
    monkeypatch.setattr(xdr, "price_leg", lambda *a: selected.append(a) or real(*a))
    data = snapshot(s)
    assert len(selected) == 2  # one rate selection per answered leg
    monkeypatch.setattr(xdr, "price_leg", real)
    for stored, leg in zip(data["legs"], (s.a, s.b), strict=True):
        connect = dt.datetime.fromtimestamp(leg.answered_at, dt.UTC)
        reference = xdr.leg_record(s.auth, leg.name, trigger_mode=s.request.mode, node="node1",
                                   disconnect_time=connect, connect_time=connect, duration=0,
                                   sip_reason="node_lost", call_id=leg.call.call_id, instance_id=OLD)
        assert stored["record"] == reference.to_dict()
        assert stored["pricer"] == pricer_to_dict(xdr.leg_pricer(s.auth, leg.name, connect)[1])


class BatchDb:
    """What the status writer needs of the pool; each batch's recovery part is recorded."""

    instance_id = OLD
    ready = True

    def __init__(self):
        self.batches = []

    def runOperation(self, sql, params):
        saves, drops = {}, []
        if len(params) > 10:  # upsert_with_recovery
            saves = dict(zip(params[10], (json.loads(d) for d in params[13]), strict=True))
            drops = list(params[14])
        self.batches.append((dict(zip(params[0], params[6], strict=True)), saves, drops))
        return defer.succeed(None)


def test_with_a_status_writer_the_rows_ride_its_batches_and_go_with_the_final_status():
    from cbserver.callback.statuswriter import StatusWriter

    clock, store = clock_at(), MemoryRecoveryStore()
    store.save = store.remove = lambda *a: pytest.fail("a statement of its own")
    node = Node(clock, store)
    db = BatchDb()
    node.session.ctx.keeper.writer = StatusWriter(db, clock, "node1", linger=0.2)
    clock.advance(2)
    node.a.answer()
    assert db.batches == []
    clock.advance(0.2)  # at most the linger
    (statuses, saves, drops), = db.batches
    assert [leg["leg"] for leg in saves["s1"]["legs"]] == ["A"] and drops == []
    clock.advance(4)
    node.b.answer()
    clock.advance(0.2)
    assert [leg["leg"] for leg in db.batches[-1][1]["s1"]["legs"]] == ["A", "B"]
    clock.advance(30)
    node.b.bye()
    clock.advance(0.2)
    assert db.batches[-1] == ({"s1": "ended"}, {}, ["s1"])
    assert node.session.ctx.keeper.pending().called
