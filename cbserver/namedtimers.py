"""Named one-shot timers on an injected clock, for state machines that arm and disarm them.

A state machine names its timers ("Timer B", "no-answer", "max-duration"...): arming a name
replaces the timer of that name, disarming is idempotent, and ending the machine disarms
them all, so a finished machine leaves no delayed call behind (tests check it with
``task.Clock``).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall


class NamedTimersMixin:
    """``_start_timer`` / ``_cancel_timer`` / ``_cancel_all_timers`` over ``self.clock``.

    The class using it sets ``self.clock`` (an ``IReactorTime``) and ``self._timers = {}``
    in its constructor.
    """

    clock: object
    _timers: dict[str, IDelayedCall]

    def _start_timer(self, name: str, delay: float, fn: Callable, *args) -> None:
        """(Re)arm the timer ``name`` to run ``fn(*args)`` once after ``delay`` seconds."""
        self._cancel_timer(name)
        # A bound method and an argument tuple, not a closure: a closure is a function and a
        # cell per variable, objects the garbage collector visits for the timer's whole life
        # (five per timer, against two; issue 17, docs/bench-callbacks.md "Session 9").
        self._timers[name] = self.clock.callLater(delay, self._fire_timer, name, fn, args)

    def _fire_timer(self, name: str, fn: Callable, args: tuple) -> None:
        """A timer ran out: forget it, then run its function."""
        self._timers.pop(name, None)
        fn(*args)

    def _cancel_timer(self, name: str) -> None:
        """Disarm the timer ``name`` if it is armed."""
        dc = self._timers.pop(name, None)
        if dc is not None and dc.active():
            dc.cancel()

    def _cancel_all_timers(self) -> None:
        """Disarm every timer (the machine has ended)."""
        for name in list(self._timers):
            self._cancel_timer(name)
