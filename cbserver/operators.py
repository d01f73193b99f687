"""Operators of the web console: passwords, logins limited per operator and per client, sessions.

Passwords are salted scrypt hashes in the ``cbserver.billing.passwords`` format at the
``OPERATOR`` cost: n=2**15, r=8, p=1 (32 MiB of memory per try; docs/admin-ui.md has a timing),
a 16-byte random salt and a 32-byte key; an operator's password must be strong
(``check_password(strong=True)``: 12 characters from 3 classes).

A login that fails (unknown name, wrong password, disabled operator: the same answer, after the
same scrypt work) counts against ``operator:<name>`` and ``client:<address>``; once either has
``attempts`` (the client: four times that) failures within ``period`` seconds, logins for it
are refused, the right password included, until the period is over. A good login clears the
operator's count (not the client's).

Sessions are rows in PostgreSQL (sql/045), so any node behind a load balancer accepts them.
The cookie holds 32 random bytes; only their SHA-256 is stored. A login always opens a new
session id (and ends the one the browser had): an id planted before the login (session
fixation) is worth nothing after it. A session unused for ``idle_timeout`` seconds is over.
Each session has its own CSRF token (a synchroniser token), which every form that changes
something carries and ``Session.csrf_ok`` checks in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from twisted.internet import threads
from zope.interface import Interface

from cbserver.billing.passwords import Cost, hash_password, verify_password

OPERATOR = Cost(2**15, 8, 1)
ADMIN, READONLY = "admin", "readonly"
ROLES = (ADMIN, READONLY)
ROLE_TITLES = {ADMIN: "administrator", READONLY: "read-only"}
CLIENT_FACTOR = 4  # a client address may fail this many times an operator's allowance


class IOperatorStore(Interface):
    """Where operators, sessions and failed logins are kept (``cbserver.db.operators_store``).

    Every method returns a Deferred.
    """

    def get_operator(name):
        """The operator ``{"name", "role", "password_hash", "disabled", ...}`` or None."""

    def open_session(id_hash, operator, csrf_token, client):
        """Store a new session."""

    def touch_session(id_hash, idle_seconds):
        """Mark a session used now; ``{"operator", "role", "csrf_token"}``, or None when it
        does not exist, was idle longer than ``idle_seconds``, or its operator is disabled."""

    def end_session(id_hash):
        """Delete a session (logout)."""

    def prune(idle_seconds, period):
        """Delete sessions idle longer than ``idle_seconds`` and failure counts older than
        ``period`` (both are over: this only keeps the tables small)."""

    def login_failures(keys, period):
        """``{key: failures}`` counted within the last ``period`` seconds."""

    def count_failure(keys, period):
        """Add one failure to each key (a count older than ``period`` starts again)."""

    def clear_failures(keys):
        """Forget the failures of ``keys``."""


class LoginFailed(Exception):
    """Wrong name or password (or a disabled operator): one answer for all three."""


class LoginLimited(Exception):
    """Too many failed logins for this operator or from this client address."""


def hash_operator_password(password: str) -> str:
    """The stored hash of an operator's password (see the module docstring for the cost)."""
    return hash_password(password, OPERATOR)


_DUMMY: list[str] = []


def dummy_operator_hash() -> str:
    """A hash of a random password at the operator cost, made once: an unknown name costs the
    same scrypt work as a real operator, so timing tells nobody which names exist."""
    if not _DUMMY:
        _DUMMY.append(hash_operator_password(secrets.token_urlsafe(24)))
    return _DUMMY[0]


def session_hash(session_id: str) -> str:
    """What the database keeps of a session id: its SHA-256, hex."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Session:
    """A logged-in operator's session, as one request sees it."""

    id_hash: str
    operator: str
    role: str
    csrf_token: str

    @property
    def can_change(self) -> bool:
        """Whether this operator may change anything (administrators only)."""
        return self.role == ADMIN

    def csrf_ok(self, given: str | None) -> bool:
        """Whether a form's token is this session's (constant-time compare)."""
        return bool(given) and hmac.compare_digest(given.encode("utf-8", "replace"),
                                                   self.csrf_token.encode("ascii"))


class Operators:
    """Logins, sessions and logouts over an ``IOperatorStore``."""

    def __init__(self, store, *, idle_timeout: float = 900.0, attempts: int = 5,
                 period: float = 900.0, in_thread=None):
        self.store = store
        # scrypt takes a noticeable time and 32 MiB: never on the reactor thread, which also
        # carries the node's calls (SIP and RTP timing).
        self.in_thread = in_thread or threads.deferToThread
        self.idle_timeout = idle_timeout
        self.attempts = attempts
        self.period = period

    @staticmethod
    def _keys(name: str, client: str) -> tuple[str, str]:
        """The two failure counters a login touches."""
        return f"operator:{name}", f"client:{client}"

    async def login(self, name: str, password: str, client: str,
                    old_session_id: str = "") -> tuple[str, Session]:
        """Check a login; ``(new session id for the cookie, Session)``.

        Raises ``LoginLimited`` before any password work when a counter is at its limit, and
        ``LoginFailed`` (after counting it) for a wrong name, password or disabled operator.
        """
        name = (name or "").strip().lower()[:64]
        op_key, client_key = self._keys(name, client)
        counts = await self.store.login_failures([op_key, client_key], self.period)
        if (counts.get(op_key, 0) >= self.attempts
                or counts.get(client_key, 0) >= self.attempts * CLIENT_FACTOR):
            raise LoginLimited()
        operator = await self.store.get_operator(name) if name else None
        # The same scrypt work for an unknown name as for a real one: no timing oracle.
        stored = (operator["password_hash"] if operator
                  else await self.in_thread(dummy_operator_hash))
        good = await self.in_thread(verify_password, password or "", stored)
        if not good or operator is None or operator["disabled"]:
            await self.store.count_failure([op_key, client_key], self.period)
            raise LoginFailed()
        await self.store.clear_failures([op_key])
        if old_session_id:
            await self.store.end_session(session_hash(old_session_id))
        session_id = secrets.token_urlsafe(32)
        session = Session(session_hash(session_id), operator["name"], operator["role"],
                          secrets.token_urlsafe(32))
        await self.store.open_session(session.id_hash, session.operator, session.csrf_token, client)
        # Logins are rare: a good moment to forget sessions and counts that are over anyway.
        await self.store.prune(self.idle_timeout, self.period)
        return session_id, session

    async def session(self, session_id: str | None) -> Session | None:
        """The live session of a cookie's id (used now), or None."""
        if not session_id or len(session_id) > 128:
            return None
        id_hash = session_hash(session_id)
        row = await self.store.touch_session(id_hash, self.idle_timeout)
        if row is None:
            return None
        return Session(id_hash, row["operator"], row["role"], row["csrf_token"])

    async def logout(self, session: Session) -> None:
        """End a session."""
        await self.store.end_session(session.id_hash)
