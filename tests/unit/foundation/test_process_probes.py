"""The process-health probes on /metrics: garbage-collection pauses and reactor stalls."""

from __future__ import annotations

import gc

from twisted.internet.task import Clock

from cbserver.web.metrics import GcPauseProbe, Metrics, StallProbe


def value(metrics: Metrics, name: str, **labels) -> float:
    """One sample of the private registry."""
    return metrics.registry.get_sample_value(name, labels or None)


def test_a_collection_is_timed_by_generation_in_wall_and_cpu_time():
    metrics = Metrics()
    wall, cpu = iter([10.0, 10.25, 20.0, 20.001]), iter([1.0, 1.125, 2.0, 2.001])
    probe = GcPauseProbe(metrics, timer=lambda: next(wall), cpu_timer=lambda: next(cpu))
    probe("start", {"generation": 2})
    probe("stop", {"generation": 2})
    probe("start", {"generation": 0})
    probe("stop", {"generation": 0})
    assert value(metrics, "cbserver_gc_pause_seconds_count", generation="2") == 1
    assert value(metrics, "cbserver_gc_pause_seconds_sum", generation="2") == 0.25
    assert value(metrics, "cbserver_gc_pause_max_seconds", generation="2") == 0.25
    assert value(metrics, "cbserver_gc_cpu_seconds_total", generation="2") == 0.125
    assert value(metrics, "cbserver_gc_cpu_max_seconds", generation="2") == 0.125
    assert value(metrics, "cbserver_gc_pause_seconds_count", generation="0") == 1
    assert b"cbserver_gc_pause_seconds_bucket" in metrics.render()


def test_the_probe_hooks_into_the_collector_once_and_unhooks():
    metrics = Metrics()
    probe = GcPauseProbe(metrics)
    probe.install()
    probe.install()
    try:
        assert gc.callbacks.count(probe) == 1
        gc.collect()
        assert value(metrics, "cbserver_gc_pause_seconds_count", generation="2") >= 1
    finally:
        probe.uninstall()
    assert probe not in gc.callbacks


def test_a_late_tick_is_reported_as_a_stall_and_the_probe_stops_clean():
    metrics = Metrics()
    clock = Clock()
    probe = StallProbe(metrics, clock, interval=0.05)
    probe.start()
    probe.start()  # a second start while ticking changes nothing
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0.05)  # on time
    clock.advance(0.30)  # the reactor was held 250 ms past the next tick
    assert value(metrics, "cbserver_reactor_stall_seconds_count") == 2
    assert abs(value(metrics, "cbserver_reactor_stall_max_seconds") - 0.25) < 1e-9
    assert value(metrics, "cbserver_reactor_stall_seconds_bucket", le="0.05") == 1
    probe.stop()
    assert clock.getDelayedCalls() == []
