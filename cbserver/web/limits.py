"""Who may use the web triggers, by address: the Hosted allow-list and the client's address.

* ``hosted_allowed`` says whether a client may use an instance's Hosted mode: its address is
  in one of the instance's ``hosted_allowed_clients`` networks, or it presented one of the
  instance's ``token:<secret>`` entries (compared in constant time, never logged).
* ``client_address`` finds the client behind trusted proxies (``X-Forwarded-For``).

The admission rules (rate limits, the per-account concurrency slot, the node's busy caps)
live in ``cbserver.callback.admission``; the names below are re-exported from there for the
web modules that still import them from here.
"""

from __future__ import annotations

import hmac
import ipaddress

from cbserver.callback.admission import (  # noqa: F401 - re-exported, see the docstring
    LIMIT_KINDS,
    ConcurrencyGauge,
    IConcurrencyGauge,
    IRateLimiter,
    RateLimited,
    RateLimiter,
)


def _networks(entries) -> list:
    """The IP networks among allow-list entries."""
    return [ipaddress.ip_network(e, strict=False) for e in entries if not e.startswith("token:")]


def hosted_tokens(app_cfg) -> list[str]:
    """The instance's Hosted tokens (the secrets of its ``token:<secret>`` entries)."""
    return [e[len("token:"):] for e in app_cfg.hosted_allowed_clients if e.startswith("token:")]


def token_allowed(app_cfg, token: str | None) -> bool:
    """Whether ``token`` is one of the instance's Hosted tokens (constant-time compare)."""
    if not token:
        return False
    given = token.encode("utf-8")
    found = False
    for secret in hosted_tokens(app_cfg):
        found |= hmac.compare_digest(given, secret.encode("utf-8"))
    return found


def address_allowed(app_cfg, client_address: str) -> bool:
    """Whether the client address lies in one of the instance's allowed networks."""
    return in_networks(client_address, _networks(app_cfg.hosted_allowed_clients))


def in_networks(address: str, networks) -> bool:
    """Whether ``address`` (text) lies in one of ``networks``; False for a malformed one."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks)


_NETWORK_TYPES = (ipaddress.IPv4Network, ipaddress.IPv6Network)
_ANY_ADDRESS = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


def trusted_networks(trusted_proxies) -> tuple:
    """``[web] trusted_proxies`` as IP networks (items already parsed are kept as they are).

    The web front end parses them once at start-up and passes the result on, so a request
    costs no parsing.
    """
    return tuple(n if isinstance(n, _NETWORK_TYPES) else ipaddress.ip_network(n, strict=False)
                 for n in trusted_proxies)


def from_trusted_proxy(peer: str, trusted_proxies) -> bool:
    """Whether the TCP peer is one of ``trusted_proxies``, whose forwarding headers count."""
    return bool(trusted_proxies) and in_networks(peer, trusted_networks(trusted_proxies))


def client_address(peer: str, forwarded_for: list[str] | None, trusted_proxies=()) -> str:
    """The address of the client a request comes from.

    The TCP peer, unless it is one of ``trusted_proxies`` (networks, as text or parsed by
    ``trusted_networks``, e.g. the load balancer's):
    then the right-most ``X-Forwarded-For`` entry that is not a trusted proxy itself (entries
    further left were written by the client and cannot be trusted). A malformed entry stops
    the walk and the proxy's own address is used, so a forged header never helps a client.
    """
    nets = trusted_networks(trusted_proxies)
    if not (nets and in_networks(peer, nets)):
        return peer
    chain = [a.strip() for h in forwarded_for or () for a in h.split(",") if a.strip()]
    for entry in reversed(chain):
        if not in_networks(entry, _ANY_ADDRESS):
            return peer
        if not in_networks(entry, nets):
            return entry
    return peer


def hosted_allowed(app_cfg, client_address: str, token: str | None = None) -> bool:
    """Whether a client may trigger the instance's Hosted mode (empty allow-list: nobody)."""
    return address_allowed(app_cfg, client_address) or token_allowed(app_cfg, token)


