"""The node's capacity, measured rather than configured: refuse while starts are late.

A fixed cap (``[limits] node_max_starting``) that fits one machine is too high for a slower
or busier one: past its capacity a node accepts requests it then cannot serve in time, and
accepted callbacks fail (legA hangs up while legB is still being authorized and dialled,
``caller_hung_up``). What tells that a node is past its capacity, whatever the machine, is
the time a request takes to start — rate limits, the concurrency slot, the authorization
with its hold and the first status row: the database round trips the legs of running
callbacks make too. ``StartDelayGate`` watches that delay with the rule of CoDel (Nichols and
Jacobson, "Controlling Queue Delay", ACM Queue 2012): a queue is *standing* when even the
fastest request of a whole ``interval`` took longer than ``target``; one fast request ends it.

While the queue stands, new requests are refused at once (503 ``busy`` with Retry-After),
before any database work, so the requests already admitted — and the running callbacks'
legs — get the database's time; once nothing admitted is in flight the gate opens again,
so it cannot stay shut on stale figures. ``target`` 0 turns the gate off.

The start delay is known only once a start has finished, and CoDel waits a whole interval
before it acts: meanwhile a node past its capacity keeps admitting requests that then starve
in the pool's queue, where running callbacks' statements go first (``cbserver.priority``).
So the gate also asks the pool, at every request, how long a new start would queue now
(``queue_delay``: the pool's admission queue time times the statements a start takes, both
measured at run time) and refuses at once while that alone exceeds ``target``. No setting of
its own: the cap is derived from the measured queue and the same target.
"""

from __future__ import annotations


class StartDelayGate:
    """CoDel-style admission on the start delay of callback requests (see module doc).

    ``clock`` is an ``IReactorTime`` (``task.Clock`` in tests). Call ``admit()`` before taking
    a request, then ``started()`` for a token and ``finished(token)`` when the service answered
    (or failed).
    """

    def __init__(self, clock, target: float = 0.4, interval: float = 1.0, queue_delay=None):
        self.clock = clock
        # A callable: seconds a start admitted now would queue for database connections
        # (None: not known; only the CoDel rule applies).
        self.queue_delay = queue_delay
        self.target = target
        self.interval = interval
        self.in_flight = 0
        self.above_since: float | None = None  # first over-target finish since the last fast one
        self.shedding = False
        self.refused = 0  # requests refused by the gate since start-up (for logs and tests)
        self.refused_queue = 0  # of which because of the pool's queue
        self.refusals = {"start_delay": 0, "queue": 0}  # the same, by reason (``/readyz``)
        self.shut_since: float | None = None  # when the gate last began refusing
        self.last_reason: str | None = None  # why the last refusal ("start_delay" / "queue")

    def admit(self) -> bool:
        """Whether a new request may start now (False: refuse it ``busy``)."""
        if not self.target:
            return True
        if self.shedding and self.in_flight == 0:
            # Nothing admitted is left to measure: open, and let the next requests tell.
            self.shedding = False
            self.above_since = None
        if self.shedding:
            return self._refuse("start_delay")
        if self.queue_delay is not None and self.queue_delay() > self.target:
            self.refused_queue += 1
            return self._refuse("queue")
        self.shut_since = None
        return True

    def _refuse(self, reason: str) -> bool:
        self.refused += 1
        self.refusals[reason] += 1
        self.last_reason = reason
        if self.shut_since is None:
            self.shut_since = self.clock.seconds()
        return False

    def state(self) -> dict:
        """The gate as ``/readyz`` reports it (for a balancer; see ``nodestate``)."""
        if not self.target:
            return {"enabled": False}
        queued = self.queue_delay() if self.queue_delay is not None else None
        shut = self.shedding or (queued is not None and queued > self.target)
        return {"enabled": True, "open": not shut,
                "reason": (("start_delay" if self.shedding else "queue") if shut else None),
                "shut_for": (round(self.clock.seconds() - self.shut_since, 3)
                             if shut and self.shut_since is not None else 0.0),
                "target": self.target,
                "queue_delay": None if queued is None else round(queued, 4),
                "in_flight": self.in_flight, "refused": self.refused,
                "refused_queue": self.refused_queue}

    def started(self) -> float:
        """A request was admitted; its token (the time it started)."""
        self.in_flight += 1
        return self.clock.seconds()

    def finished(self, token: float) -> None:
        """The request started at ``token`` has its answer: account for its delay."""
        self.in_flight -= 1
        self.observe(self.clock.seconds() - token)

    def observe(self, delay: float) -> None:
        """Account for one more delay measured just now: a request's start, or legB's
        re-authorization of a running callback (the same database queue, on the path where
        lateness fails an accepted callback: legA hangs up while legB is not yet dialled)."""
        if not self.target:
            return
        now = self.clock.seconds()
        if delay <= self.target:
            # One request within target: no standing queue (CoDel's minimum over the interval).
            self.above_since = None
            self.shedding = False
            self.shut_since = None
        elif self.above_since is None:
            self.above_since = now
        elif now - self.above_since >= self.interval:
            self.shedding = True
