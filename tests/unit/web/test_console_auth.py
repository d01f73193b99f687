"""Operators of the console: scrypt hashes, logins and their limits, sessions, CSRF, roles.

The rules of ``cbserver.operators`` over an in-memory store whose clock is a
``twisted.internet.task.Clock`` (the PostgreSQL store and the HTTP side are tested for real
in tests/integration/web/test_console_*).
"""

from __future__ import annotations

import hashlib

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cbserver.billing.passwords import verify_password
from cbserver.cli import build_parser
from cbserver.db.operators_store import PostgresOperatorStore
from cbserver.operators import (
    ADMIN,
    OPERATOR,
    READONLY,
    IOperatorStore,
    LoginFailed,
    LoginLimited,
    Operators,
    Session,
    hash_operator_password,
    session_hash,
)

PASSWORD = "Corr3ct-horse-battery"


@implementer(IOperatorStore)
class MemoryStore:
    """``IOperatorStore`` in memory, its time from a ``Clock``."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.operators: dict[str, dict] = {}
        self.sessions: dict[str, dict] = {}
        self.failures: dict[str, tuple[int, float]] = {}

    def add(self, name, role, password=PASSWORD, disabled=False):
        self.operators[name] = {"name": name, "role": role, "disabled": disabled,
                                "password_hash": hash_operator_password(password)}

    def get_operator(self, name):
        return defer.succeed(self.operators.get(name))

    def open_session(self, id_hash, operator, csrf_token, client):
        self.sessions[id_hash] = {"operator": operator, "csrf_token": csrf_token,
                                  "used": self.clock.seconds()}
        return defer.succeed(None)

    def touch_session(self, id_hash, idle_seconds):
        s = self.sessions.get(id_hash)
        if s is None or self.clock.seconds() - s["used"] >= idle_seconds:
            return defer.succeed(None)
        op = self.operators[s["operator"]]
        if op["disabled"]:
            return defer.succeed(None)
        s["used"] = self.clock.seconds()
        return defer.succeed({"operator": s["operator"], "role": op["role"],
                              "csrf_token": s["csrf_token"]})

    def end_session(self, id_hash):
        self.sessions.pop(id_hash, None)
        return defer.succeed(None)

    def prune(self, idle_seconds, period):
        now = self.clock.seconds()
        self.pruned = True
        for k, s in list(self.sessions.items()):
            if now - s["used"] >= idle_seconds:
                del self.sessions[k]
        for k, (_n, since) in list(self.failures.items()):
            if now - since >= period:
                del self.failures[k]
        return defer.succeed(None)

    def login_failures(self, keys, period):
        now = self.clock.seconds()
        return defer.succeed({k: n for k, (n, since) in self.failures.items()
                              if k in keys and now - since < period})

    def count_failure(self, keys, period):
        now = self.clock.seconds()
        for k in keys:
            n, since = self.failures.get(k, (0, now))
            self.failures[k] = (1, now) if now - since >= period else (n + 1, since)
        return defer.succeed(None)

    def clear_failures(self, keys):
        for k in keys:
            self.failures.pop(k, None)
        return defer.succeed(None)


@pytest.fixture
def world():
    clock = Clock()
    store = MemoryStore(clock)
    store.add("alice", ADMIN)
    store.add("rita", READONLY)
    return clock, store, Operators(store, idle_timeout=900, attempts=3, period=600)


def test_the_memory_store_and_the_postgres_store_provide_the_interface(world):
    assert verifyObject(IOperatorStore, world[1])
    assert verifyObject(IOperatorStore, PostgresOperatorStore(db=None))


def test_operator_passwords_are_salted_scrypt_at_the_documented_cost():
    a, b = hash_operator_password(PASSWORD), hash_operator_password(PASSWORD)
    assert a != b  # salted
    scheme, n, r, p, _salt, _digest = a.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", OPERATOR.n, OPERATOR.r, OPERATOR.p)
    assert OPERATOR.n >= 2**15
    assert verify_password(PASSWORD, a) and not verify_password(PASSWORD + "x", a)


@pytest_twisted.ensureDeferred
async def test_login_opens_a_new_session_and_ends_the_old_one(world):
    _clock, store, ops = world
    first_id, first = await ops.login("alice", PASSWORD, "192.0.2.1")
    assert first.operator == "alice" and first.can_change
    assert first.id_hash == session_hash(first_id) == hashlib.sha256(first_id.encode()).hexdigest()
    assert first_id not in str(store.sessions)  # only the hash is kept
    again_id, _again = await ops.login("alice", PASSWORD, "192.0.2.1", old_session_id=first_id)
    assert again_id != first_id
    assert await ops.session(first_id) is None  # the id held before the login is worthless
    assert (await ops.session(again_id)).operator == "alice"


@pytest_twisted.ensureDeferred
async def test_a_planted_id_never_becomes_a_session(world):
    _clock, _store, ops = world
    planted = "attacker-chosen-session-id"
    new_id, _s = await ops.login("alice", PASSWORD, "192.0.2.1", old_session_id=planted)
    assert new_id != planted and await ops.session(planted) is None


@pytest_twisted.ensureDeferred
async def test_wrong_unknown_and_disabled_get_the_same_refusal(world):
    _clock, store, ops = world
    store.add("dora", ADMIN, disabled=True)
    for name, pw in (("alice", "nope"), ("nobody", PASSWORD), ("dora", PASSWORD), ("", "")):
        with pytest.raises(LoginFailed):
            await ops.login(name, pw, "192.0.2.1")


@pytest_twisted.ensureDeferred
async def test_failures_lock_the_operator_until_the_period_ends(world):
    clock, _store, ops = world
    for _ in range(3):
        with pytest.raises(LoginFailed):
            await ops.login("rita", "guess", "192.0.2.9")
    with pytest.raises(LoginLimited):  # the right password too
        await ops.login("rita", PASSWORD, "198.51.100.7")
    # Another operator from the guesser's address still gets in (client allowance 4x).
    assert (await ops.login("alice", PASSWORD, "192.0.2.9"))[1].operator == "alice"
    clock.advance(601)
    assert (await ops.login("rita", PASSWORD, "198.51.100.7"))[1].role == READONLY


@pytest_twisted.ensureDeferred
async def test_one_address_trying_many_names_is_limited(world):
    _clock, store, ops = world
    for i in range(12):  # 3 attempts x 4 for an address
        with pytest.raises(LoginFailed):
            await ops.login(f"user{i}", "guess", "203.0.113.5")
    with pytest.raises(LoginLimited):
        await ops.login("alice", PASSWORD, "203.0.113.5")
    assert (await ops.login("alice", PASSWORD, "203.0.113.6"))[1].operator == "alice"


@pytest_twisted.ensureDeferred
async def test_idle_sessions_end_and_use_keeps_them_alive(world):
    clock, _store, ops = world
    sid, _s = await ops.login("alice", PASSWORD, "192.0.2.1")
    clock.advance(899)
    assert await ops.session(sid) is not None  # used: the idle time starts again
    clock.advance(899)
    assert await ops.session(sid) is not None
    clock.advance(900)
    assert await ops.session(sid) is None


@pytest_twisted.ensureDeferred
async def test_a_login_prunes_sessions_and_counts_that_are_over(world):
    clock, store, ops = world
    old_id, _s = await ops.login("rita", PASSWORD, "192.0.2.1")
    with pytest.raises(LoginFailed):
        await ops.login("alice", "guess", "192.0.2.2")
    clock.advance(901)
    await ops.login("alice", PASSWORD, "192.0.2.3")
    assert session_hash(old_id) not in store.sessions and len(store.sessions) == 1
    assert store.failures == {}


@pytest_twisted.ensureDeferred
async def test_a_disabled_operator_loses_the_open_session(world):
    _clock, store, ops = world
    sid, _s = await ops.login("alice", PASSWORD, "192.0.2.1")
    store.operators["alice"]["disabled"] = True
    assert await ops.session(sid) is None


@pytest_twisted.ensureDeferred
async def test_logout_ends_the_session(world):
    _clock, _store, ops = world
    sid, session = await ops.login("rita", PASSWORD, "192.0.2.1")
    await ops.logout(session)
    assert await ops.session(sid) is None


@pytest.mark.parametrize("cookie", [None, "", "x" * 129])
@pytest_twisted.ensureDeferred
async def test_missing_or_oversized_cookies_are_no_session(world, cookie):
    assert await world[2].session(cookie) is None


def test_csrf_token_is_the_sessions_own():
    s = Session("h", "alice", ADMIN, "token-of-this-session")
    assert s.csrf_ok("token-of-this-session")
    for bad in (None, "", "token-of-another-session", "token-of-this-session ", "tökén"):
        assert not s.csrf_ok(bad)


def test_roles():
    assert Session("h", "a", ADMIN, "t").can_change
    assert not Session("h", "r", READONLY, "t").can_change


def test_the_cli_takes_no_password_on_the_command_line():
    parser = build_parser()
    args = parser.parse_args(["operator", "add", "bob", "--role", "readonly", "--dsn", "x"])
    assert args.role == "readonly" and not args.password_stdin
    with pytest.raises(SystemExit):
        parser.parse_args(["operator", "add", "bob", "--role", "admin", "--password", "p",
                           "--dsn", "x"])
    with pytest.raises(SystemExit):
        parser.parse_args(["operator", "add", "bob", "--role", "root", "--dsn", "x"])


@pytest_twisted.ensureDeferred
async def test_scrypt_runs_off_the_reactor_thread(world):
    _clock, store, _ops = world
    ran = []

    def in_thread(fn, *args):
        ran.append(fn.__name__)
        return defer.succeed(fn(*args))

    ops = Operators(store, in_thread=in_thread)
    await ops.login("alice", PASSWORD, "192.0.2.1")
    with pytest.raises(LoginFailed):
        await ops.login("nobody", PASSWORD, "192.0.2.1")
    assert ran == ["verify_password", "dummy_operator_hash", "verify_password"]
