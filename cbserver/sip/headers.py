"""SIP header fields: the ordered multi-map and the structured values (RFC 3261 7.3, 20, 25.1).

Pure functions over strings. Names are matched case-insensitively, compact forms are folded
to their RFC 3261 spelling (7.3.3), and comma-separated lists are split only for the header
fields whose grammar is a list (7.3.1), never inside quotes or angle brackets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cbserver.sip.uri import SipParseError, Uri, is_digits, parse_uri

_CANONICAL = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "Identity-Info", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE",
    "Organization", "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Reply-To",
    "Request-Disposition", "Require", "Retry-After", "Route", "RSeq", "Server",
    "Service-Route", "Session-Expires", "Subject", "Supported", "Timestamp", "To",
    "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate",
]  # fmt: skip

CANONICAL_NAMES: dict[str, str] = {name.lower(): name for name in _CANONICAL}

# RFC 3261 7.3.3 and 20; RFC 3265, 3515, 3892, 4028, 3841, 4474.
COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact",
    "k": "Supported", "l": "Content-Length", "m": "Contact", "n": "Identity-Info",
    "o": "Event", "r": "Refer-To", "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via",
    "x": "Session-Expires", "y": "Identity",
}  # fmt: skip
CANONICAL_NAMES.update(COMPACT_FORMS)

# RFC 3261 7.3.1: only these may be combined into one comma-separated line.
LIST_HEADERS = frozenset(
    n.lower()
    for n in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
        "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language",
        "Error-Info", "In-Reply-To", "P-Asserted-Identity", "P-Preferred-Identity", "Path",
        "Proxy-Require", "Reason", "Record-Route", "Reject-Contact", "Require", "Route",
        "Service-Route", "Supported", "Unsupported", "Via", "Warning",
    )
)  # fmt: skip

TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def canonical_name(name: str) -> str:
    """The RFC 3261 spelling of a header name; unknown names are returned as written."""
    return CANONICAL_NAMES.get(name.lower(), name)


def split_list(value: str) -> list[str]:
    """Split a header value on commas that are outside quoted strings and angle brackets."""
    if "," not in value:
        return [value]
    items, start, quoted, angle, i, n = [], 0, False, False, 0, len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            items.append(value[start:i].strip())
            start = i + 1
        i += 1
    items.append(value[start:].strip())
    return items


class Headers:
    """An ordered, case-insensitive multi-map of header fields, in their wire order."""

    __slots__ = ("_items",)

    def __init__(self, items=()):
        # Each entry: [lower-case canonical name, canonical name, value].
        # (lowercase key, canonical name, value) tuples: a tuple of strings drops out of the
        # garbage collector's view after its first collection, where a list stays tracked for
        # as long as its message lives (a third of the objects a full collection visited).
        self._items: list[tuple[str, str, str]] = []
        for name, value in items:
            self.add(name, value)

    @classmethod
    def _from_raw(cls, entries: list[tuple[str, str, str]]) -> Headers:
        h = cls.__new__(cls)
        h._items = entries
        return h

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of ``name`` (for list headers, the first element of the list)."""
        key = CANONICAL_NAMES.get(name.lower(), name).lower()
        for k, _, value in self._items:
            if k == key:
                if key in LIST_HEADERS and "," in value:
                    return split_list(value)[0]
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order, comma-separated lists split (RFC 3261 7.3.1)."""
        key = CANONICAL_NAMES.get(name.lower(), name).lower()
        split = key in LIST_HEADERS
        out: list[str] = []
        for k, _, value in self._items:
            if k == key:
                if split:
                    out.extend(split_list(value))
                else:
                    out.append(value)
        return out

    def count(self, name: str) -> int:
        """How many header lines named ``name`` there are (lists not split)."""
        key = CANONICAL_NAMES.get(name.lower(), name).lower()
        return sum(1 for k, _, _ in self._items if k == key)

    def counts(self) -> dict[str, int]:
        """Lower-case canonical name -> number of header lines, for all names at once."""
        out: dict[str, int] = {}
        for k, _, _ in self._items:
            out[k] = out.get(k, 0) + 1
        return out

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` field by one with ``value``, where the first one stood."""
        canon = canonical_name(name)
        key = canon.lower()
        for i, entry in enumerate(self._items):
            if entry[0] == key:
                self._items[i] = (key, canon, value)
                self._items[i + 1 :] = [e for e in self._items[i + 1 :] if e[0] != key]
                return
        self._items.append((key, canon, value))

    def add(self, name: str, value: str, first: bool = False) -> None:
        """Add a field: after the last one (default) or before everything (``first``)."""
        canon = canonical_name(name)
        entry = (canon.lower(), canon, value)
        if first:
            self._items.insert(0, entry)
        else:
            self._items.append(entry)

    def remove(self, name: str) -> None:
        """Remove every field named ``name``."""
        key = canonical_name(name).lower()
        self._items = [e for e in self._items if e[0] != key]

    def items(self) -> list[tuple[str, str]]:
        """(canonical name, value) for each header line, in order."""
        return [(canon, value) for _, canon, value in self._items]

    def copy(self) -> Headers:
        """An independent copy."""
        return Headers._from_raw(list(self._items))

    def __contains__(self, name: str) -> bool:
        key = canonical_name(name).lower()
        return any(e[0] == key for e in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


# ---- generic-param lists (RFC 3261 25.1: *( SEMI generic-param ) with SWS around ; and =)

_QUOTED_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_GEN_VALUE_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~:\[\]]+")


def parse_generic_params(text: str) -> dict[str, str | None]:
    """Parse ``;name[=value]`` parameters of a header (text starts with ``;``).

    Names are lower-cased; values are kept as written, quoted strings with their quotes."""
    params: dict[str, str | None] = {}
    pos, n = 0, len(text)
    while pos < n:
        if text[pos] != ";":
            raise SipParseError(f"expected ';' in parameters {text!r}")
        pos += 1
        eq_end = _param_end(text, pos)
        item = text[pos:eq_end]
        name, eq, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad parameter {item!r}")
        if eq and not (_GEN_VALUE_RE.fullmatch(value) or _QUOTED_RE.fullmatch(value)):
            raise SipParseError(f"bad parameter value {item!r}")
        params[name.lower()] = value if eq else None
        pos = eq_end
    return params


def _param_end(text: str, pos: int) -> int:
    """Index of the next ';' at or after pos that is outside a quoted string."""
    # Fast path (nearly every parameter: branch, tag, rport, lr): no quote before the next
    # ';', so that ';' is outside any quoted string, as the scan below would find.
    semi = text.find(";", pos)
    stop = len(text) if semi < 0 else semi
    if text.find('"', pos, stop) < 0:
        return stop
    quoted, n = False, len(text)
    while pos < n:
        ch = text[pos]
        if quoted:
            if ch == "\\":
                pos += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == ";":
            return pos
        pos += 1
    if quoted:
        raise SipParseError(f"unterminated quoted string in {text!r}")
    return n


def _params_str(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


# ---- name-addr / addr-spec (RFC 3261 20.10, 20.20, 20.39, 25.1)

_DISPLAY_TOKENS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*")


@dataclass
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI and header parameters.

    ``display`` is the display name as written (quoted strings keep their quotes)."""

    display: str | None
    uri: Uri
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 19.3), or None."""
        return self.params.get("tag")

    def __str__(self) -> str:
        shown = f"{self.display} " if self.display else ""
        return f"{shown}<{self.uri}>{_params_str(self.params)}"


def unquote_display(display: str | None) -> str | None:
    """A display name without its quotes and with backslash escapes resolved."""
    if display is None or not display.startswith('"'):
        return display
    return re.sub(r"\\(.)", r"\1", display[1:-1], flags=re.S)


def parse_name_addr(text: str) -> NameAddr:
    """Parse a name-addr (``"Name" <uri>;p=v``) or addr-spec (``uri;p=v``) header value."""
    text = text.strip()
    display = None
    if text.startswith('"'):
        m = _QUOTED_RE.match(text)
        if not m:
            raise SipParseError(f"unterminated quoted display name in {text!r}")
        display = m.group(0)
        rest = text[m.end() :].lstrip()
        if not rest.startswith("<"):
            raise SipParseError(f"expected '<' after display name in {text!r}")
    else:
        lt = text.find("<")
        if lt >= 0:
            shown = text[:lt].strip()
            if shown:
                if not _DISPLAY_TOKENS_RE.fullmatch(shown):
                    raise SipParseError(f"bad display name {shown!r}")
                display = shown
            rest = text[lt:]
        else:
            rest = None
    if rest is not None:
        gt = rest.find(">")
        if gt < 0:
            raise SipParseError(f"unterminated '<' in {text!r}")
        uri = parse_uri(rest[1:gt])
        tail = rest[gt + 1 :].strip()
    else:
        # RFC 3261 20: in addr-spec form, ';' starts header parameters and the URI may not
        # contain ',', '?' or ';'.
        semi = text.find(";")
        uri_text = (text if semi < 0 else text[:semi]).rstrip()
        if "?" in uri_text or "," in uri_text:
            raise SipParseError(f"addr-spec with '?' or ',' outside <>: {text!r}")
        uri = parse_uri(uri_text)
        tail = "" if semi < 0 else text[semi:]
    return NameAddr(display, uri, parse_generic_params(tail) if tail else {})


# ---- Via (RFC 3261 20.42, 25.1 via-parm: sent-protocol LWS sent-by *( SEMI via-params ))

_TOK = r"[A-Za-z0-9\-.!%*_+`'~]+"
_VIA_RE = re.compile(
    rf"[ \t]*({_TOK})[ \t]*/[ \t]*({_TOK})[ \t]*/[ \t]*({_TOK})[ \t]+"
    r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:[ \t]*:[ \t]*([0-9]{1,5}))?[ \t]*"
)


@dataclass
class Via:
    """One Via value: transport (upper case), sent-by host and port, parameters."""

    transport: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        """The ``branch`` parameter (RFC 3261 8.1.1.7), or None."""
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.protocol}/{self.transport} {self.host}{port}{_params_str(self.params)}"


def parse_via(text: str) -> Via:
    """Parse one Via value (one element of the list)."""
    m = _VIA_RE.match(text)
    if not m:
        raise SipParseError(f"bad Via {text!r}")
    name, version, transport, host, port = m.groups()
    if port is not None and int(port) > 65535:
        raise SipParseError(f"bad Via port {text!r}")
    rest = text[m.end() :]
    params = parse_generic_params(rest) if rest else {}
    return Via(
        transport=transport.upper(),
        host=host,
        port=int(port) if port is not None else None,
        params=params,
        protocol=f"{name.upper()}/{version}",
    )


# Vias parsed for readers, by their text (see parse_via_shared); the oldest go first.
_SHARED_VIAS: dict[str, Via] = {}
_SHARED_VIAS_MAX = 256


def parse_via_shared(text: str) -> Via:
    """``parse_via(text)`` for code that only reads the result: one ``Via`` per text, shared.

    A message's top Via is read several times on its way in: validation, transaction matching
    (RFC 3261 17.1.3, 17.2.3), response routing (18.2.2); and a response repeats the Via of
    the request we sent. The same text gives the same ``Via``, so it is parsed once. The
    object is shared by every caller: never modify it (``stamp_via`` parses its own copy).
    A text that does not parse raises each time and is not remembered.
    """
    via = _SHARED_VIAS.get(text)
    if via is None:
        via = parse_via(text)
        if len(_SHARED_VIAS) >= _SHARED_VIAS_MAX:
            del _SHARED_VIAS[next(iter(_SHARED_VIAS))]
        _SHARED_VIAS[text] = via
    return via


def parse_cseq(text: str) -> tuple[int, str]:
    """Parse a CSeq value into (number, method); RFC 3261 8.1.1.5 caps it below 2**31."""
    parts = text.split()
    if len(parts) != 2 or not is_digits(parts[0]) or not TOKEN_RE.fullmatch(parts[1]):
        raise SipParseError(f"bad CSeq {text!r}")
    # A length check first: int() refuses more than 4300 digits with a bare ValueError.
    number = int(parts[0]) if len(parts[0].lstrip("0")) <= 10 else 2**31
    if number >= 2**31:
        raise SipParseError(f"CSeq number too large {text!r}")
    return number, parts[1]
