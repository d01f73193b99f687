"""``twistd cbserver``: command-line options and the service tree (the one wiring place).

The tree starts the database pool first. The web endpoint opens at once so that ``/healthz``
can say why the server is not ready; everything that takes calls (the SIP side, the callback
service, the admin endpoint, the shared CSRF secret) is a child of ``DatabaseGated``, which
starts them only once the database is ready with a current schema. Building the tree does no
I/O (certificates, prompts, ports, connections all wait for ``startService``); ``makeService``
only runs the start-up schema check (``preflight``), so that twistd can exit with one clear line.
This is the only module that imports the global reactor.
"""

from __future__ import annotations

import gc
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.python import usage
from twisted.web.server import Site

from cbserver import __version__, logs
from cbserver.billing.applications import Applications
from cbserver.billing.audit import provision_actor
from cbserver.billing.authorize import Authorizer
from cbserver.billing.destinations import DestinationPolicy
from cbserver.billing.spool import Spool
from cbserver.billing.xdr import XdrWriter
from cbserver.callback.app_directory import ApplicationDirectory
from cbserver.callback.hangups import HangupWatcher
from cbserver.callback.legmedia import MediaEnvironment
from cbserver.callback.nodestate import NodeMonitor
from cbserver.callback.recovery import RecoveryService
from cbserver.callback.service import CallbackService, MediaFactory
from cbserver.config import Config, ConfigError, cards_dir, load_config, parse_host_port
from cbserver.connlimit import (
    ConnectionLimiter,
    DescriptorBudget,
    LimitedFactory,
    raise_descriptor_limit,
)
from cbserver.db.applications_store import PostgresApplicationSource
from cbserver.db.calls_store import PostgresCallsStore
from cbserver.db.migrations import MigrationError, check_schema
from cbserver.db.pool import Database
from cbserver.db.recovery_store import PostgresRecoveryStore
from cbserver.db.stores import PostgresAuthorizationStore, PostgresCatalogStore, PostgresXdrStore
from cbserver.db.sync import connect_sync
from cbserver.db.tariff_loader import TariffCache
from cbserver.errors import DatabaseUnavailable
from cbserver.gcpacer import CollectorPacer
from cbserver.logs import Logger
from cbserver.media.clock import MediaClock
from cbserver.media.ports import PortPool
from cbserver.sdnotify import NotifyService
from cbserver.sip.service import SipService
from cbserver.sip.ua import UAConfig
from cbserver.web.admin import AdminApp
from cbserver.web.app import WebApp
from cbserver.web.callback_pages import build_callback_web
from cbserver.web.contenttype import install_media_type_parse
from cbserver.web.flush import FlushingRequest, QuietSite
from cbserver.web.hosts import page_address_mismatch
from cbserver.web.metrics import GcPauseProbe, Metrics, StallProbe
from cbserver.web.tls import EndpointService

log = Logger()


class Options(usage.Options):
    """Options of ``twistd cbserver``."""

    optParameters = [
        ["config", "c", None, "path to the TOML configuration file (required)"],
    ]
    optFlags = [
        ["no-preflight", None, "skip the start-up database check (retry in the background)"],
    ]

    def postOptions(self) -> None:
        """Load and validate the configuration now, so errors end twistd with one line."""
        if not self["config"]:
            raise usage.UsageError("--config FILE is required "
                                   "(start from: cbserver config example > cbserver.toml)")
        try:
            self.config = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


def preflight(cfg: Config) -> None:
    """Refuse to start on a reachable database whose schema is too old or whose applied
    migrations changed since (one clear line, exit 1).

    An unreachable database is not an error here: the pool retries with back-off and
    ``/healthz`` reports it, so a server started before its database does not crash-loop.
    """
    try:
        conn = connect_sync(cfg.database.dsn, timeout=3)
    except DatabaseUnavailable as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "connection failed"
        log.warn("database not reachable at start-up ({why}); will keep retrying", why=first)
        return
    try:
        check_schema(conn)
    except MigrationError as e:  # too old, or an applied migration changed since
        sys.stderr.write(f"cbserver: {e}\n")
        raise SystemExit(1) from None
    finally:
        conn.close()


class TrunkLocator:
    """The RFC 3263 ``ServerLocator`` with its DNS resolver created on first use.

    Creating the resolver reads ``/etc/resolv.conf``; a trunk given as an IP address never
    needs it, so it is not created at start-up.
    """

    def __init__(self, transport: str):
        self.transport = transport.upper()
        self._locator = None

    def locate(self, where: str):
        """Deferred list of ``Target`` for the trunk, in failover order."""
        if self._locator is None:
            from twisted.names import client

            from cbserver.sip.locate import ServerLocator

            self._locator = ServerLocator(client.createResolver(), transports=(self.transport,))
        return self._locator.locate(where)


class MediaService(service.Service):
    """Loads each instance's prompt library at start (file I/O stays out of constructors)."""

    name = "media"

    def __init__(self, cfg: Config, env):
        self.cfg = cfg
        self.env = env

    def startService(self) -> None:
        """Read the prompts of every instance (its custom folder over the defaults)."""
        from cbserver.media.prompts import load_prompt_library

        super().startService()
        for app in self.cfg.application:
            self.env.libraries[app.name] = load_prompt_library(app.language, app.prompts or None)

    def stopService(self):
        """Stop the media clock."""
        super().stopService()
        self.env.media_clock.stop()


class DatabaseGated(service.MultiService):
    """Child services that need the database: started once it is ready, stopped first.

    The gate itself starts with its parent and waits for ``db.when_ready()``; only then does it
    start its children and call ``on_started``. Stopping it before that cancels the wait and
    leaves nothing running; stopping it after stops the children (reverse order) and returns
    their Deferred. A child added while it waits starts with the others.
    """

    log = Logger()

    def __init__(self, db, on_started: Callable[[], None] | None = None):
        super().__init__()
        self.db = db
        self.on_started = on_started
        self.children_started = False
        self._waiting: defer.Deferred | None = None

    def addService(self, child) -> None:
        """Add ``child``; it starts at once only if the gate has opened already."""
        if self.running and not self.children_started:
            # MultiService starts a child added to a running parent; while waiting, it must not.
            self.running = 0
            try:
                super().addService(child)
            finally:
                self.running = 1
        else:
            super().addService(child)

    def privilegedStartService(self) -> None:
        """Nothing of the children's: their ports open only once the database is ready."""
        service.Service.privilegedStartService(self)

    def startService(self) -> None:
        """Wait for the database; the children start when it is ready."""
        service.Service.startService(self)
        self._waiting = self.db.when_ready()
        self._waiting.addCallback(self._open)
        self._waiting.addErrback(self._not_opened)

    def _open(self, _db) -> None:
        """The database is ready: start the children (unless stopped meanwhile)."""
        self._waiting = None
        if not self.running or self.children_started:
            return
        self.children_started = True
        for child in self:
            child.startService()
        if self.on_started is not None:
            self.on_started()

    def _not_opened(self, failure) -> None:
        """A cancelled wait is a stop before readiness; anything else is logged."""
        if not failure.check(defer.CancelledError):
            self.log.failure("could not start call handling", failure=failure)

    def stopService(self):
        """Stop the children if they started (a Deferred), else only stop waiting."""
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()
        if not self.children_started:
            service.Service.stopService(self)
            return defer.succeed(None)
        self.children_started = False
        return super().stopService()


# gc.set_threshold for tools that tune the collector without the reactor's pacer
# (bench/bench_sip_calls.py, bench/bench_rate_deck.py). The server itself paces collections
# from the reactor (cbserver/gcpacer.py: why a threshold alone left young collections of
# 20-95 ms at a steady rate); figures in docs/bench-callbacks.md, "Steady state".
GC_THRESHOLDS = (10000, 10, 100)


class CallbackServer(service.MultiService):
    """The root service: database first, then what needs it once it is ready.

    Building it does no I/O: the web endpoints are ``EndpointService``s that write the
    self-signed certificate and listen when started, the prompts are read when ``media``
    starts, the pool connects when ``database`` starts.
    """

    log = Logger()

    def __init__(self, cfg: Config, reactor, config_path: str = ""):
        super().__init__()
        self.cfg = cfg
        self.config_path = config_path
        self.reactor = reactor
        state = Path(cfg.server.state_dir)
        self.db = Database(cfg.database.dsn, reactor, size=cfg.database.pool_size,
                           retry_max=cfg.database.retry_max, node=cfg.server.node)
        self.db.setServiceParent(self)
        # systemd Type=notify: READY=1 once calls are taken, STATUS=, WATCHDOG=1, STOPPING=1.
        self.notify = NotifyService(reactor, self._status_line)
        self.notify.setServiceParent(self)
        # Finished legs: group-committed to PostgreSQL, spooled to disk while it is away.
        self.xdr = XdrWriter(PostgresXdrStore(self.db), reactor, Spool(state / "spool" / "xdr.spool"))
        self.xdr.setServiceParent(self)
        self.tariffs = TariffCache(self.db, reactor, freeze=True)  # no cycles: see GC_THRESHOLDS
        self.authorizers = {app.name: self._authorizer(app) for app in cfg.application}
        low, high = (int(x) for x in cfg.rtp.ports.split("-"))
        # Issue 14 item 7: listeners share what the descriptor limit leaves once RTP (two
        # sockets a leg, two legs a callback, at most the range) and the pool are served.
        self.descriptors = DescriptorBudget(0, min(high - low + 1, 4 * cfg.limits.node_max_active)
                                            + cfg.database.pool_size)
        sip_limiter = ConnectionLimiter("SIP TCP", cfg.sip.tcp_max_connections,
                                        cfg.sip.tcp_max_connections_per_client, self.descriptors)
        self.sip = SipService(self._ua_config(), reactor, listen_address=self._listen()[0],
                              listen_port=self._listen()[1],
                              locator=TrunkLocator(cfg.sip.trunk.transport),
                              transport=cfg.sip.trunk.transport,
                              wrap_tcp_factory=lambda f: LimitedFactory(
                                  f, sip_limiter, reactor, idle_timeout=cfg.sip.tcp_idle_timeout))
        self.media_env = MediaEnvironment(
            clock=reactor, reactor=reactor, pool=PortPool(low, high),
            media_clock=MediaClock(reactor), bind_address=cfg.rtp.address,
            public_address=cfg.sip.public_address, inactivity_timeout=cfg.rtp.inactivity_timeout,
            rtcp_bye_grace=cfg.rtp.rtcp_bye_grace, rtp_latch=cfg.rtp.latch)
        self.media = MediaService(cfg, self.media_env)
        self.media.setServiceParent(self)
        self.metrics = Metrics(spool_depth=lambda: float(self.xdr.spool.depth))
        recovery_store = PostgresRecoveryStore(self.db)
        self.gc_probe = GcPauseProbe(self.metrics)
        self.gc_pacer = CollectorPacer(reactor)
        self.stall_probe = StallProbe(self.metrics, reactor)
        self.callbacks = CallbackService(cfg, self.db, self.authorizers, self.xdr, self.sip,
                                         MediaFactory(self.media_env), reactor, self.metrics,
                                         recovery_store=recovery_store)
        # Crash recovery: ends and bills the calls of dead nodes (this node's own included,
        # from before a restart); see cbserver.callback.recovery.
        self.recovery = RecoveryService(recovery_store, self.sip, reactor, cfg.server.node,
                                        self.db.instance_id, ready=lambda: self.db.ready,
                                        interval=cfg.recovery.interval,
                                        stale_after=cfg.recovery.stale_after)
        self.web = WebApp(self.db, reactor, health_sources={
            "xdr_spool": self.xdr.health,
            "calls": lambda: {"active": self.callbacks.active},
        })
        # The pages and JSON API; anything else (/healthz) falls through to the health app.
        self.callback_web = build_callback_web(cfg, self.db, self.callbacks, reactor,
                                               self.metrics, fallback=self.web.resource(),
                                               accepting=lambda: self.callbacks.running,
                                               trusted_proxies=cfg.web.trusted_proxies)
        # No callback is accepted that the RTP range has no ports for (503 busy, not a failure).
        self.callback_web.gateway.admission.media = self.media_env.pool
        # /livez, /readyz and draining (issue 16): polls the database on its own schedule.
        self.node_monitor = NodeMonitor(cfg, self.db, self.callbacks, reactor, self.metrics,
                                        starting=lambda: self.callback_web.gateway.starting,
                                        tariffs=self.tariffs,
                                        load=lambda: self.callback_web.gateway.admission.load_state())
        self.node_monitor.setServiceParent(self)
        self.web.node_state = self.node_monitor
        # The public endpoint opens at once, so that /healthz can say why calls are not taken.
        self.web_service = EndpointService(cfg.web.endpoint, state, _limited_site(
            "web", self.callback_web.resource(), cfg.web, self.descriptors, reactor), reactor)
        self.web_service.setServiceParent(self)
        # Services that need the database: started only once it is ready, stopped first
        # (callbacks end their calls and write xDRs, then the SIP port closes).
        self.gated = DatabaseGated(self.db, on_started=self._call_handling_started)
        self.admin = AdminApp(self.db, reactor, cfg.web.admin_token, cards_dir(cfg), cfg)
        EndpointService(cfg.web.admin_endpoint, state, _limited_site(
            "admin web", self.admin.resource(), cfg.web, self.descriptors, reactor),
            reactor).setServiceParent(self.gated)
        # The CSRF signing secret is shared by every node through PostgreSQL.
        self.callback_web.secret_service.setServiceParent(self.gated)
        self.sip.setServiceParent(self.gated)
        self.callbacks.setServiceParent(self.gated)
        self.recovery.setServiceParent(self.gated)
        # Operator hang-ups (DELETE /v1/callbacks/{id}) of this process's callbacks.
        HangupWatcher(PostgresCallsStore(self.db), self.callbacks, reactor, self.db.instance_id,
                      ready=lambda: self.db.ready).setServiceParent(self.gated)
        self.gated.setServiceParent(self)
        # Voice applications are catalog objects: seeded from the config once, then followed.
        self.applications = ApplicationDirectory(
            PostgresApplicationSource(self.db), reactor, cfg.application, seed=self._seed_applications)
        self.applications.listeners.append(self._applications_changed)
        self.applications.setServiceParent(self.gated)

    def _listen(self) -> tuple[str, int]:
        """The SIP listen address and port."""
        return parse_host_port(self.cfg.sip.listen)

    def _status_line(self) -> str:
        """One line for the service manager's status (``systemctl status``)."""
        node = self.cfg.server.node
        if not self.gated.children_started:
            why = self.db.reason if self.db.reason not in ("", "not started") else "connecting"
            return f"node {node}: waiting for the database ({why})"
        db = "database ok" if self.db.ready else f"database down: {self.db.reason}"
        return f"node {node}: {self.callbacks.active} calls, {db}"

    def _ua_config(self) -> UAConfig:
        """The UA's view of the configuration (one place that maps config to RFC timers)."""
        sip = self.cfg.sip
        trunk_host, trunk_port = parse_host_port(sip.trunk.address, default_port=5060)
        return UAConfig(public_address=sip.public_address, public_port=self._listen()[1],
                        trunk_host=trunk_host, trunk_port=trunk_port,
                        from_domain=sip.trunk.from_domain, username=sip.trunk.username,
                        password=sip.trunk.password, t1=sip.t1, t2=sip.t2, t4=sip.t4,
                        user_agent=f"cbserver/{__version__}")

    def startService(self) -> None:
        """Start the pool, the web endpoint and the gate (which waits for the database)."""
        logs.set_level(self.cfg.server.log_level)
        logs.speed_up_text_logs()  # twistd's text log file: the same lines, cheaper
        _before, limit = raise_descriptor_limit()
        self.descriptors.set_limit(limit)
        self.log.info("connections may use {n} descriptors ({reserve} kept for RTP, the database "
                      "and files)", n=self.descriptors.available, reserve=self.descriptors.reserve)
        install_media_type_parse()  # before the web endpoint listens (hostile Content-Types)
        super().startService()

    def _authorizer(self, app) -> Authorizer:
        """The authorizer of one voice application (its charging and destination rules)."""
        return Authorizer(PostgresAuthorizationStore(self.db), self.tariffs, self.reactor,
                          node=self.cfg.server.node, special_charge=app.special_charge_if_legb_fails,
                          legb_ring_seconds=int(self.cfg.sip.no_answer_timeout),
                          internal_account=app.internal_account,
                          destinations=DestinationPolicy(app.allowed_destinations,
                                                         app.denied_destinations))

    def _seed_applications(self):
        """Add the config's ``[[application]]`` tables the catalog never had (docs/catalog.md)."""
        actor = provision_actor(self.config_path or "config")
        return defer.ensureDeferred(Applications(PostgresCatalogStore(self.db), self.reactor, actor)
                                    .seed(self.cfg.application))

    def _applications_changed(self, apps) -> None:
        """The catalog's applications changed: prompts, authorizers, pages follow at once."""
        from cbserver.media.prompts import load_prompt_library

        for app in apps:
            try:
                self.media_env.libraries[app.name] = load_prompt_library(app.language,
                                                                          app.prompts or None)
            except Exception:  # noqa: BLE001 - a bad prompts folder must not stop the others
                self.log.failure("application {app}: prompts not loaded; using the default ones",
                                 app=app.name)
                self.media_env.libraries[app.name] = load_prompt_library()
        old = {a: self.authorizers[a.name] for a in self.callbacks.apps.values()
               if a.name in self.authorizers}
        self.authorizers = {a.name: old.get(a) or self._authorizer(a) for a in apps}
        self.callbacks.set_applications(apps, self.authorizers)
        self.callback_web.set_applications(apps)
        for app in apps:
            self.log.info("application {app}: page {path} (users are given {address})",
                          app=app.name, path=app.url_path, address=app.callback_page_address)

    def _call_handling_started(self) -> None:
        """The gated services run: tune the collector and say where each page is."""
        # Everything built so far lives as long as the process: move it out of the
        # collector's view (with default settings and no freeze a third of the SIP stack's
        # CPU went to the collector, bench/bench_sip_calls.py --gc-tune). A callback leaves no
        # cycle behind (test_callback_no_garbage), so a collection visits the work in
        # progress; the pacer runs short collections between reactor steps (gcpacer.py).
        gc.freeze()
        self.gc_pacer.start()
        self.gc_probe.install()
        self.stall_probe.start()
        self.log.info("cbserver ready: node={node}", node=self.cfg.server.node)
        self.notify.ready()
        for app in self.cfg.application:
            self.log.info("application {app}: page {path} (users are given {address})",
                          app=app.name, path=app.url_path, address=app.callback_page_address)
            mismatch = page_address_mismatch(app)
            if mismatch:
                self.log.warn("application {app}: {mismatch}", app=app.name,
                              mismatch=mismatch)

    @defer.inlineCallbacks
    def stopService(self):
        """Stop taking callbacks, end calls in progress, flush writes, then close the pool."""
        self.web.draining = True
        self.notify.stopping(f"node {self.cfg.server.node}: stopping, ending "
                             f"{self.callbacks.active} calls")
        self.log.info("shutting down: draining calls (grace {grace}s)",
                      grace=self.cfg.server.shutdown_grace)
        # The gate first and alone: calls end (within the grace period) while the pool,
        # the xDR writer and the web endpoint still run.
        d = defer.maybeDeferred(self.gated.stopService)
        d.addTimeout(self.cfg.server.shutdown_grace, self.reactor)
        try:
            yield d
        except defer.TimeoutError:
            self.log.warn("calls did not end within the grace period")
        self.stall_probe.stop()
        self.gc_pacer.stop()
        self.gc_probe.uninstall()
        yield super().stopService()


def _site(resource) -> Site:
    """A ``Site`` over ``resource`` that never shows a traceback to a client; its requests
    report to their connection's deadline and send their answer when finished
    (``FlushingRequest``); a flood's busy refusals do not each get an access-log line
    (``QuietSite``)."""
    site = QuietSite(resource, requestFactory=FlushingRequest)
    site.displayTracebacks = False
    return site


def _limited_site(name: str, resource, web, budget: DescriptorBudget, reactor) -> LimitedFactory:
    """``_site(resource)`` behind the ``[web]`` connection caps and request deadline."""
    limiter = ConnectionLimiter(name, web.max_connections, web.max_connections_per_client, budget)
    return LimitedFactory(_site(resource), limiter, reactor, deadline=web.request_timeout)


def makeService(options: Options) -> service.IService:
    """Build the service tree for ``twistd cbserver``."""
    from twisted.internet import reactor

    cfg = options.config
    if not options["no-preflight"]:
        preflight(cfg)
    reactor.callWhenRunning(_install_signal_handlers, reactor)
    return CallbackServer(cfg, reactor, config_path=str(Path(options["config"]).resolve()))


def _install_signal_handlers(reactor) -> None:
    """SIGTERM/SIGINT stop the reactor gracefully and the process then exits 0.

    Twisted's own handlers make twistd re-raise the signal after shutdown (exit status
    -15), which service managers count as a failure; a requested stop that went cleanly is
    a success. SIGHUP is ignored rather than killing calls in progress.
    """

    def graceful(signum, _frame):
        log.info("received {name}: stopping gracefully", name=signal.Signals(signum).name)
        reactor.callFromThread(_stop_once, reactor)

    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGINT, graceful)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


def _stop_once(reactor) -> None:
    """Stop the reactor unless a stop is already under way (a second signal)."""
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


__all__ = ["Options", "makeService", "CallbackServer"]
