"""The garbage collector paced by the reactor: short young collections between reactor steps.

CPython 3.11 starts a young collection when *allocations minus deallocations* of tracked
objects since the last one pass ``threshold0``, and every deallocation counts, that of an old
object too. At a steady callback rate allocations and deallocations balance, so the count
creeps up only by the noise and a young collection comes every 1.5-2 s whatever the
threshold; by then the young generation holds everything allocated since and still alive: 36,000
to 64,000 objects (180,000-280,000 references) at 60 callbacks/s, 20-40 ms of CPU per young
collection, and a middle one (every 10 young) over 85,000 objects for 80-140 ms
(docs/bench-callbacks.md, "Steady state"). The cost of a collection follows the time since the
last one, not the threshold.

So the reactor runs them: a young collection every ``interval`` (100 ms: a few ms each), a
middle one every ``middle_every`` ticks (200 ms: it visits what survived the young ones
since, and its pause follows that interval; every 500 ms its worst pauses under overload
were 30-45 ms, every 200 ms 14-17 ms for the same total: docs/bench-callbacks.md, "Session
8"), each between two reactor steps rather than inside
whatever allocation crossed the threshold. Each object that outlives a tick is visited once
young and once middle-aged, then leaves for the old generation. The automatic
collector stays on with ``BACKSTOP`` thresholds for a burst between two ticks (a young count
this one never reaches while the reactor turns). A full collection visits every object of the
calls in progress (100-240 ms of CPU) and the code leaves no cycle behind
(tests/unit/callback/test_callback_no_garbage.py), so it runs only when the old generation
may hold garbage: every ``check_every`` seconds the pacer counts it (``gc.get_objects(2)``, a
few ms for 140,000 objects) and collects it in full when it holds at least ``full_floor``
objects and a quarter more than after the last full collection (CPython's own rule counts
objects *promoted* since, which at a steady call rate grows without end although the calls
die young; this counts the ones still there). At a steady rate the old generation holds the
calls in progress, a constant, and no full collection runs; a leak of cycles, or a higher
load, grows it and the next check frees it, and the count after that collection is the new
reference.
"""

from __future__ import annotations

import gc

# Automatic thresholds while the pacer runs: young 50,000 net allocations between two ticks
# (a burst: a tariff loaded, a flood), the middle generation every 20 young collections (the
# pacer's own keep its count under 2), and never a full one: each paced middle collection
# adds one to the old generation's count and only a full collection resets it, so with any
# finite threshold the first burst after that many middle ones would become an unplanned full
# collection. The pacer's own check decides those.
BACKSTOP = (50000, 20, 1 << 30)


class CollectorPacer:
    """Young collections every ``interval`` s on ``clock``, a middle one every ``middle_every``.

    ``collect`` is ``gc.collect`` (a test passes a recorder). ``start`` sets ``BACKSTOP``;
    ``stop`` cancels the tick and restores the thresholds found at ``start``.
    """

    def __init__(self, clock, interval: float = 0.1, middle_every: int = 2,
                 check_every: float = 30.0, full_floor: int = 250_000, growth: float = 0.25,
                 collect=gc.collect, old_size=None):
        self.clock = clock
        self.interval = interval
        self.middle_every = middle_every
        self.check_every = check_every
        self.full_floor = full_floor
        self.growth = growth
        self.collect = collect
        # How many objects the old generation holds (a test passes its own count).
        self.old_size = old_size if old_size is not None else (lambda: len(gc.get_objects(2)))
        self.reference = 0  # the old generation's size after the last full collection
        self.full_collections = 0
        self._ticks = 0
        self._last_check = 0.0
        self._call = None
        self._saved: tuple[int, int, int] | None = None

    def start(self) -> None:
        """Set the backstop thresholds and schedule the first tick (idempotent)."""
        if self._call is not None and self._call.active():
            return
        if self._saved is None:
            self._saved = gc.get_threshold()
        gc.set_threshold(*BACKSTOP)
        self._last_check = self.clock.seconds()
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        """Collect the generation due, then schedule the next tick."""
        self._ticks += 1
        now = self.clock.seconds()
        if now - self._last_check >= self.check_every and self._old_grew():
            self.collect(2)
            self.full_collections += 1
            self.reference = self.old_size()
        elif self._ticks % self.middle_every == 0:
            self.collect(1)
        else:
            self.collect(0)
        self._call = self.clock.callLater(self.interval, self._tick)

    @property
    def next_check(self) -> float:
        """When (on ``clock``) the old generation is counted next."""
        return self._last_check + self.check_every

    def _old_grew(self) -> bool:
        """Whether the old generation is big enough, and has grown enough, to collect it."""
        self._last_check = self.clock.seconds()
        size = self.old_size()
        return size >= self.full_floor and size > self.reference * (1.0 + self.growth)

    def stop(self) -> None:
        """Cancel the tick; the collector goes back to the thresholds it had at start."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
