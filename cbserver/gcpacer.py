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
middle one every ``middle_every`` ticks (500 ms: it visits what survived the young ones since,
and its pause follows that interval), each between two reactor steps rather than inside
whatever allocation crossed the threshold. Each object that outlives a tick is visited once
young and once middle-aged, then leaves for the old generation. The automatic
collector stays on with ``BACKSTOP`` thresholds for a burst between two ticks (a young count
this one never reaches while the reactor turns). A full collection visits every object of the
calls in progress (100-240 ms of CPU) and the code leaves no cycle behind
(tests/unit/callback/test_callback_no_garbage.py), so it runs every ``full_every`` seconds
only, to free what a rare cycle left in the old generation.
"""

from __future__ import annotations

import gc

# Automatic thresholds while the pacer runs: young 50,000 net allocations between two ticks
# (a burst: a tariff loaded, a flood), the middle generation every 20 young collections (the
# pacer's own keep its count under 5), a full collection only after 1,000 middle ones.
BACKSTOP = (50000, 20, 1000)


class CollectorPacer:
    """Young collections every ``interval`` s on ``clock``, a middle one every ``middle_every``.

    ``collect`` is ``gc.collect`` (a test passes a recorder). ``start`` sets ``BACKSTOP``;
    ``stop`` cancels the tick and restores the thresholds found at ``start``.
    """

    def __init__(self, clock, interval: float = 0.1, middle_every: int = 5,
                 full_every: float = 1800.0, collect=gc.collect):
        self.clock = clock
        self.interval = interval
        self.middle_every = middle_every
        self.full_every = full_every
        self.collect = collect
        self._ticks = 0
        self._last_full = 0.0
        self._call = None
        self._saved: tuple[int, int, int] | None = None

    def start(self) -> None:
        """Set the backstop thresholds and schedule the first tick (idempotent)."""
        if self._call is not None and self._call.active():
            return
        if self._saved is None:
            self._saved = gc.get_threshold()
        gc.set_threshold(*BACKSTOP)
        self._last_full = self.clock.seconds()
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        """Collect the generation due, then schedule the next tick."""
        self._ticks += 1
        now = self.clock.seconds()
        if now - self._last_full >= self.full_every:
            self._last_full = now
            self.collect(2)
        elif self._ticks % self.middle_every == 0:
            self.collect(1)
        else:
            self.collect(0)
        self._call = self.clock.callLater(self.interval, self._tick)

    def stop(self) -> None:
        """Cancel the tick; the collector goes back to the thresholds it had at start."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None
