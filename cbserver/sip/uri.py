"""SIP, SIPS and tel URIs (RFC 3261 19.1, 25.1; RFC 3966), pure functions over strings.

Parts are kept as written (still %-escaped) so a parsed URI serialises back byte for byte;
``unescape`` gives the decoded form when comparing (RFC 3261 19.1.4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class SipParseError(ValueError):
    """A SIP message, header or URI that does not follow the grammar.

    ``reason`` says what is wrong; ``status`` is the response a UAS should send for it
    (400 unless the error implies another code, such as 505 or 513), or None when no response
    is implied. ``partial`` is what could be parsed of a request despite the error (start line
    and headers), so that a response can still be routed; None when nothing usable was read.
    """

    def __init__(self, reason: str, status: int | None = 400, partial=None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.partial = partial


# RFC 3261 25.1: unreserved = alphanum / mark; escaped = "%" HEXDIG HEXDIG
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_ESCAPED = r"%[0-9A-Fa-f]{2}"
_USER_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESCAPED})+")
_PASSWORD_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESCAPED})*")
_PARAMCHARS_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESCAPED})+")
_HEADERCHARS_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESCAPED})*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\.?")
_IPV6REF_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# RFC 3261 25.1 absoluteURI: opaque or hierarchical part, never whitespace, quotes or <>.
_OPAQUE_RE = re.compile(r"[^\s<>\"]+")
_TEL_RE = re.compile(r"[0-9A-Fa-f*#+\-.()pPwW]+")
_UNESCAPE_RE = re.compile(r"%([0-9A-Fa-f]{2})")


def is_digits(text: str) -> bool:
    """True for a non-empty run of ASCII digits (``str.isdigit`` also takes "²" and "٣")."""
    return text.isascii() and text.isdigit()


def unescape(text: str) -> str:
    """Decode %HH escapes (RFC 3261 19.1.2); bytes that are not UTF-8 are kept as U+FFFD."""
    if "%" not in text:
        return text
    raw = _UNESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    return raw.encode("latin-1", "surrogateescape").decode("utf-8", "replace")


@dataclass
class Uri:
    """A parsed URI. For ``sip``/``sips`` every field is filled; for ``tel`` the number is
    ``user`` and ``host`` is empty; any other scheme keeps its text in ``opaque``."""

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    opaque: str | None = None

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            if self.scheme != "tel":
                out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for name, value in self.params.items():
            out.append(f";{name}" if value is None else f";{name}={value}")
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    @property
    def is_sip(self) -> bool:
        """True for the ``sip`` and ``sips`` schemes."""
        return self.scheme in ("sip", "sips")

    def host_port(self, default_port: int = 5060) -> tuple[str, int]:
        """Host without IPv6 brackets and the port, falling back to ``default_port``."""
        host = self.host[1:-1] if self.host.startswith("[") else self.host
        return host, (self.port if self.port is not None else default_port)


def parse_params(text: str, pattern: re.Pattern = _PARAMCHARS_RE) -> dict[str, str | None]:
    """Parse ``;name[=value]`` URI parameters (the text after the first ``;``)."""
    params: dict[str, str | None] = {}
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not pattern.fullmatch(name) or (eq and not pattern.fullmatch(value)):
            raise SipParseError(f"bad URI parameter {item!r}")
        params[name.lower()] = value if eq else None
    return params


def _parse_host_port(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        if end < 0 or not _IPV6REF_RE.fullmatch(host):
            raise SipParseError(f"bad IPv6 reference {text!r}")
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
        if not _HOSTNAME_RE.fullmatch(host):
            raise SipParseError(f"bad host {host!r}")
    if not rest:
        return host, None
    port_text = rest[1:]
    if rest[0] != ":" or not is_digits(port_text) or len(port_text) > 5 or int(port_text) > 65535:
        raise SipParseError(f"bad port in {text!r}")
    return host, int(port_text)


def _parse_sip(scheme: str, rest: str) -> Uri:
    uri = Uri(scheme=scheme)
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, password = userinfo.partition(":")
        if not _USER_RE.fullmatch(user) or (colon and not _PASSWORD_RE.fullmatch(password)):
            raise SipParseError(f"bad userinfo {userinfo!r}")
        uri.user = user
        uri.password = password if colon else None
    rest, qmark, headers = rest.partition("?")
    hostport, semi, params = rest.partition(";")
    uri.host, uri.port = _parse_host_port(hostport)
    if semi:
        uri.params = parse_params(params)
    if qmark:
        for item in headers.split("&"):
            name, eq, value = item.partition("=")
            if not eq or not name or not _HEADERCHARS_RE.fullmatch(name + value):
                raise SipParseError(f"bad URI header {item!r}")
            uri.headers[name] = value
    return uri


def _parse_tel(rest: str) -> Uri:
    # RFC 3966 3: tel:number;params, no host part.
    number, semi, params = rest.partition(";")
    if not _TEL_RE.fullmatch(number):
        raise SipParseError(f"bad telephone number {number!r}")
    return Uri(scheme="tel", user=number, params=parse_params(params) if semi else {})


def parse_uri(text: str) -> Uri:
    """Parse a SIP, SIPS, tel or other absolute URI; raise SipParseError on junk."""
    colon = text.find(":")
    scheme = text[:colon]
    rest = text[colon + 1 :]
    if colon <= 0 or not _SCHEME_RE.fullmatch(scheme) or not rest:
        raise SipParseError(f"bad URI {text!r}")
    lower = scheme.lower()
    if lower in ("sip", "sips"):
        return _parse_sip(lower, rest)
    if lower == "tel":
        return _parse_tel(rest)
    if not _OPAQUE_RE.fullmatch(rest):
        raise SipParseError(f"bad URI {text!r}")
    return Uri(scheme=lower, opaque=rest)


# RFC 3261 19.1.4: parameters that must match when either URI has them.
_STRICT_PARAMS = ("user", "ttl", "method", "maddr", "transport")


def uri_equal(a: Uri | str, b: Uri | str) -> bool:
    """SIP/SIPS URI equivalence per RFC 3261 19.1.4 (other schemes: exact text match).

    User and password compare case-sensitively after unescaping, host case-insensitively;
    an explicit port never equals an absent one; ``user``, ``ttl``, ``method``, ``maddr`` and
    ``transport`` must agree when either side has them, other parameters only when both do;
    headers must all agree."""
    a = parse_uri(a) if isinstance(a, str) else a
    b = parse_uri(b) if isinstance(b, str) else b
    if a.scheme != b.scheme:
        return False
    if not a.is_sip:
        return str(a) == str(b)

    def norm(value: str | None) -> str | None:
        return None if value is None else unescape(value)

    def low(value: str | None) -> str | None:
        return None if value is None else unescape(value).lower()

    if (norm(a.user), norm(a.password)) != (norm(b.user), norm(b.password)):
        return False
    if a.host.lower() != b.host.lower() or a.port != b.port:
        return False
    for name in _STRICT_PARAMS:
        if low(a.params.get(name)) != low(b.params.get(name)):
            return False
    for name in a.params.keys() & b.params.keys():
        if low(a.params[name]) != low(b.params[name]):
            return False
    ha = {unescape(k).lower(): unescape(v) for k, v in a.headers.items()}
    hb = {unescape(k).lower(): unescape(v) for k, v in b.headers.items()}
    return ha == hb
