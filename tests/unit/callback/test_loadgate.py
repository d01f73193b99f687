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


def test_slow_starts_for_a_whole_interval_shut_it_and_one_fast_start_opens_it():
    clock = task.Clock()
    gate = StartDelayGate(clock, target=0.4, interval=1.0)
    a, b = gate.started(), gate.started()  # two requests stuck behind a queue
    clock.advance(0.5)
    gate.finished(a)  # 0.5 s, over target: the interval starts now
    assert gate.admit()
    clock.advance(1.0)
    c = gate.started()  # admitted at 1.5 s
    clock.advance(0.1)
    gate.finished(b)  # 1.6 s, still over target a whole interval later: a standing queue
    assert gate.shedding and not gate.admit() and not gate.admit() and gate.refused == 2
    clock.advance(0.1)
    gate.finished(c)  # started in 0.2 s: the queue is gone
    assert gate.admit() and not gate.shedding and gate.refused == 2


def test_one_fast_start_inside_the_interval_resets_it():
    clock = task.Clock()
    gate = StartDelayGate(clock, target=0.4, interval=1.0)
    run(gate, clock, 0.9)
    run(gate, clock, 0.1)  # CoDel's minimum: the queue drained once, so it is not standing
    run(gate, clock, 0.9)
    assert gate.admit() and not gate.shedding


def test_the_gate_opens_once_nothing_admitted_is_in_flight():
    clock = task.Clock()
    gate = StartDelayGate(clock, target=0.4, interval=1.0)
    tokens = [gate.started() for _ in range(3)]
    for t in tokens:  # each slow, over more than an interval
        clock.advance(0.6)
        gate.finished(t)
    assert gate.shedding and gate.in_flight == 0
    # No request left to measure: the next one is let through rather than refused forever.
    assert gate.admit() and not gate.shedding


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


def test_admission_refuses_busy_while_starts_stand_in_a_queue_and_recovers():


    clock = task.Clock()
    service = SlowService(clock)
    admission = Admission(service, PassLimiter(), None, lambda: True,
                          LimitsConfig(start_delay_target=0.4, start_delay_interval=1.0))
    req = CallbackRequest(application="Web callback", mode="simple", phone="15550100")
    outcomes = []

    def start():
        admission.start(req).addCallbacks(outcomes.append,
                                          lambda f: outcomes.append(f.trap(CallbackRefused)
                                                                    and f.value.code))

    for _ in range(3):
        start()
    clock.advance(0.5)
    service.pending[0].callback(None)  # 0.5 s: over target, the interval opens
    clock.advance(1.0)
    service.pending[1].callback(None)  # 1.5 s, a whole interval later: standing queue
    start()
    assert outcomes == ["cb1", "cb2", "busy"]
    assert admission.starting == 1 and len(service.pending) == 3  # no work for the refused one
    service.pending[2].callback(None)  # the last one in flight answers: the gate opens
    start()
    assert len(service.pending) == 4
    service.pending[3].callback(None)  # answered at once: within target
    assert outcomes == ["cb1", "cb2", "busy", "cb3", "cb4"] and not admission.gate.shedding


def test_late_legb_authorizations_of_running_callbacks_shut_it_too():
    clock = task.Clock()
    gate = StartDelayGate(clock, target=0.4, interval=1.0)
    token = gate.started()  # one new request in flight
    gate.observe(0.9)  # a running callback's legB waited 0.9 s for its authorization
    clock.advance(1.0)
    gate.observe(0.7)  # and another, a whole interval later: the database queue stands
    assert not gate.admit()
    gate.observe(0.1)  # one legB authorized in time: no standing queue
    assert gate.admit()
    gate.finished(token)


def test_admission_wires_the_services_legb_delays_to_its_gate():
    clock = task.Clock()
    service = SlowService(clock)
    admission = Admission(service, PassLimiter(), None, lambda: True,
                          LimitsConfig(start_delay_target=0.4, start_delay_interval=1.0))
    assert service.on_legb_delay == admission.gate.observe
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
