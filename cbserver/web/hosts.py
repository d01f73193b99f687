"""Which ``[[application]]`` instance a request's host name chooses (``hosts = [...]``).

An instance that lists host names serves requests for them at ``/`` (page, ``/status/<id>``,
``/hosted-access``, ``/api/v1/callbacks``), besides its path. ``request_host`` reads the name
the client asked for: the ``Host`` header, or, only when the TCP peer is one of
``trusted_proxies``, the ``X-Forwarded-Host`` header the proxy wrote (a client could write
that header too, so it is not believed from anyone else). ``HostTable`` maps that name to
the instance: an exact name first, then a ``*.`` entry standing for one leading label.
"""

from __future__ import annotations

import urllib.parse

from cbserver.web.limits import from_trusted_proxy


def normalise_host(value: str) -> str:
    """A Host header value as compared with ``hosts``: no port, lower case, no trailing dot.

    ``[2001:db8::1]:8901`` keeps its brackets (it can never match a name); anything empty or
    malformed gives ``""``, which matches nothing.
    """
    value = value.strip().lower()
    if value.startswith("["):  # an IPv6 literal, maybe with a port after the bracket
        end = value.find("]")
        return value[:end + 1] if end > 0 else ""
    host, _, _port = value.partition(":")
    return host.rstrip(".")


def request_host(request, trusted_proxies=()) -> str:
    """The host name a request is for, normalised (``""`` when it names none).

    Behind a trusted proxy the right-most ``X-Forwarded-Host`` entry is used: it is the one
    the proxy next to us appended (entries further left came from further away, possibly
    from the client itself). Without that header the ``Host`` header is used, as for anyone.
    """
    peer = getattr(request.getClientAddress(), "host", "") or ""
    if from_trusted_proxy(peer, trusted_proxies):
        raw = request.requestHeaders.getRawHeaders(b"x-forwarded-host") or []
        entries = [e.strip() for h in raw for e in h.decode("latin-1").split(",") if e.strip()]
        if entries:
            return normalise_host(entries[-1])
    host = request.getHeader(b"host") or b""
    return normalise_host(host.decode("latin-1"))


class HostTable:
    """Host name -> the instance (``ApplicationConfig``) that lists it."""

    def __init__(self, applications):
        self.exact: dict[str, object] = {}
        self.wildcard: dict[str, object] = {}  # "example.net" for "*.example.net"
        for app_cfg in applications:
            for name in app_cfg.hosts:
                name = normalise_host(name)
                if name.startswith("*."):
                    self.wildcard.setdefault(name[2:], app_cfg)
                else:
                    self.exact.setdefault(name, app_cfg)

    def __bool__(self) -> bool:
        """Whether any instance lists a host name (if none, routing is by path only)."""
        return bool(self.exact or self.wildcard)

    def lookup(self, host: str):
        """The instance serving ``host`` (already normalised), or None.

        ``*.example.net`` stands for exactly one label: ``cb.example.net`` but neither
        ``example.net`` nor ``a.cb.example.net``; an exact entry wins over a wildcard.
        """
        if not host:
            return None
        found = self.exact.get(host)
        if found is None and "." in host:
            found = self.wildcard.get(host.split(".", 1)[1])
        return found


def page_address_mismatch(app_cfg) -> str | None:
    """Why the instance's ``callback_page_address`` does not lead to its page, or None.

    The page is served at ``url_path`` on the web endpoint, or at ``/`` for a host name the
    instance lists (matched as requests are, ``*.`` entries included). A reverse proxy may
    map another public path onto it, so this is a warning for the operator, not an error.
    """
    parts = urllib.parse.urlsplit(app_cfg.callback_page_address)
    path = "/" + parts.path.strip("/")
    by_host = HostTable([app_cfg]).lookup(normalise_host(parts.netloc)) is not None
    wanted = "/" if by_host else app_cfg.url_path
    if path == wanted:
        return None
    return (f"callback_page_address {app_cfg.callback_page_address!r} has path {path!r}, but "
            f"this instance's page is served at {wanted!r} (set path, or hosts, to match "
            "unless a proxy maps one onto the other)")
