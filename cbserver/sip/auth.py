"""Digest authentication towards the trunk (RFC 2617, RFC 7616, RFC 8760), as a SIP client.

Pure functions and a small credential holder: parse ``WWW-Authenticate`` /
``Proxy-Authenticate`` challenges, pick the strongest one we support, and build the
``Authorization`` / ``Proxy-Authorization`` value, counting ``nc`` per nonce.
No Twisted, no I/O.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "AuthAttempts",
    "AuthError",
    "DigestChallenge",
    "DigestClient",
    "parse_challenge",
    "pick_challenge",
    "digest_response",
    "SUPPORTED_ALGORITHMS",
]


class AuthError(ValueError):
    """A challenge we cannot answer (unknown scheme, algorithm or qop; missing field)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _hash_factory(name: str) -> Callable[[bytes], str]:
    def digest(data: bytes) -> str:
        return hashlib.new(name, data).hexdigest()

    return digest


def _sha512_256_available() -> bool:
    try:
        hashlib.new("sha512_256", b"")
    except ValueError:
        return False
    return True


# RFC 7616 3.3 / RFC 8760 2.1: algorithm token -> (hash, strength rank). Higher rank wins.
_ALGORITHMS: dict[str, tuple[str, int]] = {"MD5": ("md5", 1), "SHA-256": ("sha256", 2)}
if _sha512_256_available():
    _ALGORITHMS["SHA-512-256"] = ("sha512_256", 3)

SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(a for base in _ALGORITHMS for a in (base, base + "-sess"))


@dataclass(frozen=True)
class DigestChallenge:
    """One parsed ``Digest`` challenge; ``proxy`` is True when it came in a 407."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    userhash: bool = False
    proxy: bool = False

    @property
    def base_algorithm(self) -> str:
        """The algorithm without its ``-sess`` suffix, upper case."""
        alg = self.algorithm.upper()
        return alg[:-5] if alg.endswith("-SESS") else alg

    @property
    def session(self) -> bool:
        """True for the ``-sess`` variants (RFC 7616 3.4.2)."""
        return self.algorithm.upper().endswith("-SESS")

    @property
    def supported(self) -> bool:
        """True when we implement both the algorithm and at least one offered qop."""
        if self.base_algorithm not in _ALGORITHMS:
            return False
        return not self.qop or "auth" in self.qop or "auth-int" in self.qop

    @property
    def strength(self) -> int:
        """Rank for choosing among several challenges (RFC 7616 3.7: prefer the strongest)."""
        return _ALGORITHMS.get(self.base_algorithm, ("", 0))[1]


def _split_params(text: str) -> dict[str, str]:
    """Split ``k=v, k="quoted, v"`` auth-params (RFC 7235 2.1), unquoting quoted-strings."""
    params: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        start = i
        while i < n and text[i] not in "= \t,":
            i += 1
        name = text[start:i].strip().lower()
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "=":
            if name:
                params[name] = ""
            continue
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            out = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(text[i])
                i += 1
            i += 1
            value = "".join(out)
        else:
            start = i
            while i < n and text[i] != ",":
                i += 1
            value = text[start:i].strip()
        if name:
            params[name] = value
    return params


def parse_challenge(value: str, *, proxy: bool = False) -> DigestChallenge:
    """Parse one ``WWW-Authenticate``/``Proxy-Authenticate`` header value (RFC 7616 3.3)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise AuthError(f"unsupported auth scheme {scheme!r}")
    p = _split_params(rest)
    if "realm" not in p or "nonce" not in p:
        raise AuthError("digest challenge without realm or nonce")
    qop = tuple(q.strip().lower() for q in p.get("qop", "").split(",") if q.strip())
    return DigestChallenge(
        realm=p["realm"],
        nonce=p["nonce"],
        algorithm=p.get("algorithm", "MD5") or "MD5",
        qop=qop,
        opaque=p.get("opaque"),
        stale=p.get("stale", "").lower() == "true",
        userhash=p.get("userhash", "").lower() == "true",
        proxy=proxy,
    )


def pick_challenge(values: list[str], *, proxy: bool = False) -> DigestChallenge:
    """Parse every challenge and return the strongest one we support (RFC 7616 3.7).

    Raises :class:`AuthError` when none is usable.
    """
    best: DigestChallenge | None = None
    for value in values:
        try:
            ch = parse_challenge(value, proxy=proxy)
        except AuthError:
            continue
        if ch.supported and (best is None or ch.strength > best.strength):
            best = ch
    if best is None:
        raise AuthError("no supported digest challenge offered")
    return best


def digest_response(
    ch: DigestChallenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str = "",
    nc: int = 1,
    qop: str | None = None,
    body: bytes = b"",
) -> str:
    """Compute the ``response`` hex digest (RFC 2617 3.2.2.1, RFC 7616 3.4.1)."""
    if ch.base_algorithm not in _ALGORITHMS:
        raise AuthError(f"unsupported algorithm {ch.algorithm!r}")
    h = _hash_factory(_ALGORITHMS[ch.base_algorithm][0])
    # RFC 7616 3.4.2: A1, with the -sess variant folding in nonce and cnonce.
    ha1 = h(f"{username}:{ch.realm}:{password}".encode())
    if ch.session:
        ha1 = h(f"{ha1}:{ch.nonce}:{cnonce}".encode())
    # RFC 7616 3.4.3: A2, with the entity-body hash for auth-int.
    if qop == "auth-int":
        ha2 = h(f"{method}:{uri}:{h(body)}".encode())
    else:
        ha2 = h(f"{method}:{uri}".encode())
    if qop:
        return h(f"{ha1}:{ch.nonce}:{nc:08x}:{cnonce}:{qop}:{ha2}".encode())
    # RFC 2069 compatibility (RFC 2617 3.2.2.1): no qop offered.
    return h(f"{ha1}:{ch.nonce}:{ha2}".encode())


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class DigestClient:
    """Answers digest challenges for one set of credentials.

    Keeps the nonce count per nonce (RFC 7616 3.4: ``nc`` increases with each request that
    reuses the nonce) and remembers the last challenge per realm so later requests in the
    same call can be pre-authorised.
    """

    username: str
    password: str
    cnonce_factory: Callable[[], str] = field(default=lambda: os.urandom(12).hex())
    _nc: dict[str, int] = field(default_factory=dict, repr=False)

    def next_nc(self, nonce: str) -> int:
        """Return the next nonce count for ``nonce`` (1 for a fresh nonce)."""
        n = self._nc.get(nonce, 0) + 1
        self._nc[nonce] = n
        return n

    def authorization(self, ch: DigestChallenge, method: str, uri: str, body: bytes = b"") -> tuple[str, str]:
        """Return ``(header name, value)`` answering ``ch`` for a request.

        The header is ``Proxy-Authorization`` for a 407 challenge and ``Authorization``
        for a 401 (RFC 3261 22.2, 22.3).
        """
        if not ch.supported:
            raise AuthError(f"cannot answer challenge with algorithm {ch.algorithm!r}")
        qop: str | None = None
        if ch.qop:
            # RFC 7616 3.4: prefer plain auth; auth-int only when it is all that is offered.
            qop = "auth" if "auth" in ch.qop else "auth-int"
        cnonce = self.cnonce_factory() if (qop or ch.session) else ""
        nc = self.next_nc(ch.nonce) if qop else 1
        user = self.username
        if ch.userhash:
            # RFC 7616 3.4.4: username hashed with the realm.
            h = _hash_factory(_ALGORITHMS[ch.base_algorithm][0])
            user = h(f"{self.username}:{ch.realm}".encode())
        resp = digest_response(
            ch,
            username=self.username,
            password=self.password,
            method=method,
            uri=uri,
            cnonce=cnonce,
            nc=nc,
            qop=qop,
            body=body,
        )
        parts = [
            f"username={_quote(user)}",
            f"realm={_quote(ch.realm)}",
            f"nonce={_quote(ch.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(resp)}",
            f"algorithm={ch.algorithm}",
        ]
        if qop:
            parts += [f"qop={qop}", f"nc={nc:08x}", f"cnonce={_quote(cnonce)}"]
        elif ch.session:
            parts.append(f"cnonce={_quote(cnonce)}")
        if ch.opaque is not None:
            parts.append(f"opaque={_quote(ch.opaque)}")
        if ch.userhash:
            parts.append("userhash=true")
        header = "Proxy-Authorization" if ch.proxy else "Authorization"
        return header, "Digest " + ", ".join(parts)


class AuthAttempts:
    """Decides whether another challenge for a request should be answered.

    RFC 3261 22.2: a UAC retries with credentials once per realm; a second challenge for the
    same realm means the credentials were refused, unless it says ``stale=true``
    (RFC 7616 3.3), in which case we retry with the fresh nonce, at most ``max_stale`` times.
    """

    def __init__(self, max_stale: int = 2) -> None:
        self._tried: set[str] = set()
        self._stale = 0
        self._max_stale = max_stale

    def should_retry(self, ch: DigestChallenge) -> bool:
        """Record the challenge and say whether answering it can still succeed."""
        if ch.realm not in self._tried:
            self._tried.add(ch.realm)
            return True
        if ch.stale and self._stale < self._max_stale:
            self._stale += 1
            return True
        return False
