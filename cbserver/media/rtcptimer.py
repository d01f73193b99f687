"""One timer for the RTCP reports of every RTP session on a clock.

A timer per session is a DelayedCall and three bound methods alive for the whole call, which
the paced garbage collections visit again and again (cbserver/gcpacer.py), and a push into
the reactor's heap of timers, compared in Python, at every report. Here each session only
has a due time in one table, and one timer, running every ``granularity`` seconds while any
session is registered, sends the reports that are due. RFC 3550 6.3.1 randomises each
interval to 0.5-1.5 times the nominal 5 s; a report leaves at most ``granularity`` (0.25 s)
after its due time, within that randomisation.
"""

from __future__ import annotations

import weakref

from cbserver.logs import Logger, RateLimitedLog

_log = Logger()
_limited = RateLimitedLog(_log, lines=3, interval=60.0)


class RtcpTimer:
    """Due times of sessions' next reports, served by one periodic timer on ``clock``."""

    def __init__(self, clock, granularity: float = 0.25):
        # Weak: the table of shared timers is keyed by the clock, and a strong reference from
        # its value would keep every test's clock alive for the whole run.
        self._clock_ref = weakref.ref(clock)
        self.granularity = granularity
        self._due: dict[object, float] = {}
        self._call = None

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, session, delay: float) -> None:
        """Call ``session.rtcp_due()`` once, ``delay`` seconds from now (or up to
        ``granularity`` later); replaces the session's previous due time."""
        clock = self._clock_ref()
        self._due[session] = clock.seconds() + delay
        if self._call is None:
            self._call = clock.callLater(self.granularity, self._tick)

    def remove(self, session) -> None:
        """Forget the session (closed); the timer stops with the last one."""
        self._due.pop(session, None)
        if not self._due and self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _tick(self) -> None:
        self._call = None
        clock = self._clock_ref()
        now = clock.seconds()
        due = [s for s, when in self._due.items() if when <= now]
        for session in due:
            if self._due.pop(session, None) is None:
                continue  # removed by an earlier session's report in this tick
            try:
                session.rtcp_due()
            except Exception:  # one session's bug must not stop every other call's reports
                _limited.failure("rtcp-timer", "rtcp report failed")
        if self._due and self._call is None:
            self._call = clock.callLater(self.granularity, self._tick)


_shared: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_timer(clock) -> RtcpTimer:
    """The process's RTCP timer for ``clock`` (one per reactor, or per test clock)."""
    timer = _shared.get(clock)
    if timer is None:
        timer = _shared[clock] = RtcpTimer(clock)
    return timer
