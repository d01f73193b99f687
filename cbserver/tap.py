"""``twistd cbserver``: command-line options and the service tree (the one wiring place).

The tree starts the database pool first. The web endpoint opens at once so that ``/healthz``
can say why the server is not ready; everything that takes calls (the SIP side, the callback
routes) starts only once the database is ready with a current schema. This is the only module
that imports the global reactor.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import psycopg2
from twisted.application import service, strports
from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python import usage
from twisted.web.server import Site

from cbserver.config import Config, ConfigError, load_config
from cbserver.db.migrations import SchemaTooOld, check_schema
from cbserver.db.pool import Database
from cbserver.web.app import WebApp
from cbserver.web.tls import complete_endpoint

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
    """Refuse to start on a reachable database with an old schema (one clear line, exit 1).

    An unreachable database is not an error here: the pool retries with back-off and
    ``/healthz`` reports it, so a server started before its database does not crash-loop.
    """
    try:
        conn = psycopg2.connect(cfg.database.dsn, connect_timeout=3)
    except psycopg2.OperationalError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "connection failed"
        log.warn("database not reachable at start-up ({why}); will keep retrying", why=first)
        return
    try:
        check_schema(conn)
    except SchemaTooOld as e:
        sys.stderr.write(f"cbserver: {e}\n")
        raise SystemExit(1) from None
    finally:
        conn.close()


class CallbackServer(service.MultiService):
    """The root service: database first, then what needs it once it is ready."""

    log = Logger()

    def __init__(self, cfg: Config, reactor):
        super().__init__()
        self.cfg = cfg
        self.reactor = reactor
        self.db = Database(cfg.database.dsn, reactor, size=cfg.database.pool_size,
                           retry_max=cfg.database.retry_max, node=cfg.server.node)
        self.db.setServiceParent(self)
        self.web = WebApp(self.db, reactor)
        state = Path(cfg.server.state_dir)
        endpoint = complete_endpoint(cfg.web.endpoint, state)
        site = Site(self.web.resource())
        site.displayTracebacks = False
        self.web_service = strports.service(endpoint, site, reactor=reactor)
        self.web_service.setServiceParent(self)
        # Services that take calls: started only once the database is ready.
        self.gated = service.MultiService()
        self._gated_started = False

    def startService(self) -> None:
        """Start the pool and the web endpoint; start the gated services once ready."""
        super().startService()
        self.db.when_ready().addCallback(self._database_ready).addErrback(
            lambda f: self.log.failure("could not start call handling", failure=f))

    def _database_ready(self, _db) -> None:
        """Open the SIP side and the callback routes."""
        if self.running and not self._gated_started:
            self._gated_started = True
            self.gated.startService()
            self.log.info("cbserver ready: node={node}", node=self.cfg.server.node)

    @defer.inlineCallbacks
    def stopService(self):
        """Stop taking callbacks, end calls in progress, flush writes, then close the pool."""
        self.web.draining = True
        self.log.info("shutting down: draining calls (grace {grace}s)",
                      grace=self.cfg.server.shutdown_grace)
        if self._gated_started:
            d = defer.maybeDeferred(self.gated.stopService)
            d.addTimeout(self.cfg.server.shutdown_grace, self.reactor)
            try:
                yield d
            except defer.TimeoutError:
                self.log.warn("calls did not end within the grace period")
        yield super().stopService()


def makeService(options: Options) -> service.IService:
    """Build the service tree for ``twistd cbserver``."""
    from twisted.internet import reactor

    cfg = options.config
    if not options["no-preflight"]:
        preflight(cfg)
    reactor.callWhenRunning(_install_signal_handlers, reactor)
    return CallbackServer(cfg, reactor)


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
