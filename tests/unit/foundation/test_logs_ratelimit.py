"""cbserver.logs.RateLimitedLog: a bounded number of lines per key per interval, then a summary
(issue 14 item 2: a flood of bad packets must not become a flood of log lines)."""

from twisted.internet.task import Clock
from twisted.logger import LogLevel

from cbserver.logs import RateLimitedLog


class Recorder:
    def __init__(self):
        self.events = []

    def emit(self, level, format=None, **kwargs):  # noqa: A002
        self.events.append((level, format, kwargs))

    def warn(self, format, **kwargs):  # noqa: A002
        self.emit(LogLevel.warn, format, **kwargs)

    def failure(self, format, failure=None, **kwargs):  # noqa: A002
        self.emit(LogLevel.critical, format, failure=failure, **kwargs)


def test_at_most_n_lines_per_key_then_one_summary_when_the_window_ends():
    clock, out = Clock(), Recorder()
    limited = RateLimitedLog(out, lines=3, interval=60.0, clock=clock)
    written = [limited.info("bad-rtcp", "bad rtcp {n}", n=n) for n in range(500)]
    assert written == [True] * 3 + [False] * 497
    assert len(out.events) == 3 and limited.suppressed("bad-rtcp") == 497
    assert limited.info("other-key", "another site") is True  # keys are counted apart
    clock.advance(60)
    summary = out.events[-1]
    assert summary[0] == LogLevel.warn and summary[2]["count"] == 497
    assert "suppressed" in summary[1] and summary[2]["rate_key"] == "bad-rtcp"
    assert clock.getDelayedCalls() == []
    assert limited.info("bad-rtcp", "bad rtcp again") is True  # a new window


def test_a_quiet_key_writes_no_summary_and_leaves_no_timer():
    clock, out = Clock(), Recorder()
    limited = RateLimitedLog(out, lines=3, interval=60.0, clock=clock)
    limited.warn("k", "one")
    clock.advance(120)
    assert [e[1] for e in out.events] == ["one"] and clock.getDelayedCalls() == []


def test_failures_are_limited_too():
    clock, out = Clock(), Recorder()
    limited = RateLimitedLog(out, lines=2, interval=10.0, clock=clock)
    for _ in range(100):
        try:
            raise ValueError("boom")
        except ValueError:
            limited.failure("handler", "handling failed")
    assert len(out.events) == 2
    clock.advance(10)
    assert out.events[-1][2]["count"] == 98
