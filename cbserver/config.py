"""The cbserver configuration: one TOML file read into frozen dataclasses.

Every key is documented in ``cbserver/data/cbserver.example.toml`` (``cbserver config
example`` prints it). ``load_config`` raises ``ConfigError`` naming the key path and what was
expected; unknown keys are refused with the nearest valid key suggested.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from cbserver.configschema import ConfigError, build, setting
from cbserver.configvalues import (  # noqa: F401 - re-exported
    EMAIL_PATTERN,
    LOG_LEVELS,
    _access_code,
    _client,
    _endpoint,
    _host_names,
    _host_port,
    _ip_address,
    _latch_mode,
    _log_level,
    _network,
    _page_address,
    _phone,
    _port_range,
    _positive,
    _prefixes,
    _read_secret,
    _smtp_address,
    _translation_rule,
    _trunk_address,
    _url_path,
    check_node_name,
    email_address,
    parse_host_port,
)


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """Process-wide settings."""

    node: str = setting("node1", check=check_node_name, doc="this node's name (rating list node, xDRs)")
    state_dir: str = setting("var", doc="folder for the TLS certificate, the xDR spool, CSVs")
    cards_dir: str = setting("", doc="folder for generated accounts' CSV files "
                                     "(default: <state_dir>/cards), owner-only")
    shutdown_grace: float = setting(10.0, check=_positive,
                                    doc="seconds to end calls and flush writes on SIGTERM")
    log_level: str = setting("info", check=_log_level,
                             doc="least severe events logged: debug, info, warn, error or critical")


def cards_dir(cfg: Config) -> Path:
    """Where the account generator writes its CSV files."""
    return Path(cfg.server.cards_dir) if cfg.server.cards_dir else Path(cfg.server.state_dir) / "cards"


@dataclass(frozen=True, kw_only=True)
class DatabaseConfig:
    """The PostgreSQL connection."""

    dsn: str = setting(doc="libpq connection string, e.g. 'host=/run/postgresql dbname=cbserver'")
    pool_size: int = setting(4, doc="connections kept open")
    retry_max: float = setting(30.0, check=_positive,
                               doc="longest wait between reconnection attempts, seconds")

    def validate(self) -> None:
        """Check cross-field rules."""
        if not self.dsn.strip():
            raise ConfigError("dsn", "must not be empty")
        if not 1 <= self.pool_size <= 100:
            raise ConfigError("pool_size", f"expected 1-100, got {self.pool_size}")


@dataclass(frozen=True, kw_only=True)
class TrunkConfig:
    """The operator's SIP trunk that legA and legB are placed through."""

    address: str = setting(check=_trunk_address, doc="host[:port] of the trunk (RFC 3263 lookup)")
    from_domain: str = setting(doc="domain used in From and request URIs")
    username: str = setting("", doc="digest username (empty: no authentication)")
    password: str = setting("", doc="digest password")
    password_file: str = setting("", doc="file holding the digest password instead")
    transport: str = setting("udp", doc="'udp' or 'tcp'")

    def validate(self) -> None:
        """Check cross-field rules."""
        if self.password and self.password_file:
            raise ConfigError("password_file", "give either password or password_file, not both")
        if self.transport not in ("udp", "tcp"):
            raise ConfigError("transport", f"expected 'udp' or 'tcp', got {self.transport!r}")


@dataclass(frozen=True, kw_only=True)
class SipConfig:
    """The SIP user agent."""

    listen: str = setting("0.0.0.0:5060", check=_host_port, doc="UDP address:port to bind")
    public_address: str = setting(check=_ip_address, doc="address put in Via, Contact and SDP")
    trunk: TrunkConfig = setting(doc="the [sip.trunk] table")
    t1: float = setting(0.5, check=_positive, doc="RFC 3261 T1 (RTT estimate), seconds")
    t2: float = setting(4.0, check=_positive, doc="RFC 3261 T2 (max non-INVITE retransmit)")
    t4: float = setting(5.0, check=_positive, doc="RFC 3261 T4 (max message lifetime)")
    no_answer_timeout: float = setting(30.0, check=_positive, doc="ring time before CANCEL")
    tcp_max_connections: int = setting(1000, check=_positive,
                                       doc="SIP TCP connections accepted at once (trunk.transport tcp)")
    tcp_max_connections_per_client: int = setting(50, check=_positive,
                                                  doc="SIP TCP connections one address may hold")
    tcp_idle_timeout: float = setting(180.0, check=_positive,
                                      doc="close a SIP TCP connection silent this long, seconds")


@dataclass(frozen=True, kw_only=True)
class RtpConfig:
    """RTP media anchored at the server."""

    address: str = setting(check=_ip_address, doc="address to bind RTP sockets to")
    ports: str = setting("20000-29999", check=_port_range, doc="even/odd port range LOW-HIGH")
    inactivity_timeout: float = setting(30.0, check=_positive,
                                        doc="end a call after this long without media")
    rtcp_bye_grace: float = setting(5.0, check=_positive,
                                    doc="after a phone's RTCP BYE, wait this long for its SIP BYE "
                                        "(or RTP) before ending the call as media lost")
    latch: str = setting("strict", check=_latch_mode,
                         doc="'strict': RTP latches only to the answered SDP address; 'nat': to "
                             "the first source after the SDP answer, then only that source")


@dataclass(frozen=True, kw_only=True)
class WebConfig:
    """The callback page, the JSON API, health and metrics; and the admin API."""

    endpoint: str = setting("ssl:8901", check=_endpoint,
                            doc="Twisted endpoint; 'ssl:PORT' without keys uses a self-signed "
                                "certificate generated on first run")
    admin_endpoint: str = setting("ssl:8902:interface=127.0.0.1", check=_endpoint,
                                  doc="endpoint of the admin JSON API")
    admin_token: str = setting("", doc="bearer token for the admin API")
    admin_token_file: str = setting("", doc="file holding the admin token instead")
    console_idle_timeout: float = setting(900.0, check=_positive,
                                          doc="seconds an operator's console session may stay "
                                              "unused before it ends (log in again)")
    console_login_attempts: int = setting(5, check=_positive,
                                          doc="failed console logins per operator (a client "
                                              "address: 4 times as many) before logins are "
                                              "refused for console_lockout seconds")
    console_lockout: float = setting(900.0, check=_positive,
                                     doc="seconds over which failed console logins are counted")
    trusted_proxies: tuple[str, ...] = setting(
        (), check=lambda v: tuple(_network(x) for x in v),
        doc="load balancers whose X-Forwarded-For names the client and X-Forwarded-Host "
            "the host name (IP networks)")
    metrics_allowed_clients: tuple[str, ...] = setting(
        ("127.0.0.0/8", "::1/128"), check=lambda v: tuple(_network(x) for x in v),
        doc="client networks allowed to fetch /metrics (default loopback; empty = nobody)")
    max_connections: int = setting(1000, check=_positive,
                                   doc="connections each web endpoint accepts at once")
    max_connections_per_client: int = setting(50, check=_positive,
                                              doc="connections one client address may hold on each "
                                                  "web endpoint")
    request_timeout: float = setting(15.0, check=_positive,
                                     doc="seconds a connection has to send a whole request "
                                         "(headers and body) from its opening or its last answer; "
                                         "an idle keep-alive connection is closed then")

    def validate(self) -> None:
        """Check cross-field rules."""
        if self.admin_token and self.admin_token_file:
            raise ConfigError("admin_token_file", "give admin_token or admin_token_file, not both")
        if self.admin_token and len(self.admin_token) < 16:
            raise ConfigError("admin_token", "must be at least 16 characters")


@dataclass(frozen=True, kw_only=True)
class NotificationsConfig:
    """E-mail notifications: the account generator mails its CSV to whoever asked for the batch
    (the manual: "Notification about the cards generated will be sent by email ...")."""

    smtp: str = setting("", check=_smtp_address,
                        doc="host[:port] of the mail relay (port 25 by default); empty: no e-mail")
    sender: str = setting("cbserver@localhost", check=email_address,
                          doc="From address of the notifications")
    smtp_username: str = setting("", doc="SMTP AUTH user (empty: no authentication)")
    smtp_password: str = setting("", doc="SMTP AUTH password")
    smtp_password_file: str = setting("", doc="file holding the SMTP password instead")
    starttls: bool = setting(False, doc="require STARTTLS before sending (needed with a password)")
    generator_recipients: tuple[str, ...] = setting(
        (), check=lambda v: tuple(email_address(x) for x in v),
        doc="who gets every generated batch's CSV, besides the address a request names")

    def validate(self) -> None:
        """Check cross-field rules."""
        if self.smtp_password and self.smtp_password_file:
            raise ConfigError("smtp_password_file", "give smtp_password or smtp_password_file, "
                                                    "not both")
        if (self.smtp_password or self.smtp_password_file) and not self.starttls:
            raise ConfigError("starttls", "a password is only sent over TLS: set starttls = true")
        if self.generator_recipients and not self.smtp:
            raise ConfigError("generator_recipients", "set smtp (the mail relay) to send them mail")


@dataclass(frozen=True, kw_only=True)
class LimitsConfig:
    """Abuse protection: rate limits and concurrency caps, shared by every node."""

    window: float = setting(3600.0, check=_positive, doc="length of the rate-limit window, seconds")
    per_client: int = setting(20, doc="callbacks one client address may request per window")
    per_phone: int = setting(5, doc="callbacks to one called-back number per window")
    per_account: int = setting(30, doc="callbacks one account may request per window")
    concurrent_per_account: int = setting(2, doc="callbacks in progress per account at once")
    failures_per_client: int = setting(
        10, doc="failed authentications (unknown account, wrong password) one client address may "
                "make per window; more are refused 429 before any password is checked")
    failures_per_account: int = setting(
        5, doc="failed authentications against one account from one client address per window "
               "(the owner elsewhere is not blocked)")
    ivr_attempts: int = setting(3, doc="hosted IVR identification attempts before hanging up")
    lockout: float = setting(900.0, check=_positive,
                             doc="seconds a number/account is locked out after failed IVR attempts")
    node_max_active: int = setting(1000, doc="callbacks this node runs at once; more are "
                                             "refused 503 busy")
    node_max_starting: int = setting(100, doc="callback requests this node checks at once "
                                              "(limits, authorization); more are refused 503 "
                                              "busy before any database work")
    start_delay_target: float = setting(
        0.4, check=lambda v: v if v >= 0 else _positive(v),
        doc="seconds a callback request may take to start (limits, authorization) before this "
            "node counts itself past its capacity: when even the fastest start of a "
            "start_delay_interval took longer, fewer requests may start at once (the rest are "
            "refused 503 busy), more again once starts are in time, up to node_max_starting; "
            "also refused at once while a new start is predicted to queue for database "
            "connections longer than this (0: off)")
    start_delay_interval: float = setting(1.0, check=_positive,
                                          doc="seconds over which the fastest start is measured; "
                                              "the limit on requests starting at once moves "
                                              "once per interval")

    def validate(self) -> None:
        """Every cap must allow at least one call."""
        for name in ("per_client", "per_phone", "per_account", "concurrent_per_account",
                     "failures_per_client", "failures_per_account", "ivr_attempts",
                     "node_max_active", "node_max_starting"):
            if getattr(self, name) < 1:
                raise ConfigError(name, f"expected at least 1, got {getattr(self, name)}")


# The pool writes each process's heartbeat every 5 s (cbserver.db.pool.Database.ping_interval).
HEARTBEAT = 5.0
# Seconds without a heartbeat after which a process counts as dead: the default of
# [recovery] stale_after, the cluster's rule of whether a node runs (crash recovery, the node
# lists of the admin API, the CLI and the console; docs/deploy.md "Which processes are alive").
NODE_STALE_AFTER = 15


@dataclass(frozen=True, kw_only=True)
class RecoveryConfig:
    """Crash recovery: when a node counts as dead and how often its calls are looked for
    (``cbserver.callback.recovery``)."""

    stale_after: int = setting(NODE_STALE_AFTER,
                               doc="seconds without a heartbeat after which a node is dead "
                                   "and its calls are ended and billed by a live node")
    interval: float = setting(5.0, check=_positive,
                              doc="seconds between two looks for dead nodes' calls")

    def validate(self) -> None:
        """A live node must never be taken for dead: two heartbeats at least."""
        if self.stale_after < 2 * HEARTBEAT:
            raise ConfigError("stale_after", f"expected at least {2 * HEARTBEAT:g} seconds (two "
                                             f"{HEARTBEAT:g} s heartbeats: one late heartbeat must "
                                             f"not end a live node's calls), got {self.stale_after}")
        if self.interval > self.stale_after:
            raise ConfigError("interval", f"expected at most stale_after ({self.stale_after}), "
                                          f"got {self.interval}")


@dataclass(frozen=True, kw_only=True)
class BillingConfig:
    """How calls are cut when their money runs out (docs/billing.md)."""

    cut_margin: float = setting(2.0, doc="seconds before the end of the last paid second that a "
                                         "prepaid call is cut (timer lateness, time to end a leg)")

    def validate(self) -> None:
        """Between 0.5 s (a timer's lateness) and 30 s."""
        if not 0.5 <= self.cut_margin <= 30:
            raise ConfigError("cut_margin", f"expected 0.5-30 seconds, got {self.cut_margin}")


@dataclass(frozen=True, kw_only=True)
class ApplicationConfig:
    """One WEB callback trigger instance, as the operator's manual defines it."""

    name: str = setting(doc="instance name shown on its page")
    callback_page_address: str = setting(check=_page_address,
                                         doc="URL given to users, e.g. https://cb.example.net:8901/")
    path: str = setting("", check=_url_path,
                        doc="URL path of this instance's page (default: /<name slug>)")
    hosts: tuple[str, ...] = setting((), check=_host_names,
                                     doc="host names whose requests this instance serves at /")
    second_number: str = setting("", check=_phone,
                                 doc="Simple mode target (e.g. the helpdesk), as the page takes "
                                     "numbers: '+1 800 555-0100' is stored as 18005550100")
    access_code: str = setting("WEBCALLBACK", check=_access_code,
                               doc="rating-list access code for callback charging")
    internal_account: str = setting("", doc="account charged for partial hosted calls")
    special_charge_if_legb_fails: bool = setting(
        False, doc="charge legA by the CALLBACK_FAIL entry when legB cannot be established")
    account_id_translation_rule: str = setting("", check=_translation_rule,
                                               doc="Perl s/// rule applied to the ANI")
    prompts: str = setting("", doc="folder of custom prompts overriding the defaults by name")
    language: str = setting("en", doc="prompt language folder")
    use_account_id_as_ani: bool = setting(False, doc="show the account ID as the calling number")
    hosted_allowed_clients: tuple[str, ...] = setting(
        (), check=lambda v: tuple(_client(x) for x in v),
        doc="networks or token:<secret> allowed to trigger Hosted mode; empty = Hosted off")
    allowed_destinations: tuple[str, ...] = setting(
        (), check=_prefixes,
        doc="number prefixes this instance may dial (legA, legB, IVR); empty = any")
    denied_destinations: tuple[str, ...] = setting(
        (), check=_prefixes,
        doc="number prefixes this instance never dials (premium rate, satellite...); wins over allowed")

    def validate(self) -> None:
        """Check cross-field rules."""
        if not self.name.strip():
            raise ConfigError("name", "must not be empty")
        if self.hosted_allowed_clients and not self.internal_account:
            raise ConfigError("internal_account",
                              "Hosted mode is enabled (hosted_allowed_clients) so an internal "
                              "account is required to charge partial hosted calls")

    @property
    def url_path(self) -> str:
        """The path this instance's page is served at."""
        if self.path:
            return "/" + self.path.strip("/")
        return "/" + (re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "callback")


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole configuration file."""

    database: DatabaseConfig = setting(doc="[database]")
    sip: SipConfig = setting(doc="[sip]")
    rtp: RtpConfig = setting(doc="[rtp]")
    application: tuple[ApplicationConfig, ...] = setting(
        (), doc="[[application]] instances, added to the catalog at start-up if it never had them")
    server: ServerConfig = setting(ServerConfig(), doc="[server]")
    web: WebConfig = setting(WebConfig(), doc="[web]")
    limits: LimitsConfig = setting(LimitsConfig(), doc="[limits]")
    notifications: NotificationsConfig = setting(NotificationsConfig(), doc="[notifications]")
    recovery: RecoveryConfig = setting(RecoveryConfig(), doc="[recovery]")
    billing: BillingConfig = setting(BillingConfig(), doc="[billing]")

    def validate(self) -> None:
        """Check cross-table rules."""
        # No [[application]] table is fine: the voice applications may all be in the catalog
        # (docs/catalog.md, "Voice applications").
        seen: dict[str, int] = {}
        for i, app in enumerate(self.application):
            if app.url_path in seen:
                raise ConfigError(f"application[{i}].path",
                                  f"{app.url_path!r} is already used by application"
                                  f"[{seen[app.url_path]}]")
            seen[app.url_path] = i
        # A host name must pick one instance: two claiming it would make the page depend on
        # the order of the tables.
        owners: dict[str, int] = {}
        for i, app in enumerate(self.application):
            for host in app.hosts:
                if host in owners:
                    raise ConfigError(f"application[{i}].hosts",
                                      f"{host!r} is already used by application[{owners[host]}]")
                owners[host] = i


def parse_config(text: str, source: str = "<config>", base: Path | None = None) -> Config:
    """Parse TOML ``text`` into a ``Config``; secret files are resolved relative to ``base``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"invalid TOML: {e}", source) from None
    return config_from_data(data, source, base)


def config_from_data(data: dict, source: str = "<config>", base: Path | None = None) -> Config:
    """Build a ``Config`` from parsed TOML ``data`` (see ``parse_config``)."""
    try:
        cfg = build(Config, data)
    except ConfigError as e:
        raise ConfigError(e.path, e.problem, source) from None
    return _resolve_secrets(cfg, base or Path.cwd(), source)


def _resolve_secrets(cfg: Config, base: Path, source: str) -> Config:
    """Replace ``*_file`` settings by the secrets they point to."""
    trunk, web = cfg.sip.trunk, cfg.web
    try:
        if trunk.password_file:
            pw = _read_secret(str(base / trunk.password_file), "sip.trunk.password_file")
            trunk = replace(trunk, password=pw)
        if web.admin_token_file:
            tok = _read_secret(str(base / web.admin_token_file), "web.admin_token_file")
            if len(tok) < 16:
                raise ConfigError("web.admin_token_file", "the token must be at least 16 characters")
            web = replace(web, admin_token=tok)
        mail = cfg.notifications
        if mail.smtp_password_file:
            mail = replace(mail, smtp_password=_read_secret(
                str(base / mail.smtp_password_file), "notifications.smtp_password_file"))
    except ConfigError as e:
        raise ConfigError(e.path, e.problem, source) from None
    return replace(cfg, sip=replace(cfg.sip, trunk=trunk), web=web, notifications=mail)


def load_config(path: str | Path) -> Config:
    """Read and validate the config file at ``path`` and the files it includes
    (``include``, see cbserver.configfiles: a shared file plus one file per node)."""
    from cbserver.configfiles import read_config_data

    p = Path(path)
    return config_from_data(read_config_data(p), str(p), p.parent)


def example_path() -> Path:
    """The commented example configuration shipped with the package."""
    return Path(__file__).resolve().parent / "data" / "cbserver.example.toml"
