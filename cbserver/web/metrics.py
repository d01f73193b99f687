"""Prometheus metrics of the callback service, in a private registry, served at ``/metrics``.

The web layer counts requests and refusals; the callback session calls the other methods
(``callback_started``, ``callback_ended``, ``leg_final``, ``post_dial_delay``,
``ivr_failure``, ``xdr_refused``). The xDR spool depth is read, when scraped, from a function passed in.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

# Post-dial delay buckets (seconds from INVITE to the first ringing/answer).
PDD_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 30.0)


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

    # -- called by the web layer ---------------------------------------------------------

    def callback_requested(self, mode: str) -> None:
        """The service accepted a callback request (the web answered 202 / 303)."""
        self.requests.labels(mode=mode).inc()

    def request_refused(self, mode: str, code: str, limit_kind: str | None = None) -> None:
        """A request was refused with ``code``; ``limit_kind`` for abuse-protection refusals."""
        self.refusals.labels(mode=mode or "unknown", code=code).inc()
        if limit_kind:
            self.rate_limited.labels(kind=limit_kind).inc()

    # -- called by the callback session --------------------------------------------------

    def callback_started(self, mode: str) -> None:
        """A callback session began (counts it and raises the active gauge)."""
        self.started.labels(mode=mode).inc()
        self.active.inc()

    def callback_ended(self, mode: str, outcome: str) -> None:
        """A started callback ended with ``outcome`` (e.g. ``connected``, ``busy_a``)."""
        self.ended.labels(mode=mode, outcome=outcome).inc()
        self.active.dec()

    def leg_final(self, leg: str, status: int) -> None:
        """A leg (``"A"`` or ``"B"``) got its final SIP status code."""
        self.legs.labels(leg=leg, status=str(int(status))).inc()

    def post_dial_delay(self, seconds: float) -> None:
        """Observe one leg's post-dial delay."""
        self.pdd.observe(seconds)

    def ivr_failure(self, reason: str) -> None:
        """The hosted IVR failed (``bad_pin``, ``no_input``, ``locked_out``...)."""
        self.ivr_failures.labels(reason=reason).inc()

    def xdr_refused(self, reason: str) -> None:
        """A callback ended with its xDRs refused (``rejected``, ``spool_failed`` or ``error``)."""
        self.xdr_refusals.labels(reason=reason).inc()

    # -- exposition ----------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
