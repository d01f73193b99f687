"""The reactor-paced collector: young generation bounded at a steady load, its schedule.

At a steady allocation rate CPython 3.11's young-collection trigger (allocations minus
deallocations) barely moves, so with thresholds alone the young generation grows to the whole
working set and each collection visits all of it (issue 17 item 6; docs/bench-callbacks.md,
"Steady state"). The pacer runs a young collection every interval from the clock, so the young
generation holds at most what about one interval allocated. Deterministic, on a
``task.Clock``; object counts, not timings.
"""

from __future__ import annotations

import gc
from collections import deque

import pytest
from twisted.internet.task import Clock

from cbserver.gcpacer import BACKSTOP, CollectorPacer
from cbserver.tap import GC_THRESHOLDS

STEP = 0.01            # seconds between two "callbacks" (100/s)
ALIVE = 300            # callbacks in progress: each lives ALIVE * STEP = 3 s
PER_CALLBACK = 21      # tracked objects one callback allocates (a list of 10 dicts of a list)


@pytest.fixture
def frozen_collector():
    """Everything alive now moved out of the collector's view, as the server does at start."""
    saved = gc.get_threshold()
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)


def steady_load(clock: Clock, steps: int) -> int:
    """Run a constant callback rate on ``clock``; the largest young generation seen after warm-up."""
    alive: deque = deque()
    largest = 0
    for step in range(steps):
        alive.append([{"leg": [step]} for _ in range(10)])
        if len(alive) > ALIVE:
            alive.popleft()
        clock.advance(STEP)
        if step > 2 * ALIVE and step % 7 == 0:
            largest = max(largest, len(gc.get_objects(generation=0)))
    return largest


def test_young_generation_holds_one_interval_not_the_working_set(frozen_collector):
    clock = Clock()
    gc.set_threshold(*GC_THRESHOLDS)    # what the server set before the pacer
    pacer = CollectorPacer(clock, interval=0.1)
    pacer.start()
    try:
        largest = steady_load(clock, 3000)
    finally:
        pacer.stop()
    per_interval = PER_CALLBACK * round(pacer.interval / STEP)
    # the working set is ALIVE * PER_CALLBACK = 6300 objects; thresholds alone leave all of
    # it young (no collection ever triggers); the pacer keeps about one interval's worth
    assert largest <= 3 * per_interval, largest


def test_thresholds_alone_leave_the_working_set_young(frozen_collector):
    """The cause the pacer addresses (CPython 3.11's net-allocation trigger), shown."""
    gc.set_threshold(*GC_THRESHOLDS)
    largest = steady_load(Clock(), 3000)
    assert largest >= ALIVE * PER_CALLBACK * 0.9, largest


class Recorder:
    """Stands in for ``gc.collect``: remembers which generation each call asked for."""

    def __init__(self):
        self.generations: list[int] = []

    def __call__(self, generation: int) -> int:
        self.generations.append(generation)
        return 0


def test_schedule_young_middle_full_and_stop_restores_thresholds():
    clock = Clock()
    saved = gc.get_threshold()
    collect = Recorder()
    pacer = CollectorPacer(clock, interval=0.1, middle_every=10, full_every=60.0, collect=collect)
    pacer.start()
    pacer.start()                       # idempotent: still one tick chain
    try:
        assert gc.get_threshold() == BACKSTOP
        for _ in range(10):
            clock.advance(0.1)
        assert collect.generations == [0] * 9 + [1]
        for _ in range(590):
            clock.advance(0.1)
        assert collect.generations.count(2) == 1 and collect.generations[-1] == 2
        assert collect.generations.count(1) == 59
    finally:
        pacer.stop()
    assert gc.get_threshold() == saved
    assert not clock.getDelayedCalls()
    clock.advance(10)
    assert len(collect.generations) == 600
