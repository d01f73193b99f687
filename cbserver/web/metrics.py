"""Prometheus metrics of the callback service, in a private registry, served at ``/metrics``.

The web layer counts requests and refusals; the callback session calls the other methods
(``callback_started``, ``callback_ended``, ``leg_final``, ``post_dial_delay``,
``ivr_failure``, ``xdr_refused``). The xDR spool depth is read, when scraped, from a function passed in.
``GcPauseProbe`` and ``StallProbe`` feed the process-health histograms: how long each garbage
collection held the reactor, and how late a periodic reactor tick ran (the media clock, SIP
timers and every request wait behind either).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

# Post-dial delay buckets (seconds from INVITE to the first ringing/answer).
PDD_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 30.0)
# Pause and stall buckets (seconds): a 20 ms media tick is the scale that matters.
PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The service's counters, gauges and histograms; one instance per process."""

    content_type = CONTENT_TYPE_PLAIN_0_0_4  # understood by every Prometheus version

    def __init__(self, spool_depth: Callable[[], float] | None = None,
                 registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("cbserver_callback_requests", "Callback requests accepted, by mode",
                                ["mode"], registry=r)
        self.refusals = Counter("cbserver_callback_refusals",
                                "Callback requests refused, by mode and refusal code",
                                ["mode", "code"], registry=r)
        self.rate_limited = Counter("cbserver_rate_limit_refusals",
                                    "Requests refused by abuse protection, by kind",
                                    ["kind"], registry=r)
        self.started = Counter("cbserver_callbacks_started", "Callbacks started, by mode",
                               ["mode"], registry=r)
        self.ended = Counter("cbserver_callbacks", "Callbacks ended, by mode and outcome",
                             ["mode", "outcome"], registry=r)
        self.active = Gauge("cbserver_active_callbacks", "Callbacks in progress on this node",
                            registry=r)
        self.legs = Counter("cbserver_legs", "Call legs by leg (A/B) and SIP final status code",
                            ["leg", "status"], registry=r)
        self.pdd = Histogram("cbserver_post_dial_delay_seconds",
                             "Post-dial delay: INVITE sent to first ringing or answer",
                             buckets=PDD_BUCKETS, registry=r)
        self.ivr_failures = Counter("cbserver_ivr_failures", "Hosted IVR failures, by reason",
                                    ["reason"], registry=r)
        self.xdr_refusals = Counter("cbserver_xdr_refused",
                                    "Callbacks whose xDRs the recorder refused (PostgreSQL "
                                    "rejected a leg, or the spool could not be written), by reason",
                                    ["reason"], registry=r)
        self.spool = Gauge("cbserver_xdr_spool_depth", "xDRs waiting in the spool for PostgreSQL",
                           registry=r)
        self.spool.set_function(spool_depth or (lambda: 0.0))
        self.gc_pause = Histogram("cbserver_gc_pause_seconds",
                                  "Garbage collections by generation, by how long each held the process",
                                  ["generation"], buckets=PAUSE_BUCKETS, registry=r)
        self.gc_pause_max = Gauge("cbserver_gc_pause_max_seconds",
                                  "Longest garbage collection since start, by generation",
                                  ["generation"], registry=r)
        self.gc_cpu = Counter("cbserver_gc_cpu_seconds",
                              "CPU time the collector used, by generation (a pause longer than its "
                              "CPU time was the process waiting for a core)",
                              ["generation"], registry=r)
        self.gc_cpu_max = Gauge("cbserver_gc_cpu_max_seconds",
                                "Most CPU time one garbage collection used since start, by generation",
                                ["generation"], registry=r)
        self._gc_cpu_max: dict[int, float] = {}
        self.stall = Histogram("cbserver_reactor_stall_seconds",
                               "Lateness of a periodic reactor tick (how long the reactor was held)",
                               buckets=PAUSE_BUCKETS, registry=r)
        self.stall_max = Gauge("cbserver_reactor_stall_max_seconds",
                               "Longest reactor stall seen since start", registry=r)
        self._gc_max: dict[int, float] = {}
        self._stall_max = 0.0
        self._children: dict[tuple, object] = {}

    def _child(self, metric, *values):
        """``metric.labels(*values)``, looked up once per label set: ``labels`` validates and
        locks on every call, and the callback path counts several times per callback. The
        label sets are the metric's own few values (modes, outcomes, status codes)."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    # -- called by the web layer ---------------------------------------------------------

    def callback_requested(self, mode: str) -> None:
        """The service accepted a callback request (the web answered 202 / 303)."""
        self._child(self.requests, mode).inc()

    def request_refused(self, mode: str, code: str, limit_kind: str | None = None) -> None:
        """A request was refused with ``code``; ``limit_kind`` for abuse-protection refusals."""
        self._child(self.refusals, mode or "unknown", code).inc()
        if limit_kind:
            self._child(self.rate_limited, limit_kind).inc()

    # -- called by the callback session --------------------------------------------------

    def callback_started(self, mode: str) -> None:
        """A callback session began (counts it and raises the active gauge)."""
        self._child(self.started, mode).inc()
        self.active.inc()

    def callback_ended(self, mode: str, outcome: str) -> None:
        """A started callback ended with ``outcome`` (e.g. ``connected``, ``busy_a``)."""
        self._child(self.ended, mode, outcome).inc()
        self.active.dec()

    def leg_final(self, leg: str, status: int) -> None:
        """A leg (``"A"`` or ``"B"``) got its final SIP status code."""
        self._child(self.legs, leg, str(int(status))).inc()

    def post_dial_delay(self, seconds: float) -> None:
        """Observe one leg's post-dial delay."""
        self.pdd.observe(seconds)

    def ivr_failure(self, reason: str) -> None:
        """The hosted IVR failed (``bad_pin``, ``no_input``, ``locked_out``...)."""
        self.ivr_failures.labels(reason=reason).inc()

    def xdr_refused(self, reason: str) -> None:
        """A callback ended with its xDRs refused (``rejected``, ``spool_failed`` or ``error``)."""
        self.xdr_refusals.labels(reason=reason).inc()

    # -- called by the process-health probes ---------------------------------------------

    def collected(self, generation: int, seconds: float, cpu_seconds: float = 0.0) -> None:
        """One garbage collection of ``generation`` took ``seconds`` (``cpu_seconds`` of CPU)."""
        self.gc_pause.labels(generation=str(generation)).observe(seconds)
        if seconds > self._gc_max.get(generation, 0.0):
            self._gc_max[generation] = seconds
            self.gc_pause_max.labels(generation=str(generation)).set(seconds)
        self.gc_cpu.labels(generation=str(generation)).inc(cpu_seconds)
        if cpu_seconds > self._gc_cpu_max.get(generation, 0.0):
            self._gc_cpu_max[generation] = cpu_seconds
            self.gc_cpu_max.labels(generation=str(generation)).set(cpu_seconds)

    def stalled(self, seconds: float) -> None:
        """A periodic reactor tick ran ``seconds`` late."""
        self.stall.observe(seconds)
        if seconds > self._stall_max:
            self._stall_max = seconds
            self.stall_max.set(seconds)

    # -- exposition ----------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


class GcPauseProbe:
    """Times every garbage collection (``gc.callbacks``) into ``Metrics.collected``.

    A full collection runs inside whatever allocation triggered it, on the reactor thread:
    its duration is a stall of every call's media and timers.
    """

    def __init__(self, metrics: Metrics, timer: Callable[[], float] = time.perf_counter,
                 cpu_timer: Callable[[], float] = time.thread_time):
        self.metrics = metrics
        self.timer = timer
        self.cpu_timer = cpu_timer
        self._started = self._cpu_started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        """The ``gc.callbacks`` hook: note the start, report the duration at the stop."""
        if phase == "start":
            self._started, self._cpu_started = self.timer(), self.cpu_timer()
        else:
            self.metrics.collected(info["generation"], self.timer() - self._started,
                                   self.cpu_timer() - self._cpu_started)

    def install(self) -> None:
        """Hook into the collector (idempotent)."""
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def uninstall(self) -> None:
        """Unhook from the collector."""
        if self in gc.callbacks:
            gc.callbacks.remove(self)


class StallProbe:
    """A tick every ``interval`` seconds on ``clock``; reports how late each ran.

    Lateness is measured against the clock the reactor schedules with, so a tick held back by
    a long callback, a blocking call or a collection reports that hold.
    """

    def __init__(self, metrics: Metrics, clock, interval: float = 0.05):
        self.metrics = metrics
        self.clock = clock
        self.interval = interval
        self._due = 0.0
        self._call = None

    def start(self) -> None:
        """Schedule the first tick (once: a second start while ticking does nothing)."""
        if self._call is not None and self._call.active():
            return
        self._due = self.clock.seconds() + self.interval
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        """Report this tick's lateness and schedule the next one a full interval later."""
        now = self.clock.seconds()
        self.metrics.stalled(max(0.0, now - self._due))
        self._due = now + self.interval
        self._call = self.clock.callLater(self.interval, self._tick)

    def stop(self) -> None:
        """Cancel the pending tick."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
