"""The process-wide log level: events below it are dropped before they are built."""

import pytest
from twisted.logger import LogLevel, LogPublisher

from cbserver import logs
from cbserver.config import ConfigError, parse_config
from tests.unit.foundation.test_config import MINIMAL


@pytest.fixture
def captured():
    """A Logger publishing into a list; the level is restored afterwards."""
    events = []
    publisher = LogPublisher(events.append)
    before = logs.level()
    yield logs.Logger(namespace="test", observer=publisher), events
    logs.set_level(before)


def test_events_below_the_level_are_dropped_and_the_rest_kept(captured):
    log, events = captured
    logs.set_level("info")
    log.debug("per-packet detail {n}", n=1)
    log.info("callback ended")
    log.warn("trunk slow")
    assert [e["log_level"] for e in events] == [LogLevel.info, LogLevel.warn]
    logs.set_level("error")
    log.warn("dropped")
    log.error("kept")
    assert [e["log_format"] for e in events][-1] == "kept" and len(events) == 3


def test_debug_keeps_everything(captured):
    log, events = captured
    logs.set_level("debug")
    log.debug("detail")
    assert len(events) == 1


def test_the_config_key_takes_only_known_levels():
    assert parse_config(MINIMAL).server.log_level == "info"
    assert parse_config(MINIMAL + '[server]\nlog_level = "debug"\n').server.log_level == "debug"
    with pytest.raises(ConfigError) as info:
        parse_config(MINIMAL + '[server]\nlog_level = "verbose"\n')
    assert "server.log_level" in str(info.value) and "debug, info, warn" in str(info.value)


def test_text_values_are_escaped_so_no_value_starts_a_line(captured):
    """Issue 14 item 11: a newline or an ANSI escape from a request cannot forge a line."""
    from twisted.logger import formatEvent

    log, events = captured
    logs.set_level("info")
    log.info("refused mode={mode} n={n} raw={raw}", mode="x\n2026 [forged] ok\x1b[2J\u2028\x9b", n=3,
             raw=b"\n")
    text = formatEvent(events[0])
    assert "\n" not in text and "\x1b" not in text and "\u2028" not in text
    assert "mode=x\\x0a2026 [forged] ok\\x1b[2J\\u2028\\x9b n=3 raw=b'\\n'" in text
    assert logs.escape("plain café") == "plain café" and logs.escape(7) == 7


def test_events_are_the_ones_twisted_builds(captured):
    """``Logger.emit`` builds the event itself (no ``constantly`` comparisons): the same keys
    and values as Twisted's ``Logger.emit``, the time aside; a trace is followed."""
    from twisted.logger import Logger as TwistedLogger

    log, events = captured
    logs.set_level("debug")
    twisted_events: list = []
    theirs = TwistedLogger(namespace="test", observer=LogPublisher(twisted_events.append))
    for level in LogLevel.iterconstants():
        log.emit(level, "a {x}", x="1", y=2)
        theirs.emit(level, "a {x}", x="1", y=2)
    assert len(events) == 5
    for ours, twisteds in zip(events, twisted_events, strict=True):
        assert ours.pop("log_logger") is log and twisteds.pop("log_logger") is theirs
        assert abs(ours.pop("log_time") - twisteds.pop("log_time")) < 5
        assert ours == twisteds
    trace: list = []
    log.info("traced", log_trace=trace)
    assert trace[0] == (log, log.observer)  # the publisher adds itself after


@pytest.mark.parametrize("level", ["info", 3, None, ["unhashable"]])
def test_a_level_that_is_not_a_level_is_reported_as_twisted_reports_it(captured, level):
    log, events = captured
    logs.set_level("error")
    log.emit(level, "never written")
    assert len(events) == 1 and events[0]["log_level"] == LogLevel.critical
    assert events[0]["log_format"].startswith("Got invalid log level")


def test_escape_agrees_with_the_control_class_on_every_character():
    for code in range(0x3000):
        char = chr(code)
        for text in (char, f"a{char}b"):
            expected = logs._CONTROL.sub(logs._escape_char, text)
            assert logs.escape(text) == expected, hex(code)
