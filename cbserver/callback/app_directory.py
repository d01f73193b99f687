"""The voice applications this node serves, kept in step with the catalog without restart.

``ApplicationDirectory`` starts with the config's ``[[application]]`` tables, then (once the
database is ready) seeds the catalog with those it never had (``Applications.seed``) and from
then on serves what the catalog holds. Every ``interval`` seconds it reads the catalog change
counter (sql/012, bumped by a trigger on ``applications``, sql/043) and, when it moved,
reloads the applications; when they differ it calls each listener with the new tuple of
``ApplicationConfig`` (the tap re-routes the pages and the callback service). A change thus
applies to the next callback on every node within ``interval`` seconds. While PostgreSQL is
away the node keeps serving what it had.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application import service
from twisted.internet import defer

from cbserver.billing.applications import from_row
from cbserver.callback.periodic import Periodic
from cbserver.errors import DatabaseUnavailable
from cbserver.logs import Logger


class ApplicationDirectory(service.Service):
    """The current applications, refreshed from the catalog; see the module docstring."""

    log = Logger()
    name = "applications"

    def __init__(self, source, clock, initial=(), *, interval: float = 1.0,
                 seed: Callable[[], defer.Deferred] | None = None):
        self.source = source  # counter() and load(), e.g. db.applications_store
        self.clock = clock
        self.current = tuple(initial)
        self.interval = interval
        self.seed = seed
        self.listeners: list[Callable[[tuple], None]] = []
        self._counter = object()  # matches no counter: the first refresh loads
        self._poller: Periodic | None = None

    def startService(self) -> None:
        """Seed the catalog from the config once, then poll the change counter."""
        super().startService()
        d = defer.maybeDeferred(self.seed) if self.seed is not None else defer.succeed(None)
        d.addCallback(self._seeded)
        d.addErrback(lambda f: self.log.failure("seeding the applications from the config failed",
                                                failure=f))
        d.addCallback(lambda _: self._start_loop())

    def _seeded(self, created) -> None:
        for name in created or ():
            self.log.info("application {app}: added to the catalog from the config", app=name)

    def _start_loop(self) -> None:
        if self.running:
            self._poller = Periodic("applications refresh", self.refresh, self.clock,
                                    self.interval)
            self._poller.startService()

    def stopService(self):
        """Stop polling."""
        super().stopService()
        if self._poller is not None:
            self._poller.stopService()
            self._poller = None

    @defer.inlineCallbacks
    def refresh(self):
        """Reload the applications if the catalog changed; tell the listeners if they did."""
        try:
            counter = yield self.source.counter()
            if counter == self._counter:
                return
            rows = yield self.source.load()
            apps = tuple(from_row(r) for r in rows)
        except DatabaseUnavailable as e:
            self.log.debug("applications not refreshed: {why}", why=str(e))
            return
        except Exception:  # noqa: BLE001 - a bad poll must not stop the loop
            self.log.failure("reading the applications failed; keeping the current ones")
            return
        self._counter = counter
        if apps == self.current:
            return
        before = {a.name for a in self.current}
        self.current = apps
        self.log.info("applications changed: now {names} (added {added}, removed {removed})",
                      names=", ".join(a.name for a in apps) or "none",
                      added=", ".join(sorted({a.name for a in apps} - before)) or "none",
                      removed=", ".join(sorted(before - {a.name for a in apps})) or "none")
        for listener in list(self.listeners):
            try:
                listener(apps)
            except Exception:  # noqa: BLE001 - one listener's bug must not hide the change from others
                self.log.failure("an applications listener failed")
