"""The process-wide media clock: one timer that sends the next frame of every stream.

A thousand players cost one timer. Every stream gets exactly one ``next_frame()`` per 20 ms
frame period. The period is split into ``phases`` equal slots (default 4, so the timer fires
every 5 ms) and each stream is placed in the least-loaded slot when it is added: the work of a
thousand streams is spread over the period instead of arriving in one burst, which keeps each
frame close to its own due time and the outgoing traffic smooth. ``phases=1`` gives the plain
single 20 ms tick.

Slot ``n`` is scheduled for ``start + n * interval / phases``, read from the injected clock's
``seconds()``, never as a sum of intervals, so scheduling delays do not accumulate into drift.
When the timer runs late it catches up by running the missed slots back to back (up to
``max_catchup`` frame periods, so a receiver's jitter buffer absorbs the burst); beyond that
the missed slots are skipped and each stream is told how many of its frames were lost, so it
can keep its RTP timestamps in step with real time (RFC 3550 5.1).

The timer only runs while at least one stream is registered.
"""

from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface

from cbserver.logs import Logger

FRAME_INTERVAL = 0.02  # seconds: 160 samples at 8 kHz, the G.711 packetisation of RFC 3551 4.5


class IMediaStream(Interface):
    """Something the media clock drives, one frame per frame period."""

    def next_frame():
        """Produce and send the frame for the current period."""

    def frames_skipped(count):
        """The clock fell ``count`` frames behind and skipped them; advance as if sent."""


class MediaClock:
    """One drift-corrected periodic timer calling ``next_frame()`` on every stream."""

    log = Logger()

    def __init__(
        self, clock: IReactorTime, interval: float = FRAME_INTERVAL, phases: int = 4,
        max_catchup: int = 3,
    ):
        if phases < 1:
            raise ValueError("phases must be at least 1")
        self._clock = clock
        self.interval = interval
        self.phases = phases
        self._slot = interval / phases
        self.max_catchup = max_catchup * phases  # in slots
        # one insertion-ordered set per slot, and which slot each stream is in
        self._slots: list[dict[object, None]] = [{} for _ in range(phases)]
        self._where: dict[object, int] = {}
        self._call = None
        self._start = 0.0
        self._n = 0
        self.tick_due = 0.0  # ideal time of the slot being run, for lateness measurements
        self.ticks_run = 0
        self.ticks_skipped = 0

    def __len__(self) -> int:
        return len(self._where)

    @property
    def running(self) -> bool:
        """True while the timer is scheduled."""
        return self._call is not None

    def add(self, stream) -> None:
        """Register a stream in the least-loaded slot; it gets ``next_frame()`` from then on."""
        if stream in self._where:
            return
        if self._call is None:
            self._start = self._clock.seconds()
            self._n = 1
            self._schedule()
        slot = min(range(self.phases), key=lambda p: len(self._slots[p]))
        self._slots[slot][stream] = None
        self._where[stream] = slot

    def remove(self, stream) -> None:
        """Unregister a stream (safe to call from inside its own ``next_frame``, or twice)."""
        slot = self._where.pop(stream, None)
        if slot is not None:
            self._slots[slot].pop(stream, None)
        if not self._where and self._call is not None and self._call.active():
            self._call.cancel()  # idle: no timer until the next add()
            self._call = None

    def stop(self) -> None:
        """Forget every stream and cancel the timer (service shutdown)."""
        for slot in self._slots:
            slot.clear()
        self._where.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        due = self._start + self._n * self._slot
        self._call = self._clock.callLater(max(0.0, due - self._clock.seconds()), self._tick)

    def _tick(self) -> None:
        self._call = None
        if not self._where:
            return  # idle: the next add() restarts the grid
        now = self._clock.seconds()
        # Index of the newest slot whose due time has passed; the small epsilon keeps a slot
        # fired exactly on time from looking one short because of float rounding.
        current = int((now - self._start) / self._slot + 1e-6)
        behind = max(0, current - self._n)
        if behind > self.max_catchup:
            self._skip(behind - self.max_catchup, now)
            behind = self.max_catchup
        last = self._n + behind
        while self._n <= last and self._where:
            self.tick_due = self._start + self._n * self._slot
            self._run_slot(self._slots[self._n % self.phases])
            self._n += 1
            self.ticks_run += 1
        if self._where:
            self._schedule()

    def _skip(self, slots: int, now: float) -> None:
        """Jump over ``slots`` slots, telling each stream how many of its frames were lost."""
        first = self._n
        self._n += slots
        self.ticks_skipped += slots
        self.log.warn(
            "media clock {late_ms:.1f} ms late, skipped {frames} frame periods",
            late_ms=(now - self._start - first * self._slot) * 1000, frames=slots // self.phases,
        )
        whole, extra = divmod(slots, self.phases)
        for phase, members in enumerate(self._slots):
            # slots first .. first+slots-1 hold `whole` rounds plus the first `extra` phases
            lost = whole + (1 if (phase - first) % self.phases < extra else 0)
            if lost:
                for stream in tuple(members):
                    stream.frames_skipped(lost)

    def _run_slot(self, members: dict) -> None:
        for stream in tuple(members):
            if stream not in members:
                continue  # removed by an earlier stream during this slot
            try:
                stream.next_frame()
            except Exception:  # one broken stream must not silence every other call
                self.log.failure("media stream {stream!r} failed; removed", stream=stream)
                self.remove(stream)
