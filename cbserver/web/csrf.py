"""CSRF protection for the page's forms, and the signed cookie that remembers a Hosted token.

A browser gets a random nonce in the ``cb_csrf`` cookie (``Secure``, ``HttpOnly``,
``SameSite=Strict``). Each form carries ``csrf = HMAC(secret, nonce | scope)`` where the scope
is the instance's path, so a token is good only with its own cookie and on its own page. The
secret is given by the caller (random per process unless the operator shares one between
nodes). The JSON API needs no token: it accepts only ``application/json`` bodies, which a
foreign page cannot send without a CORS preflight that this server never grants.

``SharedSecretService`` replaces the process's random secret by the one every node shares
(kept in PostgreSQL), once the database is ready, so forms work behind a load balancer.

``hosted_proof`` signs "this browser presented Hosted token T for instance P" without storing
T: the cookie holds ``HMAC(secret, P | SHA-256(T))`` and is checked against the tokens the
instance lists now, so removing a token from the config also revokes the cookies.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from twisted.application import service

from cbserver.logs import Logger

CSRF_COOKIE = b"cb_csrf"
_NONCE_LENGTH = 32


class CsrfGuard:
    """Issues and checks form tokens bound to a per-browser cookie."""

    def __init__(self, secret: bytes | None = None, secure: bool = True):
        self.secret = secret or os.urandom(32)
        self.secure = secure  # False only for a plain-HTTP endpoint (cookies must still work)

    def _mac(self, *parts: str) -> str:
        """HMAC-SHA256 of the parts joined by ``|``, hex."""
        msg = "|".join(parts).encode("utf-8")
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()

    @staticmethod
    def _cookie_nonce(request) -> str | None:
        """The nonce of the request's cookie if it looks like one of ours."""
        raw = request.getCookie(CSRF_COOKIE)
        if raw is None:
            return None
        nonce = raw.decode("ascii", "replace")
        if len(nonce) != _NONCE_LENGTH * 2 or not all(c in "0123456789abcdef" for c in nonce):
            return None
        return nonce

    def ensure_cookie(self, request) -> str:
        """The browser's nonce, setting a new cookie when it has none."""
        nonce = self._cookie_nonce(request)
        if nonce is None:
            nonce = secrets.token_hex(_NONCE_LENGTH)
            request.addCookie(CSRF_COOKIE, nonce.encode("ascii"), path=b"/", secure=self.secure,
                              httpOnly=True, sameSite=b"strict")
        return nonce

    def token(self, nonce: str, scope: str) -> str:
        """The form token for a nonce on the page ``scope``."""
        return self._mac("csrf", nonce, scope)

    def verify(self, request, scope: str, token: str | None) -> bool:
        """Whether ``token`` was issued for this browser's cookie on page ``scope``."""
        nonce = self._cookie_nonce(request)
        if nonce is None or not token:
            return False
        return hmac.compare_digest(self.token(nonce, scope), token)

    def hosted_proof(self, scope: str, hosted_token: str) -> str:
        """The cookie value proving that this browser presented ``hosted_token`` on ``scope``."""
        digest = hashlib.sha256(hosted_token.encode("utf-8")).hexdigest()
        return self._mac("hosted", scope, digest)

    def hosted_proof_valid(self, scope: str, proof: str | None, tokens: list[str]) -> bool:
        """Whether ``proof`` was made for one of ``tokens`` (checked against each)."""
        if not proof:
            return False
        ok = False
        for t in tokens:
            ok |= hmac.compare_digest(self.hosted_proof(scope, t), proof)
        return ok


class SharedSecretService(service.Service):
    """Once started (with the database ready), sign with the secret every node shares.

    Until then the guard signs with the process's random secret, so forms served before that
    moment fail their CSRF check once ("please try again").
    """

    log = Logger()
    name = "web-secret"

    def __init__(self, guard: CsrfGuard, store):
        self.guard = guard
        self.store = store  # an ILimitStore (its shared_secret)
        self.loading = None  # the Deferred of the load in progress (tests wait on it)

    def startService(self) -> None:
        """Load (or create) the shared secret in the background; failures are logged."""
        super().startService()
        d = self.store.shared_secret("csrf", self.guard.secret)
        d.addCallback(self._loaded)
        d.addErrback(lambda f: self.log.failure("could not load the shared web secret; "
                                                "this node keeps its own", failure=f))
        self.loading = d

    def _loaded(self, secret: bytes) -> None:
        """Switch the signatures to the shared secret."""
        self.guard.secret = secret
        self.log.info("web pages signed with the secret shared by every node")
