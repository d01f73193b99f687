"""``Periodic``, the node's one polling loop: start/stop, failures, no overlapping polls."""

from __future__ import annotations

from twisted.internet import defer, task

from cbserver.callback.periodic import Periodic
from cbserver.errors import DatabaseUnavailable


def test_polls_every_interval_from_start_and_none_after_stop():
    clock = task.Clock()
    seen = []
    p = Periodic("t", lambda: seen.append(clock.seconds()), clock, 2.0)
    clock.advance(10)
    assert seen == []  # nothing before start
    p.startService()
    assert seen == [10.0]  # now=True: the first at once
    clock.advance(2)
    clock.advance(2)
    assert seen == [10.0, 12.0, 14.0]
    p.stopService()
    clock.advance(20)
    assert seen == [10.0, 12.0, 14.0]
    assert not clock.getDelayedCalls()  # nothing left scheduled


def test_now_false_waits_one_interval():
    clock = task.Clock()
    seen = []
    p = Periodic("t", lambda: seen.append(clock.seconds()), clock, 1.0, now=False)
    p.startService()
    assert seen == []
    clock.advance(1)
    assert seen == [1.0]
    p.stopService()


def test_a_failing_poll_does_not_stop_the_loop_nor_another_loop():
    clock = task.Clock()
    good, bad_calls = [], []

    def bad():
        bad_calls.append(clock.seconds())
        if len(bad_calls) == 1:
            raise RuntimeError("boom")  # synchronous exception
        if len(bad_calls) == 2:
            return defer.fail(DatabaseUnavailable("down"))  # a failed query
        return None

    failing = Periodic("bad", bad, clock, 1.0)
    other = Periodic("good", lambda: good.append(clock.seconds()), clock, 1.0)
    failing.startService()
    other.startService()
    for _ in range(3):
        clock.advance(1)
    assert bad_calls == [0.0, 1.0, 2.0, 3.0]
    assert good == [0.0, 1.0, 2.0, 3.0]
    assert failing.failures == 2 and other.failures == 0
    assert failing.running
    failing.stopService()
    other.stopService()
    # Twisted logs the logged failures; none is left unhandled in a Deferred.


def test_a_slow_poll_is_never_overlapped_and_missed_ticks_are_skipped():
    clock = task.Clock()
    pending: list[defer.Deferred] = []
    in_flight = {"now": 0, "max": 0}

    def slow():
        in_flight["now"] += 1
        in_flight["max"] = max(in_flight["max"], in_flight["now"])
        d = defer.Deferred()

        def done(_):
            in_flight["now"] -= 1
        d.addCallback(done)
        pending.append(d)
        return d

    p = Periodic("slow", slow, clock, 1.0)
    p.startService()
    assert len(pending) == 1
    for _ in range(5):  # the query hangs for five intervals
        clock.advance(1)
    assert len(pending) == 1 and in_flight["max"] == 1
    pending[0].callback(None)  # it answers at t=5: no burst of the missed calls
    assert len(pending) == 1
    clock.advance(1)
    assert len(pending) == 2 and in_flight["max"] == 1
    assert p.calls == 2
    p.stopService()
    pending[1].callback(None)  # a call in flight at stop finishes on its own
    clock.advance(5)
    assert p.calls == 2
