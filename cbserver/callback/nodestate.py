"""What a node tells its load balancer: ``/livez``, ``/readyz``, and draining (issue 16).

``NodeMonitor`` polls PostgreSQL on its own schedule, never per request: every ``interval``
seconds one query (``cbserver.db.nodes_store.poll``: schema version and function checksums,
and whether this node is drained), and every ``catalog_interval`` seconds the catalog check
(``cbserver.billing.readiness.node_catalog_state``). At most one of each is in flight: when
the database hangs, the next tick finds the previous query still running and sends nothing,
so a balancer polling every node every second costs the database one small query per node
per ``interval`` whatever the request rate, and a stalled database never piles up queries.
``/readyz`` reads the last results: the database counts as answering while the last poll
that succeeded is younger than ``stale_after`` seconds.

Draining: ``cbserver node drain NAME`` writes a ``node_drains`` row; the node sees it at its
next poll (within ``interval`` seconds), refuses new callbacks (``draining``, 503 with
Retry-After, ``cbserver.callback.admission``), answers ``/readyz`` 503 ``draining``, and lets
the calls in progress end. If the drain has a deadline, calls still running when it passes
(the database's clock decides, as for every other shared time) are ended with cause
``drain_deadline`` and billed like any call the server ends. ``undrain`` deletes the row.
"""

from __future__ import annotations

import datetime as dt

from prometheus_client import Gauge
from twisted.application import service
from twisted.internet import defer

from cbserver.billing import readiness
from cbserver.callback.periodic import Periodic
from cbserver.db import nodes_store
from cbserver.db.stores import PostgresReadinessStore
from cbserver.errors import DatabaseUnavailable
from cbserver.logs import Logger, describe_failure


class _CachedTariffsStore(PostgresReadinessStore):
    """The readiness store, its tariffs from the server's ``TariffCache``: a big catalog is
    not loaded again every ``catalog_interval`` (the cache reloads a tariff only after the
    catalog change counter moved), and these are the tariffs authorization uses anyway."""

    def __init__(self, db, tariffs):
        super().__init__(db)
        self.tariffs = tariffs

    def load_tariff(self, tariff_id):
        """See ``IReadinessStore``."""
        return self.tariffs.get(tariff_id)


class NodeMonitor(service.Service):
    """Polls the database for this node's readiness and drain state; see the module docstring.

    ``callbacks`` is the ``CallbackService`` (its ``active``, ``running``, ``draining`` and
    ``end_all``); ``starting`` a callable giving the requests being admitted now; ``tariffs``
    the server's ``TariffCache`` (None: each catalog check loads the tariffs it needs);
    ``load`` a callable giving admission's load state (``Admission.load_state``: the
    start-delay gate and the pool's queues), reported in ``/readyz``'s body as ``admission``.

    A shut gate is reported, not counted as unready: it opens and shuts within a second or
    two as starts speed up and slow down, while a balancer acts on several probes in a row
    seconds apart, so failing ``/readyz`` on it would take the node out of rotation after the
    overload has passed and put it back once the next one has begun (flapping, which moves
    the whole load to the other nodes in bursts). Each refused request already gets 503
    ``busy`` with Retry-After at once; a balancer that wants to weigh nodes by it reads
    ``admission.gate`` (``open``, ``reason``, ``shut_for``).
    """

    log = Logger()
    name = "node-monitor"
    interval = 2.0
    catalog_interval = 15.0

    @property
    def stale_after(self) -> float:
        """Seconds after the last answered poll that the database counts as not answering."""
        return 3 * self.interval + 1.0

    def __init__(self, cfg, db, callbacks, clock, metrics=None, starting=lambda: 0, tariffs=None,
                 load=None):
        self.cfg = cfg
        self.node = cfg.server.node
        self.db = db
        self.callbacks = callbacks
        self.clock = clock
        self.starting = starting
        self.load = load
        self.store = (PostgresReadinessStore(db) if tariffs is None
                      else _CachedTariffsStore(db, tariffs))
        self.last_ok: float | None = None  # clock time of the last poll that answered
        self.db_error = "not checked yet"
        self.schema_problem: str | None = "not checked yet"
        self.catalog_ok = False
        self.catalog_reason = "not checked yet"
        self.draining = False
        self.deadline_in: float | None = None
        self.polls = 0  # queries sent (the readiness probes' whole cost to the database)
        self._poll_inflight = False
        self._catalog_inflight = False
        self._catalog_due = 0.0
        self._deadline_call = None
        self._poller: Periodic | None = None
        if metrics is not None:
            Gauge("cbserver_node_draining", "1 while this node is drained (takes no new callback)",
                  registry=metrics.registry).set_function(lambda: 1.0 if self.draining else 0.0)
            Gauge("cbserver_node_ready", "1 while /readyz answers 200",
                  registry=metrics.registry).set_function(lambda: 1.0 if self.readyz()[0] else 0.0)

    # -- life cycle -------------------------------------------------------------------------

    def startService(self) -> None:
        """Poll at once, then every ``interval`` seconds."""
        super().startService()
        # Built here: tests set ``interval`` between construction and start.
        self._poller = Periodic("node monitor", self.tick, self.clock, self.interval)
        self._poller.startService()

    def stopService(self):
        """Stop polling (a query in flight is left to finish on its own)."""
        super().stopService()
        if self._poller is not None:
            self._poller.stopService()
            self._poller = None
        self._cancel_deadline()

    # -- polling ----------------------------------------------------------------------------

    def tick(self) -> None:
        """One round: the poll, and the catalog check when it is due; skip what is in flight."""
        if not self._poll_inflight:
            self._poll_inflight = True
            self.polls += 1
            d = defer.maybeDeferred(nodes_store.poll, self.db, self.node)
            d.addCallbacks(self._polled, self._poll_failed)
            d.addBoth(self._poll_done)
        if not self._catalog_inflight and self.clock.seconds() >= self._catalog_due:
            self._catalog_inflight = True
            now = dt.datetime.fromtimestamp(self.clock.seconds(), dt.UTC)
            d = defer.maybeDeferred(readiness.node_catalog_state, self.store, self.cfg, now)
            d.addCallbacks(self._catalog_checked, self._catalog_failed)
            d.addBoth(self._catalog_done)

    def _poll_done(self, _):
        self._poll_inflight = False

    def _catalog_done(self, _):
        self._catalog_inflight = False

    def _polled(self, result: nodes_store.NodePoll) -> None:
        self.last_ok = self.clock.seconds()
        self.db_error = ""
        if result.schema_problem != self.schema_problem and result.schema_problem:
            self.log.warn("readiness: schema not current: {problem}", problem=result.schema_problem)
        self.schema_problem = result.schema_problem
        self._apply_drain(result.draining, result.deadline_in)

    def _poll_failed(self, failure) -> None:
        self.db_error = describe_failure(failure)
        if not failure.check(DatabaseUnavailable):
            self.log.failure("readiness poll failed", failure=failure)

    def _catalog_checked(self, result) -> None:
        ok, reason = result
        if ok != self.catalog_ok or reason != self.catalog_reason:
            (self.log.info if ok else self.log.warn)(
                "readiness: catalog {state}{sep}{reason}", state="ready" if ok else "not ready",
                sep=": " if reason else "", reason=reason)
        self.catalog_ok, self.catalog_reason = ok, reason
        self._catalog_due = self.clock.seconds() + self.catalog_interval

    def _catalog_failed(self, failure) -> None:
        # The database check reports an outage; the catalog keeps its last answer and is
        # checked again at the next tick.
        if not failure.check(DatabaseUnavailable):
            self.log.failure("readiness: catalog check failed", failure=failure)
            self._catalog_due = self.clock.seconds() + self.catalog_interval

    # -- draining ---------------------------------------------------------------------------

    def _apply_drain(self, draining: bool, deadline_in: float | None) -> None:
        """Follow the ``node_drains`` row: start or end the drain, (re)arm its deadline."""
        if draining and not self.draining:
            self.log.info("node {node} draining: no new callbacks, {n} in progress{deadline}",
                          node=self.node, n=self.callbacks.active,
                          deadline="" if deadline_in is None else f", deadline in {deadline_in:.0f}s")
        elif self.draining and not draining:
            self.log.info("node {node} undrained: taking callbacks again", node=self.node)
        self.draining = draining
        self.callbacks.draining = draining
        if not draining or deadline_in is None:
            self._cancel_deadline()
            self.deadline_in = None
            return
        self.deadline_in = deadline_in
        when = max(0.0, deadline_in)
        if self._deadline_call is not None and self._deadline_call.active():
            self._deadline_call.reset(when)
        else:
            self._deadline_call = self.clock.callLater(when, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._deadline_call is not None and self._deadline_call.active():
            self._deadline_call.cancel()
        self._deadline_call = None

    def _deadline_passed(self) -> None:
        """The drain's deadline: end what still runs (cause ``drain_deadline``, billed)."""
        self._deadline_call = None
        if not self.draining:
            return
        n = self.callbacks.active
        if n:
            self.log.warn("node {node}: drain deadline passed, ending {n} callbacks in progress",
                          node=self.node, n=n)
            self.callbacks.end_all("drain_deadline", "drain deadline passed")

    # -- the answers ------------------------------------------------------------------------

    def livez(self) -> dict:
        """``/livez``: the process answers (this is computed by it)."""
        return {"status": "ok", "node": self.node}

    def readyz(self) -> tuple[bool, dict]:
        """``/readyz``: ``(ready, body)``; the body names each check and the first failure."""
        checks: dict[str, dict] = {}
        age = None if self.last_ok is None else self.clock.seconds() - self.last_ok
        if not self.db.ready:
            checks["database"] = {"ok": False, "reason": f"database unavailable: {self.db.reason}"}
        elif age is None or age > self.stale_after:
            why = (f"no answer from the database for {age:.0f}s" if age is not None
                   else f"database not checked yet{': ' + self.db_error if self.db_error else ''}")
            checks["database"] = {"ok": False, "reason": why}
        else:
            checks["database"] = {"ok": True}
        checks["schema"] = ({"ok": True} if self.schema_problem is None
                            else {"ok": False, "reason": self.schema_problem})
        checks["catalog"] = ({"ok": True} if self.catalog_ok
                             else {"ok": False, "reason": self.catalog_reason})
        checks["callbacks"] = ({"ok": True} if getattr(self.callbacks, "running", False)
                               else {"ok": False, "reason": "call handling not started"})
        if self.draining:
            reason = "node is draining" + ("" if self.deadline_in is None else " (with a deadline)")
            checks["draining"] = {"ok": False, "reason": reason}
        else:
            checks["draining"] = {"ok": True}
        limits = self.cfg.limits
        active, starting = self.callbacks.active, self.starting()
        if active >= limits.node_max_active or starting >= limits.node_max_starting:
            checks["busy"] = {"ok": False, "reason": f"at its busy caps ({active} callbacks in "
                                                      f"progress, {starting} starting)"}
        else:
            checks["busy"] = {"ok": True}
        failed = [name for name, c in checks.items() if not c["ok"]]
        body = {"status": "ready" if not failed else "unavailable", "node": self.node,
                "reason": failed[0] if failed else None, "checks": checks,
                "active_callbacks": active}
        if self.load is not None:
            body["admission"] = self.load()
        return not failed, body
