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
"""

import re
import sys

from twisted.logger import Logger as _TwistedLogger
from twisted.logger import LogLevel, jsonFileLogObserver

_minimum = [LogLevel.debug]
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_char(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value):
    """``value`` with its control characters escaped if it is a ``str``; any other value
    unchanged (``bytes`` are formatted with ``repr``, which escapes them already)."""
    if isinstance(value, str) and _CONTROL.search(value):
        return _CONTROL.sub(_escape_char, value)
    return value


def set_level(name: str) -> None:
    """Drop events less severe than ``name`` (``debug``, ``info``, ``warn``, ``error``, ``critical``)."""
    _minimum[0] = LogLevel.levelWithName(name)


def level() -> str:
    """The name of the current minimum level."""
    return _minimum[0].name


class Logger(_TwistedLogger):
    """``twisted.logger.Logger`` that drops events below the process-wide level first."""

    def emit(self, level, format=None, **kwargs):  # noqa: A002 - Twisted's own signature
        """Emit the event unless it is less severe than the configured level; text values
        are escaped (``escape``) so that no value can start a line of its own."""
        if level < _minimum[0]:
            return
        for key, value in kwargs.items():
            if isinstance(value, str):
                kwargs[key] = escape(value)
        super().emit(level, format, **kwargs)


def json_stdout():
    """A log observer writing one JSON object per event to standard output."""
    return jsonFileLogObserver(sys.stdout, recordSeparator="")


def describe_failure(failure_or_exc) -> str:
    """One line describing a failure (an exception or a Failure): its type and the first
    line of its message, as the pool, its callers and the mailer log it."""
    exc = getattr(failure_or_exc, "value", failure_or_exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
