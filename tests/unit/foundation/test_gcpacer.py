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


def test_schedule_young_middle_and_stop_restores_thresholds():
    clock = Clock()
    saved = gc.get_threshold()
    collect = Recorder()
    pacer = CollectorPacer(clock, interval=0.1, middle_every=10, collect=collect,
                           old_size=lambda: 0)
    pacer.start()
    pacer.start()                       # idempotent: still one tick chain
    try:
        assert gc.get_threshold() == BACKSTOP
        for _ in range(10):
            clock.advance(0.1)
        assert collect.generations == [0] * 9 + [1]
        for _ in range(590):
            clock.advance(0.1)
        assert 2 not in collect.generations     # nothing in the old generation: no full one
        assert collect.generations.count(1) == 60
    finally:
        pacer.stop()
    assert gc.get_threshold() == saved
    assert not clock.getDelayedCalls()
    clock.advance(10)
    assert len(collect.generations) == 600


def test_full_collection_only_when_the_old_generation_grew_past_floor_and_reference():
    """Steady old generation: no full collection; growth by a quarter past the floor: one,
    and the size after it is the new reference; checks only every check_every seconds."""
    clock = Clock()
    collect = Recorder()
    sizes = {"now": 100_000}

    def old_size():
        return sizes["now"]

    def collect_and_free(generation):
        collect(generation)
        if generation == 2:
            sizes["now"] = sizes["after"]
        return 0

    pacer = CollectorPacer(clock, interval=0.1, middle_every=5, check_every=30.0,
                           full_floor=250_000, collect=collect_and_free, old_size=old_size)
    pacer.start()
    try:
        def run(seconds):
            for _ in range(int(round(seconds / 0.1))):
                clock.advance(0.1)

        run(120)                                 # under the floor: never
        assert collect.generations.count(2) == 0
        sizes["now"], sizes["after"] = 400_000, 300_000
        due = pacer.next_check
        while clock.seconds() < due - 0.15:
            clock.advance(0.1)
        assert collect.generations.count(2) == 0  # not before the next check (every 30 s)
        run(0.3)
        assert collect.generations.count(2) == 1 and pacer.reference == 300_000
        run(300)                                 # steady at 300,000 = the reference: no more
        assert collect.generations.count(2) == 1
        sizes["now"], sizes["after"] = 370_000, 300_000   # +23 %: under a quarter
        run(60)
        assert collect.generations.count(2) == 1
        sizes["now"] = 380_000                   # +27 %: collected
        run(31)
        assert collect.generations.count(2) == 2 and pacer.full_collections == 2
    finally:
        pacer.stop()


def test_the_default_count_is_the_old_generation():
    pacer = CollectorPacer(Clock())
    assert pacer.old_size() == len(gc.get_objects(2))
