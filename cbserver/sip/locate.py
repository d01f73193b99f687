"""RFC 3263 server location: which transport, address and port to send a request to.

Given the trunk's SIP URI (or host), ``ServerLocator.locate`` asks DNS through an injected
``twisted.names`` ``IResolver`` for NAPTR, then SRV, then A/AAAA records, and returns every
target in failover order: the caller tries the first and moves to the next when it fails
(RFC 3263 4.3). A literal IP address never touches DNS. The resolver does the caching and
the timeouts; this module only orders the answers.
"""

from __future__ import annotations

import random as _random
import re
import socket
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.names import dns
from twisted.names import error as dns_error

from cbserver.logs import Logger
from cbserver.sip.uri import SipParseError, Uri, is_digits, parse_uri

__all__ = ["LocateError", "Target", "ServerLocator", "order_srv"]

log = Logger()

# RFC 3263 4.1 / RFC 3261 26.5: NAPTR services and SRV prefixes per (transport, secure).
_NAPTR_SERVICE = {("UDP", False): b"SIP+D2U", ("TCP", False): b"SIP+D2T",
                  ("TLS", True): b"SIPS+D2T"}  # fmt: skip
_SRV_PREFIX = {("UDP", False): "_sip._udp.", ("TCP", False): "_sip._tcp.",
               ("TLS", True): "_sips._tcp."}  # fmt: skip
_DEFAULT_PORT = {"UDP": 5060, "TCP": 5060, "TLS": 5061}
# Lookups that mean "no such records" rather than a broken resolver.
_EMPTY_ERRORS = (dns_error.DomainError, dns_error.AuthoritativeDomainError,
                 dns_error.DNSNameError, dns_error.DNSServerError,
                 dns_error.DNSQueryTimeoutError, dns_error.DNSNotImplementedError,
                 dns_error.DNSQueryRefusedError, dns_error.DNSFormatError,
                 dns_error.DNSUnknownError)  # fmt: skip


_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")


class LocateError(Exception):
    """No target could be found for the URI (bad URI, or DNS gave nothing usable)."""


@dataclass(frozen=True)
class Target:
    """One place to send a request: transport (``UDP``/``TCP``/``TLS``), IP address, port."""

    transport: str
    host: str
    port: int


def _is_ip(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


def order_srv(records, rng) -> list:
    """Order SRV records for failover per RFC 2782: by priority, then weighted random."""
    out = []
    for priority in sorted({r.priority for r in records}):
        # RFC 2782: zero-weight records first in the running sum, so they are rarely first.
        group = sorted((r for r in records if r.priority == priority), key=lambda r: r.weight)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.randint(0, total)
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    out.append(group.pop(index))
                    break
    return out


class ServerLocator:
    """Finds the targets for a SIP URI per RFC 3263 with an injected ``IResolver``.

    ``transports`` are the ones we can send on, in our order of preference; ``families``
    the address records to ask for (``"A"``, ``"AAAA"``), in order; ``rng`` a
    ``random.Random`` for the RFC 2782 weighted choice (seed it in tests)."""

    def __init__(self, resolver, transports=("UDP", "TCP"), families=("A", "AAAA"), rng=None):
        self.resolver = resolver
        self.transports = tuple(t.upper() for t in transports)
        self.families = tuple(families)
        self.rng = rng if rng is not None else _random.Random()

    def locate(self, uri: Uri | str) -> Deferred:
        """Deferred list of ``Target`` in failover order; errback ``LocateError`` if none."""
        return Deferred.fromCoroutine(self._locate(uri))

    async def _locate(self, uri: Uri | str) -> list[Target]:
        if isinstance(uri, str):
            try:
                # A bare "host[:port]" (as in the config's trunk address) means a sip: URI.
                scheme, colon, rest = uri.partition(":")
                bare = not colon or is_digits(rest) or not _SCHEME_RE.fullmatch(scheme)
                uri = parse_uri(f"sip:{uri}" if bare else uri)
            except SipParseError as exc:
                raise LocateError(f"bad trunk URI: {exc.reason}") from exc
        if not uri.is_sip:
            raise LocateError(f"cannot locate a {uri.scheme}: URI")
        secure = uri.scheme == "sips"
        host = uri.params.get("maddr") or uri.host  # RFC 3263 4: maddr wins over the host
        host = host[1:-1] if host.startswith("[") else host
        forced = uri.params.get("transport")
        targets = await self._targets(host, uri.port, forced.upper() if forced else None, secure)
        if not targets:
            raise LocateError(f"no DNS records usable for {host}")
        log.debug("located {host}: {targets}", host=host, targets=targets)
        return targets

    async def _targets(self, host, port, transport, secure) -> list[Target]:
        # RFC 3263 4.1: a literal address or an explicit port skips NAPTR.
        if _is_ip(host) or port is not None or transport is not None:
            transport = transport or ("TLS" if secure else "UDP")
            if transport == "TCP" and secure:
                transport = "TLS"
            if _is_ip(host):
                return [Target(transport, host, port or _DEFAULT_PORT[transport])]
            if port is not None:
                return await self._addresses(transport, host, port)
            srv = await self._srv(transport, _SRV_PREFIX.get((transport, secure), "") + host)
            return srv or await self._addresses(transport, host, _DEFAULT_PORT[transport])
        chains = await self._naptr(host, secure)
        if not chains:
            # RFC 3263 4.1: no NAPTR, so try the SRV names of each transport we support.
            chains = [(t, _SRV_PREFIX[(t, secure)] + host) for t in self._usable(secure)]
        targets: list[Target] = []
        for t, name in chains:
            targets.extend(await self._srv(t, name))
        if targets:
            return targets
        # RFC 3263 4.2: no SRV either; UDP (TLS for sips) to the host's addresses.
        fallback = "TLS" if secure else "UDP"
        return await self._addresses(fallback, host, _DEFAULT_PORT[fallback])

    def _usable(self, secure: bool) -> list[str]:
        return [t for t in self.transports if (t, secure) in _SRV_PREFIX]

    async def _query(self, method: str, name: str) -> tuple[list, list]:
        """(answers, additional) of one lookup; empty lists when the name has none."""
        try:
            answers, _, additional = await getattr(self.resolver, method)(name)
        except _EMPTY_ERRORS as exc:
            log.debug("DNS {method} {name}: {error}", method=method, name=name, error=exc)
            return [], []
        return answers, additional

    async def _naptr(self, host: str, secure: bool) -> list[tuple[str, str]]:
        """RFC 3263 4.1: (transport, SRV name) from NAPTR records we can use, in order."""
        answers, _ = await self._query("lookupNamingAuthorityPointer", host)
        wanted = {_NAPTR_SERVICE[(t, secure)]: t for t in self._usable(secure)}
        records = [rr.payload for rr in answers if rr.type == dns.NAPTR]
        records.sort(key=lambda r: (r.order, r.preference))
        chains = []
        for r in records:
            service = r.service.string.upper()
            # RFC 3263 4.1: only "s" flag records whose service we support are followed.
            if r.flags.string.lower() == b"s" and service in wanted:
                chains.append((wanted[service], r.replacement.name.decode("ascii")))
        return chains

    async def _srv(self, transport: str, name: str) -> list[Target]:
        """RFC 3263 4.2 / RFC 2782: SRV records of ``name``, each resolved to addresses."""
        answers, additional = await self._query("lookupService", name)
        records = [rr.payload for rr in answers if rr.type == dns.SRV]
        # RFC 2782: a single record with target "." means "no service here".
        records = [r for r in records if r.target.name not in (b"", b".")]
        targets: list[Target] = []
        for r in order_srv(records, self.rng):
            target = r.target.name.decode("ascii")
            glued = _addresses_in(additional, target, self.families)
            if glued:
                targets.extend(Target(transport, ip, r.port) for ip in glued)
            else:
                targets.extend(await self._addresses(transport, target, r.port))
        return targets

    async def _addresses(self, transport: str, host: str, port: int) -> list[Target]:
        """A then AAAA (or as configured) addresses of ``host`` as targets."""
        out = []
        for family in self.families:
            method = "lookupAddress" if family == "A" else "lookupIPV6Address"
            answers, _ = await self._query(method, host)
            out.extend(Target(transport, ip, port) for ip in _addresses_in(answers, None, (family,)))
        return out


def _addresses_in(records, owner: str | None, families) -> list[str]:
    """IP addresses in ``records`` of the given families (owned by ``owner`` if given)."""
    out = []
    for family in families:
        rtype = dns.A if family == "A" else dns.AAAA
        for rr in records:
            if rr.type != rtype:
                continue
            if owner is not None and rr.name.name.decode("ascii").lower() != owner.lower():
                continue
            if rtype == dns.A:
                out.append(rr.payload.dottedQuad())
            else:
                out.append(socket.inet_ntop(socket.AF_INET6, rr.payload.address))
    return out
