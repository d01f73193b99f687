"""SIP requests and responses: parse from and serialise to bytes (RFC 3261 7, 18.3, 25).

Pure: no Twisted here. ``parse_message`` takes one datagram, ``StreamParser`` frames a byte
stream by Content-Length. Header values are text decoded as UTF-8 with ``surrogateescape``,
so any byte sequence survives a parse/serialise round trip unchanged.
"""

from __future__ import annotations

import re
import secrets

from cbserver.sip.headers import (
    CANONICAL_NAMES,
    TOKEN_RE,
    Headers,
    NameAddr,
    Via,
    canonical_name,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)
from cbserver.sip.uri import SipParseError, Uri, is_digits, parse_uri, unescape, uri_equal

__all__ = [
    "SipParseError", "Headers", "Request", "Response", "parse_message", "StreamParser", "Uri",
    "parse_uri", "unescape", "uri_equal", "NameAddr", "parse_name_addr", "Via", "parse_via",
    "parse_cseq",
    "split_list", "canonical_name", "new_branch", "new_tag", "new_call_id", "make_response",
    "REASON_PHRASES", "MAX_MESSAGE_SIZE", "BRANCH_COOKIE",
]  # fmt: skip

#: Largest message accepted (a UDP datagram cannot be larger); bigger ones get 513.
MAX_MESSAGE_SIZE = 65535
#: RFC 3261 8.1.1.7 magic cookie at the start of every branch we create.
BRANCH_COOKIE = "z9hG4bK"

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    491: "Request Pending", 493: "Undecipherable", 500: "Server Internal Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}  # fmt: skip

_FOLD_RE = re.compile(r"\r?\n[ \t]+")
_LINE_RE = re.compile(r"\r?\n")
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.I)
_URI_SHAPE_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:\S+")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _serialize(start: str, headers: Headers, body: bytes) -> bytes:
    # RFC 3261 18.3/20.14: always write a Content-Length that matches the body.
    lines = [start]
    wrote_length = False
    for key, name, value in headers._items:
        if key == "content-length":
            if wrote_length:
                continue
            value, wrote_length = str(len(body)), True
        lines.append(f"{name}: {value}")
    if not wrote_length:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("\r\n")
    return _encode("\r\n".join(lines)) + body


class Request:
    """A SIP request: method, Request-URI (text), headers and body bytes."""

    __slots__ = ("method", "uri", "headers", "body", "version")

    def __init__(self, method, uri, headers=None, body=b"", version="SIP/2.0"):
        self.method = method
        self.uri = uri
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.version = version

    def serialize(self) -> bytes:
        """The request as wire bytes, with a correct Content-Length."""
        return _serialize(f"{self.method} {self.uri} {self.version}", self.headers, self.body)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} call_id={self.headers.get('Call-ID')}>"


class Response:
    """A SIP response: status code, reason phrase, headers and body bytes."""

    __slots__ = ("status", "reason", "headers", "body", "version")

    def __init__(self, status, reason=None, headers=None, body=b"", version="SIP/2.0"):
        self.status = status
        self.reason = REASON_PHRASES.get(status, "") if reason is None else reason
        self.headers = headers if headers is not None else Headers()
        self.body = body
        self.version = version

    @property
    def reason_text(self) -> str:
        """The Reason-Phrase as text that can be shown and stored anywhere.

        ``reason`` keeps the peer's bytes exactly (undecodable ones as surrogates, so the
        message serializes back unchanged). RFC 3261 25.1 allows only UTF-8 text, SP and HTAB
        in it; a peer that sends Latin-1 bytes or control characters (NUL included) still told
        us the status code, so here the offending characters become U+FFFD. Left as they are,
        PostgreSQL's text and jsonb refuse them, and the call would lose its xDR and status.
        """
        raw = self.reason.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return "".join(c if c == "\t" or (c >= " " and c != "\x7f") else "\ufffd" for c in raw)

    def serialize(self) -> bytes:
        """The response as wire bytes, with a correct Content-Length."""
        return _serialize(f"{self.version} {self.status} {self.reason}", self.headers, self.body)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call_id={self.headers.get('Call-ID')}>"


def _parse_headers(lines: list[str]) -> Headers:
    entries = []
    canon = CANONICAL_NAMES
    for line in lines:
        colon = line.find(":")
        if colon <= 0:
            raise SipParseError(f"header line without a name: {line[:60]!r}")
        name = line[:colon].rstrip()
        key = name.lower()
        known = canon.get(key)
        if known is None:
            # RFC 3261 25.1: header-name = token (known names are tokens already)
            if not TOKEN_RE.fullmatch(name):
                raise SipParseError(f"bad header name {name[:60]!r}")
            entries.append((key, name, line[colon + 1 :].strip()))
        else:
            entries.append((known.lower(), known, line[colon + 1 :].strip()))
    return Headers._from_raw(entries)


def _split_head(data: bytes, datagram: bool) -> tuple[str, bytes]:
    """Split raw bytes into (header text, bytes after the empty line)."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end].decode("utf-8", "surrogateescape"), data[end + 4 :]
    end = data.find(b"\n\n")  # tolerate bare LF line ends
    if end >= 0:
        return data[:end].decode("utf-8", "surrogateescape"), data[end + 2 :]
    if datagram and data.endswith(b"\r\n"):
        # A datagram that stops after its last header line: headers only, no body.
        return data[:-2].decode("utf-8", "surrogateescape"), b""
    raise SipParseError("no empty line after the headers")


def _split_lines(head: str) -> list[str]:
    lines = head.split("\r\n")
    n = len(lines) - 1
    if head.count("\n") != n or head.count("\r") != n:
        # Bare LF line ends (tolerated); a lone CR is never a line end and never data.
        lines = _LINE_RE.split(head)
        if any("\r" in line for line in lines):
            raise SipParseError("stray CR in the header block")
    return lines


def _content_length(headers: Headers) -> int | None:
    values = headers.get_all("Content-Length")
    if not values:
        return None
    if len(values) > 1:
        raise SipParseError("more than one Content-Length")
    text = values[0]
    if not is_digits(text) or len(text) > 10:
        raise SipParseError(f"bad Content-Length {text[:30]!r}")
    return int(text)


def _parse_start(start: str):
    """Parse the start line; return (kind, a, b, version) or raise SipParseError."""
    if start.startswith("SIP/") or start[:4].upper() == "SIP/":
        parts = start.split(" ", 2)
        if len(parts) < 2:
            raise SipParseError(f"bad status line {start[:80]!r}", status=None)
        version, code = parts[0], parts[1]
        reason = parts[2] if len(parts) > 2 else ""
        if version.upper() != "SIP/2.0":
            raise SipParseError(f"unsupported version {version[:20]!r}", status=None)
        # RFC 3261 25.1: Status-Code = 3DIGIT, and RFC 3261 21 puts it in 100..699.
        if len(code) != 3 or not is_digits(code) or not 100 <= int(code) <= 699:
            raise SipParseError(f"bad status code {code[:20]!r}", status=None)
        return "response", int(code), reason, version
    # RFC 3261 25.1: Request-Line = Method SP Request-URI SP SIP-Version CRLF (single SPs).
    parts = start.split(" ")
    if len(parts) != 3 or not parts[0] or not TOKEN_RE.fullmatch(parts[0]):
        raise SipParseError(f"bad request line {start[:80]!r}")
    method, uri, version = parts
    if version.upper() != "SIP/2.0":
        if _VERSION_RE.fullmatch(version):
            raise SipParseError(f"unsupported SIP version {version!r}", status=505)
        raise SipParseError(f"bad request line {start[:80]!r}")
    if not _URI_SHAPE_RE.fullmatch(uri):
        raise SipParseError(f"bad Request-URI {uri[:80]!r}")
    return "request", method, uri, version


def _partial(start: str, lines: list[str]) -> Request | None:
    """Best-effort request from a message whose start line or framing is wrong."""
    if start[:4].upper() == "SIP/":
        return None
    try:
        headers = _parse_headers(lines)
    except SipParseError:
        return None
    words = start.split()
    return Request(words[0] if words else "", words[1] if len(words) > 1 else "", headers)


def _parse(data: bytes, stream_length: int | None, max_size: int) -> Request | Response:
    # RFC 3261 7.5: CRLFs before the start line are ignored.
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message", status=None)
    head, rest = _split_head(data, stream_length is None)
    if "\n " in head or "\n\t" in head:
        head = _FOLD_RE.sub(" ", head)  # RFC 3261 7.3.1: unfold continuation lines
    lines = _split_lines(head)
    start = lines[0]
    del lines[0]
    try:
        kind, a, b, version = _parse_start(start)
        headers = _parse_headers(lines)
        if len(data) > max_size:
            raise SipParseError(f"message of {len(data)} bytes is too large", status=513)
        length = _content_length(headers)
    except SipParseError as exc:
        if start[:4].upper() == "SIP/":
            exc.status = None  # RFC 3261 18.1.2: a bad response is dropped, never answered
        elif exc.partial is None and exc.status is not None:
            exc.partial = _partial(start, lines)
        raise
    if length is None:
        # RFC 3261 18.3: on a datagram the body runs to its end; a stream needs the header.
        body = rest if stream_length is None else b""
    elif length > len(rest):
        # RFC 3261 18.3: a datagram that ends before the body does is an error.
        raise SipParseError(
            f"Content-Length {length} exceeds the {len(rest)} body bytes",
            status=400 if kind == "request" else None,
            partial=Request(a, b, headers) if kind == "request" else None,
        )
    else:
        body = rest[:length]  # RFC 3261 18.3: bytes beyond Content-Length are discarded
    if kind == "request":
        return Request(a, b, headers, body, version)
    return Response(a, b, headers, body, version)


def parse_message(data: bytes, max_size: int = MAX_MESSAGE_SIZE) -> Request | Response:
    """Parse one datagram into a Request or Response, or raise SipParseError."""
    return _parse(data, None, max_size)


class StreamParser:
    """Frames SIP messages out of a byte stream (TCP) by Content-Length (RFC 3261 18.3).

    ``feed`` returns the complete messages received so far. A message that is framed but
    unparseable goes to ``on_error`` (if given) and parsing carries on; without ``on_error``
    it is raised. A framing error (missing or bad Content-Length, oversized header block)
    leaves the stream unusable: it is raised, ``broken`` is set, and the connection should be
    closed.
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE, on_error=None):
        self.max_size = max_size
        self.on_error = on_error
        self.broken = False
        self._buf = b""

    def feed(self, data: bytes) -> list[Request | Response]:
        """Add bytes from the stream; return every message now complete."""
        if self.broken:
            raise SipParseError("stream already broken", status=None)
        self._buf += data
        out: list[Request | Response] = []
        while True:
            buf = self._buf.lstrip(b"\r\n")  # RFC 3261 7.5 / RFC 5626 4.4.1 keep-alives
            self._buf = buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.max_size:
                    self.broken = True
                    raise SipParseError("header block too large", status=513)
                return out
            length = self._framed_length(buf[:end])
            total = end + 4 + length
            if total > self.max_size:
                self.broken = True
                raise SipParseError("message too large", status=513)
            if len(buf) < total:
                return out
            frame, self._buf = buf[:total], buf[total:]
            try:
                out.append(_parse(frame, length, self.max_size))
            except SipParseError as exc:
                if self.on_error is None:
                    raise
                self.on_error(exc)

    def _framed_length(self, head: bytes) -> int:
        # RFC 3261 18.3: Content-Length MUST be present on a stream; the framing needs it.
        found = re.findall(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\S*)[ \t]*$", head)
        if len(found) != 1 or not found[0].isdigit() or len(found[0]) > 10:
            self.broken = True
            raise SipParseError("missing or bad Content-Length on a stream")
        return int(found[0])


def new_branch() -> str:
    """A fresh Via branch with the RFC 3261 8.1.1.7 magic cookie."""
    return BRANCH_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    """A fresh From/To tag with 64 random bits (RFC 3261 19.3 asks for at least 32)."""
    return secrets.token_hex(8)


def new_call_id(host: str) -> str:
    """A globally unique Call-ID (RFC 3261 8.1.1.4): random part ``@`` host."""
    return f"{secrets.token_hex(12)}@{host}"


def _has_tag(value: str) -> bool:
    return ";tag=" in "".join(value.lower().split())


_RESPONSE_COPY = ("Via", "From", "To", "Call-ID", "CSeq")


def make_response(request: Request, status: int, reason: str | None = None,
                  to_tag: str | None = None) -> Response:
    """A response to ``request`` with Via, From, To, Call-ID and CSeq copied (RFC 3261 8.2.6.2).

    Every Via is copied in order; of the others only the first (a malformed request may repeat
    them). ``to_tag`` is added to To when To has no tag yet and the status is above 100."""
    headers = Headers()
    items = request.headers._items
    for name in _RESPONSE_COPY:
        for _, canon, value in items:
            if canon == name:
                if name == "To" and to_tag and status > 100 and not _has_tag(value):
                    value = f"{value};tag={to_tag}"
                headers._items.append((name.lower(), name, value))
                if name != "Via":
                    break
    return Response(status, reason, headers)
