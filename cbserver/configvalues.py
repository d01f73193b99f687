"""Checks of single configuration values (addresses, ports, endpoints, names, rules, secret
files), used by the sections in ``cbserver/config.py``; each returns the value or raises
``ValueError`` (or ``ConfigError``) saying what was expected."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from pathlib import Path

from cbserver.configschema import ConfigError
from cbserver.phone import normalise_phone
from cbserver.translation import TranslationRuleError, compile_rule

LOG_LEVELS = ("debug", "info", "warn", "error", "critical")
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.\-]+)):(?P<port>\d+)$")
_ENDPOINT_KINDS = ("tcp", "tcp6", "ssl", "unix", "systemd", "le", "lets")
# The same characters and length a product's rating entry accepts (billing/catalogrules.py), so
# every code an entry can carry can be selected by an instance.
_ACCESS_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # one DNS label (RFC 1123)


def _port(value: int) -> int:
    """Check a TCP/UDP port number."""
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is out of range (expected 1-65535)")
    return value


def parse_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6); ``default_port`` applies when it is absent."""
    m = _HOST_PORT.match(text)
    if m is None:
        if default_port is not None and re.fullmatch(r"[A-Za-z0-9.\-]+", text or ""):
            return text, default_port
        raise ValueError(f"expected host:port (e.g. 127.0.0.1:5060), got {text!r}")
    return (m.group("v6") or m.group("host")), _port(int(m.group("port")))


def _host_port(text: str) -> str:
    """Validate ``host:port``."""
    parse_host_port(text)
    return text


def _trunk_address(text: str) -> str:
    """Validate a trunk address: host or host:port (the port defaults to 5060)."""
    parse_host_port(text, default_port=5060)
    return text


def _ip_address(text: str) -> str:
    """Validate a literal IP address."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"expected an IP address, got {text!r}") from None
    return text


def _port_range(text: str) -> str:
    """Validate ``LOW-HIGH``: even start, at least two ports, both in range."""
    m = re.fullmatch(r"(\d+)-(\d+)", text)
    if not m:
        raise ValueError(f"expected a port range LOW-HIGH (e.g. 20000-29999), got {text!r}")
    low, high = _port(int(m.group(1))), _port(int(m.group(2)))
    if low >= high or low < 1024:
        raise ValueError(f"range {text} must be increasing and above 1023")
    return text


def _endpoint(text: str) -> str:
    """Check the kind of a Twisted server endpoint string (``ssl:8901``, ``tcp:8080:...``)."""
    kind = text.split(":", 1)[0]
    if kind not in _ENDPOINT_KINDS:
        raise ValueError(
            f"expected a Twisted endpoint string such as 'ssl:8901' or 'tcp:8080:interface="
            f"127.0.0.1', got {text!r} (unknown kind {kind!r})"
        )
    return text


def _access_code(text: str) -> str:
    """An access code of the product rating list, e.g. WEBCALLBACK."""
    if not _ACCESS_CODE.match(text):
        raise ValueError("expected 1-64 letters, digits, '_', '.' or '-' (e.g. WEBCALLBACK), "
                         f"got {text!r}")
    return text


def _url_path(text: str) -> str:
    """An instance's page path: URL-safe segments only (letters, digits, ``-._~``)."""
    # A route is built from it: '<' would be read as a routing variable, '?' or '#' could
    # never match, and '..' would be normalised away by browsers.
    segments = [s for s in text.split("/") if s]
    if len(text) > 200 or any(s in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._~-]+", s)
                              for s in segments):
        raise ValueError(f"expected a URL path of letters, digits, '-', '_', '.', '~' and '/' "
                         f"(e.g. /web-callback), got {text!r}")
    return text


def _phone(text: str) -> str:
    """A phone number normalised as the callback page does (empty: none)."""
    return normalise_phone(text) if text else ""


def _prefixes(values: tuple[str, ...]) -> tuple[str, ...]:
    """Destination prefixes: digits as numbers are rated (international format, no ``+``)."""
    out = []
    for raw in values:
        text = str(raw).strip().lstrip("+")
        if not re.fullmatch(r"[0-9]{1,15}", text):
            raise ValueError(f"expected a number prefix of 1 to 15 digits (e.g. 1900), got {raw!r}")
        out.append(text)
    return tuple(out)


def _page_address(text: str) -> str:
    """The absolute http(s) URL users are given for an instance's page."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("expected the page's absolute address, e.g. "
                         f"https://cb.example.net:8901/web-callback, got {text!r}")
    return text


def _network(entry: str) -> str:
    """An IP network such as ``10.0.0.0/8`` (a single address is a /32)."""
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise ValueError(f"expected an IP network (e.g. 10.0.0.0/8), got {entry!r}") from None
    return entry


def _host_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """Host names an instance answers to, lower-cased; ``*.`` may stand for one leading label.

    A trailing dot (``cb.example.net.``) is dropped, as a Host header may carry it too. A port
    is refused: the host alone chooses the instance, whatever port the request came to.
    """
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower().rstrip(".")
        bare = name[2:] if name.startswith("*.") else name
        if ":" in name or "/" in name:
            raise ValueError(f"expected a host name without port or path "
                             f"(e.g. cb.example.net), got {raw!r}")
        if not bare or len(bare) > 253 or not all(_HOST_LABEL.fullmatch(x) for x in bare.split(".")):
            raise ValueError(f"expected a host name of letters, digits, dots and hyphens, "
                             f"optionally starting with '*.' (e.g. cb.example.net), got {raw!r}")
        if name in out:
            raise ValueError(f"{name!r} is listed twice")
        out.append(name)
    return tuple(out)


def _client(entry: str) -> str:
    """An allowed Hosted client: an IP network (``10.0.0.0/8``) or ``token:<secret>``."""
    if entry.startswith("token:"):
        if len(entry) < len("token:") + 16:
            raise ValueError("a client token must be at least 16 characters after 'token:'")
        return entry
    try:
        return _network(entry)
    except ValueError:
        raise ValueError(f"expected an IP network or 'token:<secret>', got {entry!r}") from None


def _translation_rule(rule: str) -> str:
    """Compile the Perl ``s///`` rule now so that a bad rule stops the server at start-up."""
    if not rule:
        return rule
    try:
        compile_rule(rule)
    except TranslationRuleError as e:
        raise ValueError(str(e)) from None
    return rule


def _positive(value: float) -> float:
    """A strictly positive number."""
    if value <= 0:
        raise ValueError(f"expected a positive number, got {value}")
    return value


def check_node_name(text: str) -> str:
    """Validate ``server.node``: 1-100 characters without surrounding spaces, not ``*``
    (a rating-list entry for any node, migration 041)."""
    if text == "*":
        raise ValueError("'*' names a rating-list entry for any node; give this node a name")
    if not 1 <= len(text) <= 100 or text != text.strip():
        raise ValueError(f"expected 1-100 characters without surrounding spaces, got {text!r}")
    return text


def _latch_mode(text: str) -> str:
    """Validate ``rtp.latch`` (docs/security.md "1. RTP hijack")."""
    if text not in ("strict", "nat"):
        raise ValueError(f"expected 'strict' or 'nat', got {text!r}")
    return text


def _read_secret(path: str, key: str) -> str:
    """Read a secret from a file (first line, stripped); errors name the key."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(key, f"cannot read {path}: {e.strerror}") from None
    if not text:
        raise ConfigError(key, f"{path} is empty")
    return text


def _log_level(text: str) -> str:
    """Validate a log level name."""
    if text not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return text


#: A plain e-mail address, ``user@host`` (no display name, no list): what a mail header and
#: an SMTP envelope can carry without quoting.
EMAIL_PATTERN = r"[^@\s<>,;\"()\[\]]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*"
_EMAIL = re.compile(EMAIL_PATTERN)


def email_address(text: str) -> str:
    """A plain e-mail address (``user@host``, no display name)."""
    if not (isinstance(text, str) and len(text) <= 254 and _EMAIL.fullmatch(text)):
        raise ValueError(f"expected an e-mail address such as 'ops@example.net', got {text!r}")
    return text


def _smtp_address(text: str) -> str:
    """Empty, or a mail relay's host[:port]."""
    if text:
        parse_host_port(text, default_port=25)
    return text
