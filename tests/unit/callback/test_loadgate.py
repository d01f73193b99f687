"""The start-delay gate (cbserver/callback/loadgate.py) on a task.Clock, alone and in Admission."""

from __future__ import annotations

from twisted.internet import defer, task

from cbserver.callback.admission import Admission
from cbserver.callback.api import CallbackRefused, CallbackRequest
from cbserver.callback.loadgate import StartDelayGate
from cbserver.config import LimitsConfig


def run(gate: StartDelayGate, clock: task.Clock, took: float) -> None:
    """One admitted request that takes ``took`` seconds to start."""
    assert gate.admit()
    token = gate.started()
    clock.advance(took)
    gate.finished(token)


def test_fast_starts_never_shut_the_gate():
    clock = task.Clock()
    gate = StartDelayGate(clock, target=0.4, interval=1.0)
    for _ in range(100):
        run(gate, clock, 0.39)
    assert gate.admit() and not gate.shedding and gate.refused == 0


def fill(gate: StartDelayGate) -> list[float]:
    """Admit requests until the gate refuses one; their tokens (none has finished)."""
    tokens = []
    while gate.admit():
        tokens.append(gate.started())
    return tokens


def test_an_interval_of_late_starts_cuts_the_limit_in_proportion_and_refuses_beyond_it():
    clock = task.Clock()
    gate = StartDelayGate(clock, target=0.4, interval=1.0, ceiling=40)
    tokens = fill(gate)
    assert len(tokens) == 40 and gate.refusals["start_delay"] == 1  # the ceiling holds first
    clock.advance(0.8)
    for t in tokens[:10]:
        gate.finished(t)  # 0.8 s each: twice the target
    clock.advance(0.3)  # the interval is over; its fastest start took 0.8 s
    assert gate.in_flight == 30 and not gate.admit()  # limit 20 now, 30 in flight: refused
    assert int(gate.limit) == 20 and gate.cuts == 1 and gate.shedding
    state = gate.state()
    assert (state["open"], state["reason"], state["limit"]) == (False, "start_delay", 20)


def test_the_cut_is_at_most_half_and_the_limit_never_falls_below_the_floor():
    clock = task.Clock()
    gate = StartDelayGate(clock, target=0.4, interval=1.0, ceiling=40, floor=4)
    for expected in (20, 10, 5, 4, 4):
        token = gate.started()
        clock.advance(1.0)
        gate.finished(token)  # 1 s: 2.5 times the target, cut by half at most
        clock.advance(1.0)  # the interval it was measured in ends
        gate.admit()
        assert int(gate.limit) == expected
    assert gate.lowest == 4


def test_a_limit_that_holds_back_starts_in_time_grows_back_to_the_ceiling():
    clock = task.Clock()
    gate = StartDelayGate(clock, target=0.4, interval=1.0, ceiling=40)
    gate.limit = 8.0
    grown = []
    for _ in range(12):
        tokens = fill(gate)  # the limit is full: requests are held back
        clock.advance(0.3)
        for t in tokens:
            gate.finished(t)  # every one in time
        clock.advance(0.7)
        gate.admit()  # the interval has ended
        grown.append(int(gate.limit))
    assert grown[:4] == [10, 12, 15, 19] and grown[-1] == 40  # a quarter a time, to the ceiling
    assert not gate.shedding


def test_a_limit_nobody_reaches_does_not_grow_and_fast_starts_never_cut_it():
    clock = task.Clock()
    gate = StartDelayGate(clock, target=0.4, interval=1.0, ceiling=40)
    gate.limit = 8.0
    for _ in range(50):
        run(gate, clock, 0.3)  # one at a time, in time: the limit holds nobody back
    assert int(gate.limit) == 8 and gate.refused == 0


def test_one_fast_start_in_the_interval_means_no_standing_queue():
    clock = task.Clock()
    gate = StartDelayGate(clock, target=0.4, interval=1.0)
    slow = [gate.started(), gate.started()]
    clock.advance(0.6)
    for t in slow:
        gate.finished(t)  # 0.6 s: late
    run(gate, clock, 0.1)  # CoDel's minimum: the queue drained once, so it is not standing
    clock.advance(0.5)  # the interval is over
    assert gate.admit() and not gate.shedding and gate.cuts == 0


def test_an_interval_with_nothing_finished_leaves_the_limit_and_a_gate_at_the_floor_admits():
    clock = task.Clock()
    gate = StartDelayGate(clock, target=0.4, interval=1.0, ceiling=40, floor=4)
    gate.limit = 4.0
    stuck = fill(gate)  # four in flight, the database says nothing for a long while
    clock.advance(30.0)
    assert not gate.admit() and int(gate.limit) == 4
    for t in stuck:
        gate.finished(t)  # 30 s each: the limit is cut, but not below the floor
    clock.advance(1.0)
    assert gate.admit() and int(gate.limit) == 4  # with nothing in flight, four may start


def test_target_zero_turns_it_off():
    clock = task.Clock()
    gate = StartDelayGate(clock, target=0.0)
    for _ in range(5):
        run(gate, clock, 10.0)
    assert gate.admit() and gate.refused == 0


class SlowService:
    """A callback service whose answers wait on Deferreds (a database behind a queue)."""

    active = 0
    draining = False

    def __init__(self, clock):
        self.clock = clock
        self.pending: list[defer.Deferred] = []
        self.n = 0

    def new_callback_id(self):
        self.n += 1
        return f"cb{self.n}"

    def request_callback(self, request):
        self.pending.append(defer.Deferred())
        return self.pending[-1].addCallback(lambda _: request.callback_id)


class PassLimiter:
    """A limiter that lets everything through."""

    def check(self, request):
        return defer.succeed(None)


def test_admission_refuses_busy_beyond_the_limit_with_no_work_and_recovers():
    clock = task.Clock()
    service = SlowService(clock)
    admission = Admission(service, PassLimiter(), None, lambda: True,
                          LimitsConfig(node_max_starting=8, start_delay_target=0.4,
                                       start_delay_interval=1.0))
    assert admission.gate.ceiling == 8
    req = CallbackRequest(application="Web callback", mode="simple", phone="15550100")
    outcomes = []

    def start():
        admission.start(req).addCallbacks(outcomes.append,
                                          lambda f: outcomes.append(f.trap(CallbackRefused)
                                                                    and f.value.code))

    for _ in range(8):
        start()
    clock.advance(1.6)
    for d in service.pending[:4]:
        d.callback(None)  # 1.6 s each: four times the target
    clock.advance(1.0)  # the interval they were measured in ends
    for _ in range(4):
        start()  # the limit is now 4, and 4 are in flight: all refused
    assert outcomes[4:] == ["busy"] * 4 and len(service.pending) == 8  # no work for them
    for d in service.pending[4:]:
        d.callback(None)
    start()
    assert len(service.pending) == 9
    service.pending[8].callback(None)
    assert outcomes[-1] == "cb9" and admission.gate.refusals["start_delay"] == 4


def test_late_legb_authorizations_of_running_callbacks_cut_the_limit_too():
    clock = task.Clock()
    gate = StartDelayGate(clock, target=0.4, interval=1.0, ceiling=10)
    tokens = [gate.started() for _ in range(6)]  # six new requests in flight
    clock.advance(0.5)
    gate.observe_legb(0.9)  # a running callback's legB waited 0.9 s for its authorization
    clock.advance(0.6)  # and the interval ends with nothing faster: the database queue stands
    assert not gate.admit() and int(gate.limit) == 5 and gate.refusals["start_delay"] == 1
    gate.observe_legb(0.1)  # one legB authorized in time (its statements go first)...
    for t in tokens:
        gate.finished(t)  # ...does not hide that new requests took 1.1 s to start
    clock.advance(1.0)
    assert gate.admit() and int(gate.limit) == 4 and gate.cuts == 2
    tokens = fill(gate)  # the limit is full
    clock.advance(0.2)
    for t in tokens:
        gate.finished(t)  # in time
    gate.observe_legb(0.1)
    clock.advance(1.0)
    assert gate.admit() and int(gate.limit) == 5  # in time with the limit full: it grows


def test_admission_wires_the_services_legb_delays_to_its_gate():
    clock = task.Clock()
    service = SlowService(clock)
    admission = Admission(service, PassLimiter(), None, lambda: True,
                          LimitsConfig(start_delay_target=0.4, start_delay_interval=1.0))
    assert service.on_legb_delay == admission.gate.observe_legb
    off = SlowService(clock)
    Admission(off, PassLimiter(), None, lambda: True, LimitsConfig(start_delay_target=0.0))
    assert not hasattr(off, "on_legb_delay")


def test_the_pools_queue_shuts_the_gate_at_once_and_its_end_opens_it():
    clock = task.Clock()
    queued = {"delay": 0.0}
    gate = StartDelayGate(clock, target=0.4, interval=1.0, queue_delay=lambda: queued["delay"])
    assert gate.admit() and gate.state()["open"]
    queued["delay"] = 0.41  # a new start would queue longer than the target: no interval waited
    clock.advance(3.0)
    assert not gate.admit() and gate.refused == gate.refused_queue == 1
    clock.advance(0.5)
    state = gate.state()
    assert (state["open"], state["reason"], state["shut_for"]) == (False, "queue", 0.5)
    queued["delay"] = 0.1
    assert gate.admit() and gate.state()["open"] and gate.state()["reason"] is None
    assert StartDelayGate(clock, target=0.0, queue_delay=lambda: 9.0).admit()  # off is off


class QueueDb:
    """The pool's queue figures, set by the test."""

    def __init__(self):
        self.wait = 0.0
        self.admission_checkouts = 0

    def admission_wait(self):
        return self.wait

    def queued(self):
        return (1, 7)


def test_admission_predicts_a_starts_queue_time_from_the_pools_measures():
    clock = task.Clock()
    service = SlowService(clock)
    service.db = QueueDb()
    admission = Admission(service, PassLimiter(), None, lambda: True,
                          LimitsConfig(start_delay_target=0.4, start_delay_interval=1.0))
    assert admission.gate.queue_delay == admission.queue_delay
    service.db.wait = 0.3
    assert admission.queue_delay() == 0.3  # nothing measured yet: one statement per start
    admission.starts, service.db.admission_checkouts = 10, 30  # three statements per start
    assert abs(admission.queue_delay() - 0.9) < 1e-9
    req = CallbackRequest(
        application="Web callback", mode="simple", phone="15550100")
    refused = []
    admission.start(req).addErrback(lambda f: refused.append(f.trap(CallbackRefused) and f.value.code))
    assert refused == ["busy"] and service.pending == []  # refused before any work
    state = admission.load_state()
    assert state["gate"]["reason"] == "queue" and state["db_queue"] == {"running": 1, "admission": 7}
    service.db.wait = 0.1  # 0.3 s predicted: in time
    admission.start(req).addCallback(refused.append)
    assert len(service.pending) == 1
    service.pending[0].callback(None)
    assert refused == ["busy", "cb1"] and admission.starts == 11


def test_readyz_reports_a_shut_gate_without_failing():
    from cbserver.callback.nodestate import NodeMonitor
    from cbserver.config import example_path, parse_config

    clock = task.Clock()
    db = type("Db", (), {"ready": True, "reason": ""})()
    calls = type("Calls", (), {"active": 0, "running": True, "draining": False})()
    gate = StartDelayGate(clock, target=0.4, queue_delay=lambda: 2.0)
    assert not gate.admit()
    monitor = NodeMonitor(parse_config(example_path().read_text()), db, calls, clock,
                          load=lambda: {"starting": 3, "gate": gate.state()})
    monitor.last_ok, monitor.schema_problem, monitor.catalog_ok = clock.seconds(), None, True
    ready, body = monitor.readyz()
    assert ready and body["status"] == "ready"
    assert body["admission"]["gate"]["open"] is False and body["admission"]["gate"]["reason"] == "queue"
    assert body["admission"]["starting"] == 3
