"""A whole cbserver in the test process: real PostgreSQL, SIP over UDP, RTP, xDR writer.

``World`` provisions the operator manual's example through the catalog service layer, starts
``CallbackServer`` (the same service tree ``twistd cbserver`` runs) against a ``sipp``
carrier, and offers helpers to wait for a callback to end and to read its xDRs.
"""

from __future__ import annotations

import datetime as dt
import secrets
import socket
from decimal import Decimal
from pathlib import Path

import psycopg2
from twisted.internet import defer, reactor, task

from cbserver.config import parse_config
from cbserver.db.stores import PostgresCatalogStore
from cbserver.devtools.democarrier import TRUNK_PASSWORD, TRUNK_USER
from cbserver.tap import CallbackServer
from tests.support.carrier import Carrier

DEMO_PASSWORD = "demo-pass-1"
# Longest a World waits for its server to be ready (database, shared secrets) before failing.
START_TIMEOUT = 60.0
INTERNAL_PASSWORD = "Int3rnal-Str0ng-Passw0rd!"


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_tcp_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rtp_range_start() -> int:
    """A random 100-port RTP range in 30000-32699: below Linux's ephemeral ports
    (32768-60999), so sockets the OS hands out never sit in it, and above the demo's
    default range (20000-29999), so tests and a running demo do not collide."""
    return 30000 + secrets.randbelow(27) * 100


def config_text(dsn: str, state: Path, sip_port: int, carrier_port: int, web_port: int,
                rtp_base: int, extra_app: str = "", trunk_password: str = TRUNK_PASSWORD,
                trunk_user: str = TRUNK_USER) -> str:
    """A configuration for one instance pointing at the carrier."""
    return f"""
[server]
node = "node1"
state_dir = "{state}"
shutdown_grace = 10.0
[database]
dsn = "{dsn}"
[sip]
listen = "127.0.0.1:{sip_port}"
public_address = "127.0.0.1"
no_answer_timeout = 3.0
[sip.trunk]
address = "127.0.0.1:{carrier_port}"
from_domain = "trunk.test"
username = "{trunk_user}"
password = "{trunk_password}"
[rtp]
address = "127.0.0.1"
ports = "{rtp_base}-{rtp_base + 99}"
inactivity_timeout = 20.0
[web]
endpoint = "tcp:{web_port}:interface=127.0.0.1"
admin_endpoint = "tcp:{free_tcp_port()}:interface=127.0.0.1"
admin_token = "test-admin-token-0123456789"
[limits]
per_client = 1000
per_phone = 1000
per_account = 1000
concurrent_per_account = 5
[[application]]
name = "Web callback"
callback_page_address = "http://127.0.0.1:{web_port}/web-callback"
second_number = "18005550100"
internal_account = "cb-internal"
special_charge_if_legb_fails = true
account_id_translation_rule = "s/^/cb/"
hosted_allowed_clients = ["127.0.0.0/8"]
{extra_app}
"""


async def provision_manual_example(db, clock) -> None:
    """The manual's example through the service layer: tariffs, product, customer, accounts."""
    from cbserver.billing.accounts import Accounts
    from cbserver.billing.catalog import Catalog

    catalog, accounts = Catalog(PostgresCatalogStore(db), clock), Accounts(PostgresCatalogStore(db), clock)
    since = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    for prefix, country in (("1", "USA/Canada"), ("1818", "USA"), ("55", "Brazil"),
                            ("486", "Test busy"), ("603", "Test decline"),
                            ("480", "Test no answer"), ("407", "Test proxy challenge"),
                            ("401", "Test challenge"), ("|", "Any")):
        await catalog.create_destination({"prefix": prefix, "country": country})
    await catalog.create_tariff({"name": "Callback", "currency": "USD"})
    for prefix, first, nxt, price in (("1", 60, 6, "0.60"), ("1818", 30, 6, "0.30"),
                                      ("55", 30, 6, "0.12"), ("486", 60, 60, "1.00"),
                                      ("603", 60, 60, "1.00"), ("480", 60, 60, "1.00"),
                                      ("407", 6, 6, "0.60"), ("401", 6, 6, "0.60")):
        await catalog.create_rate("Callback", {
            "prefix": prefix, "first_interval": first, "next_interval": nxt,
            "first_price": price, "next_price": price, "effective_from": since})
    await catalog.create_tariff({"name": "Callback fail", "currency": "USD"})
    await catalog.create_rate("Callback fail", {
        "prefix": "|", "first_interval": 1, "next_interval": 1, "first_price": "0.06",
        "next_price": "0.06", "effective_from": since})
    await catalog.create_product({
        "name": "Callback Services", "end_user_name": "Callback", "currency": "USD",
        "rating_list": [
            {"node": "node1", "access_code": "WEBCALLBACK", "tariff": "Callback"},
            {"node": "node1", "access_code": "CALLBACK_FAIL", "tariff": "Callback fail"}]})
    # As the manual says: a postpaid customer with a credit limit owns the accounts; the
    # internal account (credit, subordinate) spends from that limit.
    await accounts.create_customer({"name": "Callback retail", "currency": "USD",
                                    "balance_control": "postpaid", "credit_limit": "1000"})
    await accounts.create_account({"id": "cb1818000001", "customer": "Callback retail",
                                   "product": "Callback Services", "opening_balance": "20",
                                   "password": DEMO_PASSWORD})
    await accounts.create_account({"id": "cb5511987654321", "customer": "Callback retail",
                                   "product": "Callback Services", "opening_balance": "5"})
    await accounts.create_account({"id": "cb559912345678", "customer": "Callback retail",
                                   "product": "Callback Services", "opening_balance": "10"})
    # The keypad phone behind a trunk that challenges (407...), identified by ANI the same way.
    await accounts.create_account({"id": "cb407559912345", "customer": "Callback retail",
                                   "product": "Callback Services", "opening_balance": "10"})
    await accounts.create_account({"id": "cb1818000002", "customer": "Callback retail",
                                   "product": "Callback Services", "opening_balance": "10",
                                   "password": "48151623"})
    await accounts.create_account({"id": "cb-internal", "customer": "Callback retail",
                                   "product": "Callback Services", "account_type": "credit",
                                   "balance_control": "subordinate", "internal": True,
                                   "password": INTERNAL_PASSWORD})


class World:
    """One in-process cbserver against a sipp carrier; see the module docstring."""

    def __init__(self, tmp_path: Path, dsn: str, hold_ms: int = 4000, digits: str = "18005550100",
                 trunk_password: str = TRUNK_PASSWORD, trunk_user: str = TRUNK_USER):
        self.tmp = tmp_path
        self.dsn = dsn
        self.carrier = Carrier(tmp_path, free_udp_port(), hold_ms, digits,
                               media_port=free_udp_port())
        self.web_port = free_tcp_port()
        cfg_text = config_text(dsn, tmp_path / "state", free_udp_port(), self.carrier.port,
                               self.web_port, rtp_range_start(),
                               trunk_password=trunk_password, trunk_user=trunk_user)
        self.cfg = parse_config(cfg_text)
        self.server = CallbackServer(self.cfg, reactor)

    async def start(self) -> World:
        """Start the carrier and the server; provision the data; wait for readiness."""
        self.carrier.start()
        try:
            self.server.startService()
            # Bounded: a database that never becomes ready (unreachable, or a schema older
            # than the code) fails the test with the pool's reason instead of hanging it.
            try:
                await self.server.db.when_ready().addTimeout(START_TIMEOUT, reactor)
            except defer.TimeoutError:
                raise AssertionError(f"the database was not ready within {START_TIMEOUT} s: "
                                     f"{self.server.db.health()}") from None
            await provision_manual_example(self.server.db, reactor)
            for _ in range(100):
                if self.server.callbacks.running and self.server.sip.ua is not None:
                    break
                await task.deferLater(reactor, 0.05, lambda: None)
            secrets_loading = self.server.callback_web.secret_service.loading
            if secrets_loading is not None:
                await secrets_loading.addTimeout(START_TIMEOUT, reactor)
        except BaseException:
            await self.stop()
            raise
        return self

    @property
    def base_url(self) -> str:
        """The server's own web endpoint (pages, JSON API, /healthz), as tap.py wires it."""
        return f"http://127.0.0.1:{self.web_port}"

    async def stop(self) -> None:
        """Stop the server (ends calls, flushes xDRs) and the carrier."""
        try:
            await self.server.stopService()
        finally:
            self.carrier.stop()

    async def wait_end(self, callback_id: str, timeout: float = 30.0) -> dict:
        """Poll the service until the callback's status is ended."""
        deadline = reactor.seconds() + timeout
        while reactor.seconds() < deadline:
            status = await self.server.callbacks.get_status(callback_id)
            if status is not None and status["status"] == "ended":
                return status
            await task.deferLater(reactor, 0.1, lambda: None)
        raise AssertionError(f"callback {callback_id} did not end: {status}")

    async def wait_status(self, callback_id: str, wanted: str, timeout: float = 20.0) -> dict:
        """Poll until the callback reaches status ``wanted``."""
        deadline = reactor.seconds() + timeout
        status = None
        while reactor.seconds() < deadline:
            status = await self.server.callbacks.get_status(callback_id)
            if status is not None and status["status"] == wanted:
                return status
            await task.deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"callback {callback_id} never reached {wanted}: {status}")

    def xdrs(self, session_id: str) -> dict:
        """The session's xDR rows by leg (read with a plain psycopg2 connection)."""
        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM xdrs WHERE session_id = %s", (session_id,))
            names = [d.name for d in cur.description]
            return {row[names.index("leg")]: dict(zip(names, row, strict=True))
                    for row in cur.fetchall()}

    def balance(self, account_id: str) -> Decimal:
        """An account's balance now."""
        with psycopg2.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT balance FROM accounts WHERE id = %s", (account_id,))
            return cur.fetchone()[0]


def ensure(d):
    """A Deferred from a coroutine, for pytest-twisted tests."""
    return defer.ensureDeferred(d)
