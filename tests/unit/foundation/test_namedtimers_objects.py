"""A named timer holds few objects for the garbage collector (issue 17 item 2).

Every object a callback keeps alive past 100 ms is visited by the paced young and middle
collections (cbserver/gcpacer.py); the SIP transactions, the call and the session arm a few
named timers each. An armed timer is the clock's DelayedCall and what it holds: here a bound
method and one argument tuple, where a closure cost a function and four cells. Counted with
``gc.get_objects()`` on a ``task.Clock``; the behaviour (fire once, re-arm, cancel) is below too.
"""

from __future__ import annotations

import gc

from twisted.internet.task import Clock

from cbserver.namedtimers import NamedTimersMixin


class Owner(NamedTimersMixin):
    """The smallest user of the mixin."""

    def __init__(self, clock):
        self.clock = clock
        self._timers = {}
        self.fired: list = []

    def note(self, *args):
        self.fired.append(args)


def test_an_armed_timer_costs_at_most_eight_tracked_objects():
    clock = Clock()
    owners = [Owner(clock) for _ in range(200)]
    callbacks = [o.note for o in owners]  # the function given: the caller's, not the timer's
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for owner, fn in zip(owners, callbacks, strict=True):
            owner._start_timer("B", 32.0, fn, "timeout")
        per_timer = (len(gc.get_objects()) - before) / len(owners)
    finally:
        gc.enable()
    # The DelayedCall with task.Clock's canceller, resetter and clock method, the bound
    # method it calls and its argument tuple, the caller's ("timeout",) tuple, and the
    # _timers dict (tracked once it holds an object): 8. The closure made it 12.
    assert per_timer <= 8


def test_timers_fire_once_rearm_and_cancel():
    clock = Clock()
    owner = Owner(clock)
    owner._start_timer("A", 1.0, owner.note, 1)
    owner._start_timer("A", 2.0, owner.note, 2)  # re-armed: the first never fires
    owner._start_timer("B", 1.5, owner.note, 3)
    owner._start_timer("C", 1.0, owner.note, 4)
    owner._cancel_timer("C")
    clock.advance(1.6)
    assert owner.fired == [(3,)] and set(owner._timers) == {"A"}
    clock.advance(1.0)
    assert owner.fired == [(3,), (2,)] and owner._timers == {}
    owner._start_timer("D", 1.0, owner.note)
    owner._cancel_all_timers()
    clock.advance(5)
    assert owner.fired == [(3,), (2,)] and not clock.getDelayedCalls()
