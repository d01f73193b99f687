"""Every session's RTCP reports are sent by one timer per clock (cbserver/media/rtcptimer.py).

Sessions on a fake UDP reactor and clock: one DelayedCall however many sessions, each report
inside RFC 3550 6.3.1's randomised interval (0.5-1.5 times the nominal) plus the timer's
granularity, nothing left scheduled once the last session closes, and one session's failure
or closing inside the tick stopping no other. Closing a leg (which leaves the timer) fires at
once when its ports stop at once, and still fails when a port fails to stop.
"""

from __future__ import annotations

import random

from cbserver.media import rtcp
from cbserver.media.ports import PortPool
from cbserver.media.rtcptimer import RtcpTimer, shared_timer
from cbserver.media.session import RtpSession
from tests.unit.media.fakes import FakeReactor

PEER = "192.0.2.10"  # documentation address: fake reactor only


def open_sessions(n: int, interval: float = 5.0):
    reactor = FakeReactor()
    reactor.advance(1000.0)
    pool = PortPool(20000, 20000 + 2 * n - 1)
    rng = random.Random(7)
    sessions = []
    for i in range(n):
        s = RtpSession(reactor, reactor, pool, "127.0.0.1", call_id=f"c{i}", rng=rng,
                       rtcp_interval=interval)
        s.open()
        s.configure((PEER, 40000 + 2 * i), 0, "PCMU")
        sessions.append(s)
    return reactor, sessions


def report_times(reactor, session) -> list[float]:
    return [t for t, _data in reactor.ports[session.local_port + 1].sent_at]


def test_one_timer_for_many_sessions_each_report_in_its_randomised_interval():
    reactor, sessions = open_sessions(40)
    assert len(reactor.getDelayedCalls()) == 1
    # each session's interval is its own random draw (RFC 3550 6.3.1), not one grid for all
    assert len(set(shared_timer(reactor)._due.values())) == 40
    for port in reactor.ports.values():
        port.sent_at = []
        port.write = (lambda p: lambda data, addr: p.sent_at.append((reactor.seconds(), data)))(port)
    start = reactor.seconds()
    for _ in range(int(60 / 0.05)):
        reactor.advance(0.05)
        assert len(reactor.getDelayedCalls()) == 1
    for s in sessions:
        times = [start, *report_times(reactor, s)]
        assert len(times) >= 9  # 60 s at most 7.75 s apart
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert all(2.5 - 1e-9 <= g <= 7.5 + 0.25 + 0.05 + 1e-9 for g in gaps), gaps
        data = reactor.ports[s.local_port + 1].sent_at[-1][1]
        assert rtcp.parse_compound(data).sender_ssrc == s.ssrc
    for s in sessions:
        s.close()
    assert reactor.getDelayedCalls() == []
    assert len(shared_timer(reactor)) == 0


def test_a_session_closed_by_another_in_the_same_tick_is_skipped():
    clock = FakeReactor()
    timer = RtcpTimer(clock)
    calls = []

    class Session:
        def __init__(self, name, action=None):
            self.name, self.action = name, action

        def rtcp_due(self):
            calls.append(self.name)
            if self.action:
                self.action()

    b = Session("b")
    a = Session("a", lambda: timer.remove(b))
    c = Session("c", lambda: 1 / 0)  # a bug in one session's report
    d = Session("d")
    for s in (a, b, c, d):
        timer.schedule(s, 1.0)
    clock.advance(1.25)
    assert calls == ["a", "c", "d"]
    assert len(timer) == 0 and clock.getDelayedCalls() == []
    timer.schedule(d, 0.1)  # the timer starts again with the next session
    clock.advance(0.25)
    assert calls == ["a", "c", "d", "d"]


def test_a_rescheduled_session_keeps_one_due_time():
    clock = FakeReactor()
    timer = RtcpTimer(clock)
    calls = []

    class Session:
        def rtcp_due(self):
            calls.append(clock.seconds())

    s = Session()
    timer.schedule(s, 1.0)
    timer.schedule(s, 3.0)  # replaces the first
    for _ in range(20):
        clock.advance(0.25)
    assert calls == [3.0]


def test_closing_returns_at_once_and_a_port_that_fails_to_stop_fails_the_close():
    from twisted.internet import defer

    reactor, sessions = open_sessions(2)
    done = []
    sessions[0].close().addCallback(done.append)
    assert done == [None]  # the fake ports stop at once: nothing to wait for

    def broken():
        raise OSError("stop failed")

    reactor.ports[sessions[1].local_port].stopListening = broken
    failed = []
    sessions[1].close().addErrback(failed.append)
    assert len(failed) == 1 and failed[0].check(defer.FirstError)
    assert failed[0].value.subFailure.check(OSError)
    assert reactor.getDelayedCalls() == []
