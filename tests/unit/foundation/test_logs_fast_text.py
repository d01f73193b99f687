"""``FastClassicText`` writes exactly the line Twisted's text observer writes, for any event.

Each event below is formatted by both: Twisted's ``formatEventAsClassicLogText`` with
``formatTime(t, timeFormatRFC3339)`` (what twistd's ``textFileLogObserver`` does) and the fast
formatter; the strings must be equal. The events cover the fast path (the project's own
events) and every case it hands back to Twisted: tracebacks, ``log_system``, missing fields,
call syntax, bytes and non-string formats, time stamps next to a second boundary and across
a daylight-saving change.
"""

from __future__ import annotations

import io
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import (
    FileLogObserver,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
    formatTime,
    textFileLogObserver,
    timeFormatRFC3339,
)
from twisted.python.failure import Failure

from cbserver import logs


def twisted_line(event):
    return formatEventAsClassicLogText(event, formatTime=lambda t: formatTime(t, timeFormatRFC3339))


def event(fmt="callback ended session={sid} cause={cause}", when=1_780_000_123.456, **kw):
    e = {"log_format": fmt, "log_level": LogLevel.info, "log_namespace": "cbserver.callback",
         "log_time": when, "sid": "s-1", "cause": "legb_hung_up"}
    e.update(kw)
    return e


class Obj:
    """A value with attributes and a repr, for field access and conversions."""

    attr = "A"
    items = ["zero", "one"]

    def __repr__(self):
        return "<Obj>"


def _boom():
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        return Failure()


CASES = {
    "plain": event(),
    "conversions and specs": event("{x!r} {x!s} {x!a} {n:>6.2f} {n:e} {s:^9} {{braces}}",
                                   x="é\u2028", n=3.14159, s="mid"),
    "attribute and index": event("{o.attr} {o.items[1]} {m[k]}", o=Obj(), m={"k": "v"}),
    "nested spec": event("{n:{w}.{p}f}", n=2.5, w=8, p=3),
    "newlines": event("line one\nline two {x}", x="a\nb"),
    "empty text": event(""),
    "no format": {k: v for k, v in event().items() if k != "log_format"},
    "none format": event(None),
    "bytes format": event(b"bytes {sid}"),
    "int format": event(42),
    "missing field": event("needs {absent}"),
    "call syntax": event("called {f()}", f=lambda: "result"),
    "positional": event("pos {} {0}"),
    "bad spec": event("{n:q}", n=1),
    "repr raises": event("{o!r}", o=type("Bad", (), {"__repr__": lambda self: 1 / 0})()),
    "system": event(log_system="HTTPChannel,3,127.0.0.1"),
    "no level": {k: v for k, v in event().items() if k != "log_level"},
    "no namespace": {k: v for k, v in event().items() if k != "log_namespace"},
    "no time": {k: v for k, v in event().items() if k != "log_time"},
    "flattened": event(log_flattened={"sid!:": "s-1", "cause!:": "x"}),
    "failure": event("it failed {sid}", log_failure=_boom()),
    "just below a second": event(when=1_780_000_123.9999996),
    "exactly a second": event(when=1_780_000_124.0),
    "int time": event(when=1_780_000_124),
    "before 1970": event(when=-5.5),
    "warn level": event(log_level=LogLevel.warn),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_line_is_twisteds(name):
    fast = logs.FastClassicText()
    e = CASES[name]
    assert fast(e) == twisted_line(e)
    assert fast(e) == twisted_line(e)  # the remembered time stamp, second time round


def test_the_stamp_follows_the_second_and_the_time_zone_change():
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Paris"
    time.tzset()
    try:
        fast = logs.FastClassicText()
        change = 1_774_746_000  # 2026-03-29 01:00 UTC: Paris goes from +0100 to +0200
        for when in (change - 1.5, change - 0.25, change - 0.0000001, change, change + 0.5,
                     change + 3600.75):
            e = event(when=when)
            assert fast(e) == twisted_line(e), when
        assert "+0100" in fast(event(when=change - 0.25))
        assert "+0200" in fast(event(when=change))
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40), n=st.floats(allow_nan=False, allow_infinity=False),
       when=st.floats(min_value=0, max_value=4e9))
def test_any_text_number_and_time(text, n, when):
    fast = logs.FastClassicText()
    e = event("t={t!r} n={n:.3f} s={t}", t=text, n=n, when=when)
    assert fast(e) == twisted_line(e)


def test_twistd_observers_get_it_and_others_are_left_alone():
    out = io.StringIO()
    text = textFileLogObserver(out)
    other_format = textFileLogObserver(io.StringIO(), timeFormat="%H:%M")
    custom = FileLogObserver(io.StringIO(), lambda e: "custom\n")
    publisher = LogPublisher(text, other_format, custom)
    assert logs.speed_up_text_logs(publisher) == 1
    assert isinstance(text.formatEvent, logs.FastClassicText)
    assert not isinstance(other_format.formatEvent, logs.FastClassicText)
    assert custom.formatEvent(None) == "custom\n"
    logs.Logger(namespace="cbserver.t", observer=publisher).info("hello {who}", who="there")
    assert out.getvalue().endswith(" [cbserver.t#info] hello there\n")
