"""The process-wide media clock: one 20 ms tick that sends the next frame of every stream.

A thousand players cost one timer. Tick ``n`` is scheduled for ``start + n * interval`` read
from the injected clock's ``seconds()``, never as a sum of intervals, so scheduling delays do
not accumulate into drift. When a tick runs late it catches up by running the missed ticks
back to back (up to ``max_catchup`` of them, so a receiver's jitter buffer absorbs the burst);
beyond that the missed ticks are skipped and every stream is told how many frames it lost, so
it can keep its RTP timestamps in step with real time (RFC 3550 5.1).

The timer only runs while at least one stream is registered.
"""

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Interface

FRAME_INTERVAL = 0.02  # seconds: 160 samples at 8 kHz, the G.711 packetisation of RFC 3551 4.5


class IMediaStream(Interface):
    """Something the media clock drives, one frame per tick."""

    def next_frame():
        """Produce and send the frame for the current tick."""

    def frames_skipped(count):
        """The clock fell ``count`` ticks behind and skipped them; advance as if sent."""


class MediaClock:
    """One drift-corrected periodic tick calling ``next_frame()`` on every registered stream."""

    log = Logger()

    def __init__(self, clock: IReactorTime, interval: float = FRAME_INTERVAL, max_catchup: int = 3):
        self._clock = clock
        self.interval = interval
        self.max_catchup = max_catchup
        self._streams: dict[object, None] = {}  # insertion-ordered set
        self._call = None
        self._start = 0.0
        self._n = 0
        self.tick_due = 0.0  # ideal time of the tick being run, for lateness measurements
        self.ticks_run = 0
        self.ticks_skipped = 0

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def running(self) -> bool:
        """True while the timer is scheduled."""
        return self._call is not None

    def add(self, stream) -> None:
        """Register a stream; it gets ``next_frame()`` from the next tick on."""
        self._streams[stream] = None
        if self._call is None:
            self._start = self._clock.seconds()
            self._n = 1
            self._schedule()

    def remove(self, stream) -> None:
        """Unregister a stream (safe to call from inside its own ``next_frame``, or twice)."""
        self._streams.pop(stream, None)

    def stop(self) -> None:
        """Forget every stream and cancel the timer (service shutdown)."""
        self._streams.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        due = self._start + self._n * self.interval
        self._call = self._clock.callLater(max(0.0, due - self._clock.seconds()), self._tick)

    def _tick(self) -> None:
        self._call = None
        if not self._streams:
            return  # idle: the next add() restarts the grid
        now = self._clock.seconds()
        # Index of the newest tick whose due time has passed; the small epsilon keeps a tick
        # fired exactly on time from looking one short because of float rounding.
        current = int((now - self._start) / self.interval + 1e-6)
        behind = max(0, current - self._n)
        if behind > self.max_catchup:
            skipped = behind - self.max_catchup
            self._n += skipped
            self.ticks_skipped += skipped
            self.log.warn(
                "media clock {late_ms:.1f} ms late, skipped {skipped} ticks",
                late_ms=(now - self._start - (self._n - skipped) * self.interval) * 1000,
                skipped=skipped,
            )
            for stream in tuple(self._streams):
                stream.frames_skipped(skipped)
        last = self._n + min(behind, self.max_catchup)
        while self._n <= last and self._streams:
            self.tick_due = self._start + self._n * self.interval
            self._run_streams()
            self._n += 1
            self.ticks_run += 1
        if self._streams:
            self._schedule()

    def _run_streams(self) -> None:
        streams = self._streams
        for stream in tuple(streams):
            if stream not in streams:
                continue  # removed by an earlier stream during this tick
            try:
                stream.next_frame()
            except Exception:  # one broken stream must not silence every other call
                self.log.failure("media stream {stream!r} failed; removed", stream=stream)
                streams.pop(stream, None)
