"""The shared media clock, driven by a fake clock."""

from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cbserver.media.clock import IMediaStream, MediaClock


@implementer(IMediaStream)
class Recorder:
    def __init__(self, media, clock, stop_after=None):
        self.media, self.clock, self.stop_after = media, clock, stop_after
        self.times, self.dues, self.skipped = [], [], 0

    def next_frame(self):
        self.times.append(self.clock.seconds())
        self.dues.append(self.media.tick_due)
        if self.stop_after is not None and len(self.times) >= self.stop_after:
            self.media.remove(self)

    def frames_skipped(self, count):
        self.skipped += count


def make(phases=1):
    clock = Clock()
    clock.advance(1000.0)
    return clock, MediaClock(clock, phases=phases)


def test_recorder_is_a_media_stream():
    clock, media = make()
    assert verifyObject(IMediaStream, Recorder(media, clock))


def test_one_timer_serves_a_thousand_streams():
    clock, media = make(phases=4)
    streams = [Recorder(media, clock, stop_after=5) for _ in range(1000)]
    for s in streams:
        media.add(s)
    assert len(clock.getDelayedCalls()) == 1
    clock.pump([0.02] * 5)
    assert all(len(s.times) == 5 for s in streams)
    assert clock.getDelayedCalls() == []
    assert not media.running


def test_ticks_stay_on_the_grid_despite_late_firing():
    clock, media = make()
    rec = Recorder(media, clock, stop_after=50)
    media.add(rec)
    for _ in range(50):
        # Every tick fires 7 ms late; the next is still scheduled for start + n*20ms.
        clock.advance(clock.getDelayedCalls()[0].getTime() - clock.seconds() + 0.007)
    assert [round(d - 1000.0, 6) for d in rec.dues] == [round(0.02 * n, 6) for n in range(1, 51)]
    lateness = [t - d for t, d in zip(rec.times, rec.dues, strict=True)]
    assert max(lateness) < 0.0071  # no accumulation: a sum of intervals would reach 350 ms
    assert clock.getDelayedCalls() == []


def test_short_stall_is_caught_up_long_stall_is_skipped():
    clock, media = make()
    rec = Recorder(media, clock)
    media.add(rec)
    clock.advance(0.02)
    assert len(rec.times) == 1
    clock.advance(0.06)  # two ticks missed: caught up in the same reactor turn
    assert len(rec.times) == 4 and rec.skipped == 0
    clock.advance(0.2)   # ten ticks due, three caught up, seven skipped
    assert rec.skipped == 6
    assert len(rec.times) == 4 + 4
    assert media.ticks_run + media.ticks_skipped == 14
    media.remove(rec)
    clock.advance(0.02)
    assert clock.getDelayedCalls() == []


def test_stream_removed_by_another_during_a_tick_is_not_called():
    clock, media = make()
    victim = Recorder(media, clock)

    @implementer(IMediaStream)
    class Killer:
        def next_frame(self):
            media.remove(victim)
            media.remove(self)

        def frames_skipped(self, count):
            pass

    media.add(Killer())
    media.add(victim)
    clock.advance(0.02)
    assert victim.times == []
    clock.advance(0.02)
    assert clock.getDelayedCalls() == []


def test_a_failing_stream_is_dropped_and_others_keep_running():
    clock, media = make()

    @implementer(IMediaStream)
    class Broken:
        def next_frame(self):
            raise RuntimeError("boom")

        def frames_skipped(self, count):
            pass

    good = Recorder(media, clock, stop_after=2)
    media.add(Broken())
    media.add(good)
    clock.pump([0.02, 0.02])
    assert len(good.times) == 2
    assert len(media) == 0
    assert clock.getDelayedCalls() == []


def test_stop_cancels_the_timer():
    clock, media = make()
    media.add(Recorder(media, clock))
    media.stop()
    assert clock.getDelayedCalls() == []


def test_phases_spread_streams_over_the_period_one_frame_each_per_20ms():
    clock, media = make(phases=4)
    streams = [Recorder(media, clock) for _ in range(8)]
    for s in streams:
        media.add(s)
    clock.pump([0.005] * 40)  # 200 ms
    for s in streams:
        assert len(s.times) == 10
        gaps = {round(b - a, 6) for a, b in zip(s.dues, s.dues[1:], strict=False)}
        assert gaps == {0.02}
    firsts = sorted(round(s.dues[0] - 1000.0, 6) for s in streams)
    assert firsts == [0.005, 0.005, 0.01, 0.01, 0.015, 0.015, 0.02, 0.02]  # two per slot
    for s in streams:
        media.remove(s)
    clock.advance(0.005)
    assert clock.getDelayedCalls() == []


def test_phased_skip_tells_each_stream_its_own_lost_frames():
    clock, media = make(phases=4)
    streams = [Recorder(media, clock) for _ in range(4)]
    for s in streams:
        media.add(s)
    clock.advance(0.02)  # slots 1..4 run, one frame each
    clock.advance(1.0)   # 200 slots due: 12 caught up (3 periods), the rest skipped
    for s in streams:
        assert len(s.times) + s.skipped == 51  # one frame per 20 ms over 1.02 s
    media.stop()
