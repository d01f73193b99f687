"""What a UAS must do with an incoming message before any transaction sees it.

Pure: no Twisted. ``check_message`` parses a datagram and returns a ``Verdict``: accept it,
answer it at once (400, 505, 513, 405/501, 416, 420, 415, 406 with the right extra headers),
or drop it silently when no response could be routed or none is allowed. The checks follow
RFC 3261 8.2 in its order: syntax first, then method (8.2.1), Request-URI scheme (8.2.2.1),
Require (8.2.2.3), content (8.2.3), Accept (8.2.6 via 21.4.7).

Deliberately not here: 482 merged requests and 481 (they need transaction/dialog state), and
483, which RFC 3261 16.3 asks of proxies only; a UAS answers a Max-Forwards 0 request as usual
(RFC 3261 11 for OPTIONS, RFC 4475 3.3.11).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cbserver.sip.headers import TOKEN_RE, parse_cseq, parse_name_addr, parse_via_shared
from cbserver.sip.message import (
    MAX_MESSAGE_SIZE,
    Request,
    Response,
    SipParseError,
    make_response,
    new_tag,
    parse_message,
)
from cbserver.sip.uri import Uri, is_digits, parse_uri

__all__ = [
    "ACCEPT", "RESPOND", "DROP", "Verdict", "check_message", "check_request", "check_response",
    "KNOWN_METHODS", "SUPPORTED_SCHEMES",
]  # fmt: skip

ACCEPT = "accept"
RESPOND = "respond"
DROP = "drop"

#: Methods defined by RFC 3261 and its common extensions; any other gets 501, not 405.
KNOWN_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER INFO UPDATE PRACK SUBSCRIBE NOTIFY REFER "
    "MESSAGE PUBLISH".split()
)
#: RFC 3261 8.2.2.1: Request-URI schemes this UAS understands; others get 416.
SUPPORTED_SCHEMES = frozenset({"sip", "sips", "tel"})
# RFC 3261 8.1.1: mandatory in every request (Max-Forwards too, but RFC 2543 peers omit it
# and RFC 4475 3.4.1 wants such requests answered).
_MANDATORY = ("Via", "To", "From", "Call-ID", "CSeq")
# RFC 3261 20: header fields that may appear at most once.
_SINGLE = (
    "To", "From", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type",
    "Expires", "Date", "Min-Expires", "Session-Expires", "Min-SE", "MIME-Version",
)  # fmt: skip
_NAME_ADDR_HEADERS = ("Contact", "Route", "Record-Route")
# RFC 3261 25.1 rfc1123-date, which SIP restricts to GMT (20.17).
_DATE_RE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
# Methods whose body is a session description for us (RFC 3261 13, RFC 3311, RFC 3262).
_SDP_METHODS = frozenset({"INVITE", "UPDATE", "PRACK"})


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one message.

    ``action`` is ACCEPT (hand ``message`` on), RESPOND (send ``response`` and stop) or DROP
    (say nothing). ``reason`` says why, for the log."""

    action: str
    message: Request | Response | None = None
    response: Response | None = None
    reason: str = ""


class _Reject(Exception):
    """A request fails a check; carries the response status and extra headers."""

    def __init__(self, status: int, reason: str, extra=()):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


def _routable(request: Request) -> bool:
    """True when the top Via can carry a response back (RFC 3261 18.2.2)."""
    vias = request.headers.get_all("Via")
    if not vias:
        return False
    try:
        parse_via_shared(vias[0])
    except SipParseError:
        return False
    return True


def _respond(request: Request, status: int, reason: str, extra=()) -> Verdict:
    # RFC 3261 17: ACK is never answered; RFC 3261 18.2.2: no usable Via, no response.
    if request.method == "ACK" or not _routable(request):
        return Verdict(DROP, request, None, reason)
    response = make_response(request, status, to_tag=new_tag())
    for name, value in extra:
        response.headers.add(name, value)
    return Verdict(RESPOND, request, response, reason)


def check_message(data: bytes, *, allowed_methods=None, supported=(),
                  accept_types=("application/sdp",), max_size: int = MAX_MESSAGE_SIZE) -> Verdict:
    """Parse one datagram and decide what to do with it (see the module docstring).

    ``allowed_methods``: methods the UA handles (others get 405, unknown ones 501); None skips
    that check. ``supported``: option tags we implement (RFC 3261 8.2.2.3). ``accept_types``:
    the body types we take for INVITE/UPDATE/PRACK and can answer with."""
    try:
        msg = parse_message(data, max_size=max_size)
    except SipParseError as exc:
        if exc.status is None or exc.partial is None:
            return Verdict(DROP, None, None, exc.reason)
        return _respond(exc.partial, exc.status, exc.reason)
    if isinstance(msg, Response):
        return check_response(msg)
    return check_request(
        msg, allowed_methods=allowed_methods, supported=supported, accept_types=accept_types
    )


def check_response(response: Response) -> Verdict:
    """Accept a parsed response or drop it (RFC 3261 8.1.3.3, 18.1.2)."""
    headers = response.headers
    # RFC 3261 8.1.3.3: a response with more than one Via is discarded.
    if len(headers.get_all("Via")) != 1:
        return Verdict(DROP, response, None, "response without exactly one Via")
    try:
        parse_via_shared(headers.get("Via"))
        for name in ("From", "To", "Call-ID", "CSeq"):
            if headers.count(name) != 1:
                raise SipParseError(f"{name} missing or repeated")
        parse_cseq(headers.get("CSeq"))
        parse_name_addr(headers.get("From"))
        parse_name_addr(headers.get("To"))
    except SipParseError as exc:
        return Verdict(DROP, response, None, exc.reason)
    return Verdict(ACCEPT, response)


def check_request(request: Request, *, allowed_methods=None, supported=(),
                  accept_types=("application/sdp",)) -> Verdict:
    """Check a parsed request; return ACCEPT, or the response a UAS must send, or DROP."""
    try:
        uri = _check_syntax(request)
        if allowed_methods is not None:
            _check_method(request, allowed_methods)
        # RFC 3261 8.2.2.1: 416 for a Request-URI scheme we do not understand.
        if uri.scheme not in SUPPORTED_SCHEMES:
            raise _Reject(416, f"unsupported URI scheme {uri.scheme[:40]}")
        if request.method not in ("ACK", "CANCEL"):
            _check_require(request, supported)
        _check_content(request, accept_types)
    except SipParseError as exc:
        return _respond(request, 400, exc.reason)
    except _Reject as rej:
        return _respond(request, rej.status, rej.reason, rej.extra)
    return Verdict(ACCEPT, request)


def _check_syntax(request: Request) -> Uri:
    """RFC 3261 8.2 preamble: the request must be well formed; raise SipParseError.

    Returns the parsed Request-URI."""
    h = request.headers
    counts = h.counts()
    for name in _MANDATORY:
        if name.lower() not in counts:
            raise SipParseError(f"missing {name}")
    for name in _SINGLE:
        if counts.get(name.lower(), 0) > 1:
            raise SipParseError(f"more than one {name}")
    for via in h.get_all("Via"):
        parse_via_shared(via)
    _, method = parse_cseq(h.get("CSeq"))
    if method != request.method:  # RFC 3261 8.1.1.5: CSeq method matches the request's
        raise SipParseError("CSeq method differs from the request method")
    max_forwards = h.get("Max-Forwards")
    if max_forwards is not None and (
        not is_digits(max_forwards) or len(max_forwards) > 5 or int(max_forwards) > 255
    ):
        raise SipParseError("bad Max-Forwards")  # RFC 3261 20.22: 0..255
    parse_name_addr(h.get("From"))
    parse_name_addr(h.get("To"))
    for name in _NAME_ADDR_HEADERS:
        for value in h.get_all(name):
            if not (name == "Contact" and value == "*"):
                parse_name_addr(value)
    date = h.get("Date")
    if date is not None and not _DATE_RE.fullmatch(date):
        raise SipParseError("bad Date")
    expires = h.get("Expires")
    if expires is not None and (not is_digits(expires) or len(expires.lstrip("0")) > 10
                                or int(expires) > 2**32 - 1):
        raise SipParseError("bad Expires")  # RFC 3261 20.19: 0..2**32-1
    for name in ("Require", "Proxy-Require", "Supported"):
        for tag in h.get_all(name):
            if tag and not TOKEN_RE.fullmatch(tag):
                raise SipParseError(f"bad option tag in {name}")
    if request.body and "Content-Type" not in h:
        raise SipParseError("body without Content-Type")  # RFC 3261 20.15
    # RFC 3261 19.1.1 table: a Request-URI carries no headers; the URI must parse.
    uri = parse_uri(request.uri)
    if uri.headers:
        raise SipParseError("headers in the Request-URI")
    return uri


def _check_method(request: Request, allowed_methods) -> None:
    """RFC 3261 8.2.1: 405 with Allow for known methods we refuse, 501 for unknown ones."""
    if request.method in allowed_methods:
        return
    if request.method in KNOWN_METHODS:
        allow = ", ".join(sorted(allowed_methods))
        raise _Reject(405, f"method {request.method} not allowed", [("Allow", allow)])
    raise _Reject(501, f"method {request.method[:40]} not implemented")


def _check_require(request: Request, supported) -> None:
    """RFC 3261 8.2.2.3: 420 listing every required option we lack in Unsupported."""
    missing = [t for t in request.headers.get_all("Require") if t and t not in supported]
    if missing:
        raise _Reject(420, "unsupported extension required", [("Unsupported", ", ".join(missing))])


def _media_type(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _check_content(request: Request, accept_types) -> None:
    """RFC 3261 8.2.3: 415 for bodies we cannot read; 21.4.7: 406 when our answer is refused."""
    if request.method not in _SDP_METHODS:
        return
    accepted = {t.lower() for t in accept_types}
    if request.body:
        ctype = _media_type(request.headers.get("Content-Type", ""))
        # A multipart body may carry SDP among its parts; the UA looks inside.
        if ctype not in accepted and not ctype.startswith("multipart/"):
            raise _Reject(415, f"unsupported body type {ctype[:40]}",
                          [("Accept", ", ".join(accept_types))])
    if request.method == "INVITE" and "Accept" in request.headers:
        wanted = {_media_type(v) for v in request.headers.get_all("Accept")}
        if not any(_covers(t, accepted) for t in wanted):
            raise _Reject(406, "caller does not accept any body type we answer with")


def _covers(wanted: str, accepted: set[str]) -> bool:
    """True when the Accept entry ``wanted`` (maybe ``*/*`` or ``type/*``) allows one of ours."""
    if wanted == "*/*" or wanted in accepted:
        return True
    return wanted.endswith("/*") and any(a.startswith(wanted[:-1]) for a in accepted)
