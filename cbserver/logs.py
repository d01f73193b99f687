"""Logging: a level filter applied before an event is built, and JSON lines for log shippers.

``Logger`` is Twisted's ``Logger`` with one difference: an event below the process-wide level
(``[server] log_level``, set by ``set_level`` when the service starts) is dropped before its
dict is built or formatted. A callback passes through dozens of debug points (SIP calls,
media, authorization); at the default ``info`` they cost a comparison each, not a log line.
Library use (tests, scripts) keeps every event unless it sets a level.

Every ``str`` value given to an event is escaped before it is emitted: a
control character (C0, DEL, C1, the Unicode line and paragraph separators) becomes ``\\xNN``
or ``\\uNNNN``. Values from a request (a mode, an account, a path, a User-Agent, a SIP
header) reach log lines, and a newline in one would forge a line of its own, an ANSI escape
would rewrite the operator's terminal (issue 14 item 11). Doing it here covers every log call
at once, including those written later.

JSON logs use twistd's own option: ``twistd --logger cbserver.logs.json_stdout -n cbserver ...``.

twistd's text log file formats every line through Twisted's general formatter (a time zone
object and ``strftime`` per line, ``string.Formatter`` in Python): 3.4 % of the server's CPU at
five lines per callback (docs/bench-callbacks.md, "Session 8: server CPU per callback").
``FastClassicText`` writes the same bytes for the project's own events for less, and hands
every other event to Twisted's formatter; ``speed_up_text_logs`` puts it into twistd's
observer when the server starts.
"""

import re
import sys
from datetime import datetime
from time import time

from twisted.logger import (
    FileLogObserver,
    LogLevel,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
    jsonFileLogObserver,
    timeFormatRFC3339,
)
from twisted.logger import Logger as _TwistedLogger
from twisted.python._tzhelper import FixedOffsetTimeZone

_minimum = [LogLevel.debug]
# Each level's rank, for the level test: comparing ``LogLevel`` constants goes through
# ``constantly``'s ``__lt__`` and Twisted's own validity test sorts every level on each event
# (together about 0.4 % of the server's CPU at five lines per callback, session 10).
_RANK = {lvl: i for i, lvl in enumerate(LogLevel.iterconstants())}
_minimum_rank = [0]
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_char(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value):
    """``value`` with its control characters escaped if it is a ``str``; any other value
    unchanged (``bytes`` are formatted with ``repr``, which escapes them already)."""
    if isinstance(value, str) and not (value.isascii() and value.isprintable()) \
            and _CONTROL.search(value):
        # (printable ASCII, the usual value, has no control character: no regex search)
        return _CONTROL.sub(_escape_char, value)
    return value


def set_level(name: str) -> None:
    """Drop events less severe than ``name`` (``debug``, ``info``, ``warn``, ``error``, ``critical``)."""
    _minimum[0] = LogLevel.levelWithName(name)
    _minimum_rank[0] = _RANK[_minimum[0]]


def level() -> str:
    """The name of the current minimum level."""
    return _minimum[0].name


class Logger(_TwistedLogger):
    """``twisted.logger.Logger`` that drops events below the process-wide level first."""

    def emit(self, level, format=None, **kwargs):  # noqa: A002 - Twisted's own signature
        """Emit the event unless it is less severe than the configured level; text values
        are escaped (``escape``) so that no value can start a line of its own.

        The event is the one ``twisted.logger.Logger.emit`` builds, built here; anything
        that is not a ``LogLevel`` goes to Twisted's, which reports it.
        """
        try:
            rank = _RANK.get(level)
        except TypeError:  # unhashable: not a level
            rank = None
        if rank is None:
            super().emit(level, format, **kwargs)
            return
        if rank < _minimum_rank[0]:
            return
        for key, value in kwargs.items():
            if isinstance(value, str):
                kwargs[key] = escape(value)
        kwargs.update(log_logger=self, log_level=level, log_namespace=self.namespace,
                      log_source=self.source, log_format=format, log_time=time())
        if "log_trace" in kwargs:
            kwargs["log_trace"].append((self, self.observer))
        self.observer(kwargs)


def json_stdout():
    """A log observer writing one JSON object per event to standard output."""
    return jsonFileLogObserver(sys.stdout, recordSeparator="")


def describe_failure(failure_or_exc) -> str:
    """One line describing a failure (an exception or a Failure): its type and the first
    line of its message, as the pool, its callers and the mailer log it."""
    exc = getattr(failure_or_exc, "value", failure_or_exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


class RateLimitedLog:
    """At most ``lines`` log lines per key per ``interval`` seconds, then one summary.

    For error paths fed by the network (a malformed RTP, RTCP or SIP datagram): a flood of bad
    packets must not become a flood of log lines (issue 14). Each key (a constant naming the
    error site, never a value taken from a packet, so the table stays small) gets a window of
    ``interval`` seconds starting at its first line; past ``lines`` lines in a window the rest
    are counted, and when the window ends one ``suppressed K lines`` summary is written.
    ``clock`` is an ``IReactorTime`` (the global reactor when None, looked up on first use).
    """

    def __init__(self, logger: "Logger", lines: int = 5, interval: float = 60.0, clock=None):
        self.logger = logger
        self.lines = lines
        self.interval = interval
        self._clock = clock
        # key -> [window start, lines written, lines suppressed, summary DelayedCall or None]
        self._windows: dict[str, list] = {}

    def _now(self) -> float:
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        return self._clock.seconds()

    def emit(self, level, key: str, format: str, **kwargs) -> bool:  # noqa: A002 - as Logger.emit
        """Log ``format`` at ``level`` unless ``key`` used its lines; True when written."""
        now = self._now()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self.interval:
            if window is not None and window[3] is None and window[2]:
                self._summary(key)  # a window that ended without its timer (a fake clock)
            window = self._windows[key] = [now, 0, 0, None]
        if window[1] < self.lines:
            window[1] += 1
            self.logger.emit(level, format, rate_key=key, **kwargs)
            return True
        window[2] += 1
        if window[3] is None:
            delay = max(0.0, window[0] + self.interval - now)
            window[3] = self._clock.callLater(delay, self._summary, key)
        return False

    def _summary(self, key: str) -> None:
        """Write the window's summary line and forget the window."""
        window = self._windows.pop(key, None)
        if window is None or not window[2]:
            return
        self.logger.warn("suppressed {count} lines of {rate_key} in {interval}s",
                         count=window[2], rate_key=key, interval=self.interval)

    def suppressed(self, key: str) -> int:
        """Lines of ``key`` suppressed in its current window (tests, diagnostics)."""
        window = self._windows.get(key)
        return window[2] if window is not None else 0

    def info(self, key: str, format: str, **kwargs) -> bool:  # noqa: A002
        """``emit`` at info level."""
        return self.emit(LogLevel.info, key, format, **kwargs)

    def warn(self, key: str, format: str, **kwargs) -> bool:  # noqa: A002
        """``emit`` at warn level."""
        return self.emit(LogLevel.warn, key, format, **kwargs)

    def debug(self, key: str, format: str, **kwargs) -> bool:  # noqa: A002
        """``emit`` at debug level."""
        return self.emit(LogLevel.debug, key, format, **kwargs)

    def failure(self, key: str, format: str, failure=None, **kwargs) -> bool:  # noqa: A002
        """A traceback (``Logger.failure``) for the first lines of a key, then counted only."""
        now = self._now()
        window = self._windows.get(key)
        if window is not None and now - window[0] < self.interval and window[1] >= self.lines:
            return self.emit(LogLevel.critical, key, format, **kwargs)  # counts it, writes nothing
        if window is None or now - window[0] >= self.interval:
            if window is not None and window[3] is None and window[2]:
                self._summary(key)
            window = self._windows[key] = [now, 0, 0, None]
        window[1] += 1
        self.logger.failure(format, failure, rate_key=key, **kwargs)
        return True


class FastClassicText:
    """Twisted's ``formatEventAsClassicLogText`` (as twistd's text log file uses it), cheaper.

    The line is ``<time> [<namespace>#<level>] <text>``, newlines in the text followed by a
    tab. The time stamp is computed once per second: it has no fraction, and the time zone
    offset (which a daylight-saving change moves) can only change on a whole second. The text
    is ``str.format_map`` over the event, which parses fields and applies conversions and
    format specifications exactly as ``string.Formatter`` does, in C. Anything else (a
    traceback, a ``log_system``, flattened or bytes formats, Twisted's ``{f()}`` call
    syntax, a field the event lacks, any error) goes to Twisted's own formatter, so every
    line is the one Twisted would write (tests/unit/foundation/test_logs_fast_text.py).
    """

    def __init__(self, time_format: str = timeFormatRFC3339):
        self.time_format = time_format
        self._second: int | None = None
        self._stamp = ""

    def _time(self, when) -> str:
        """``formatTime(when, time_format)``, remembered for the current second."""
        if when is None:
            return "-"
        second = int(when)
        # datetime rounds to the microsecond: a time this close below the next second is
        # written as the next second, so it is not the current second's stamp.
        if when - second >= 0.9999995 or second < 0:
            return formatTime(when, self.time_format)
        if second != self._second:
            tz = FixedOffsetTimeZone.fromLocalTimeStamp(second)
            self._stamp = datetime.fromtimestamp(second, tz).strftime(self.time_format)
            self._second = second
        return self._stamp

    def __call__(self, event) -> str | None:
        """The event's line (or None for an event Twisted writes nothing for)."""
        fmt = event.get("log_format")
        level = event.get("log_level")
        if (type(fmt) is not str or level is None or "log_failure" in event
                or "log_system" in event or "log_flattened" in event):
            return formatEventAsClassicLogText(event, formatTime=self._time)
        try:
            text = fmt.format_map(event)
        except Exception:  # noqa: BLE001 - Twisted's formatter writes its own error line
            text = None
        if text is None:
            # outside the except block: Twisted's error line shows its own traceback only
            return formatEventAsClassicLogText(event, formatTime=self._time)
        if not text:
            return None
        namespace = event.get("log_namespace", "-")
        stamp = self._time(event.get("log_time"))
        return f"{stamp} [{namespace}#{level.name}] {text.replace(chr(10), chr(10) + chr(9))}\n"


def _is_twistd_text(observer) -> bool:
    """Whether ``observer`` is the text file observer twistd made (``textFileLogObserver``)."""
    fmt = getattr(observer, "formatEvent", None)
    return (isinstance(observer, FileLogObserver)
            and getattr(fmt, "__qualname__", "") == "textFileLogObserver.<locals>.formatEvent")


def speed_up_text_logs(publisher=globalLogPublisher) -> int:
    """Give twistd's text log observers ``FastClassicText``; return how many were changed.

    An observer is changed only when both formatters write the same line for a probe event
    (twistd made it with another time format, or a Twisted version formats otherwise: left
    as it is).
    """
    probe = {"log_format": "probe {n!r} {x:.2f}", "n": "a\nb", "x": 1.5,
             "log_level": LogLevel.info, "log_namespace": "cbserver.logs", "log_time": 1.25e9}
    changed = 0
    for observer in list(getattr(publisher, "_observers", ())):
        if not _is_twistd_text(observer):
            continue
        fast = FastClassicText()
        if fast(probe) == observer.formatEvent(probe):
            observer.formatEvent = fast
            changed += 1
    return changed
