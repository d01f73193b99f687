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
