"""The node's capacity, measured rather than configured: how many requests may start at once.

A fixed cap (``[limits] node_max_starting``) that fits one machine is too high for a slower
or busier one: past its capacity a node accepts requests it then cannot serve in time, and
accepted callbacks fail (legA hangs up while legB is still being authorized and dialled,
``caller_hung_up``). What tells that a node is past its capacity, whatever the machine, is
the time a request takes to start — rate limits, the concurrency slot, the authorization
with its hold and the first status row: the database round trips the legs of running
callbacks make too, each waiting for the server's reactor to read its result, so a node
whose own core is saturated (by callbacks or by refusing a flood) shows it there as well.
``StartDelayGate`` watches that delay with the signal of CoDel (Nichols and Jacobson,
"Controlling Queue Delay", ACM Queue 2012): a queue is *standing* when even the fastest
request of a whole ``interval`` took longer than ``target``. Running callbacks' legB
authorizations are watched the same way, each kind for itself: their statements go first in
the pool, so a legB in time must not hide that new requests stand in a queue.

What the gate does with the signal is an adaptive limit on the requests starting at once
(``limit``, between ``floor`` and ``ceiling`` — ``node_max_starting``): after each interval
whose fastest start was late, the limit is cut in proportion (``target / fastest``, at most
by half); after an interval whose starts were in time while the limit held requests back, it
grows by a quarter (at least one). A request beyond the limit is refused at once, 503
``busy`` before any database work. By Little's law the node then accepts ``limit / delay``
requests a second: it settles where starts take about ``target``, i.e. at what the machine
carries in these minutes, and keeps accepting at that rate while it refuses the rest.

An earlier version shut the gate completely on a standing queue and opened it only when a
request started in time or nothing admitted was left in flight. Under twice the sustained
load that cycled: a second of refusing everything while the admitted requests drained (the
node's core idle for new work), then a burst of everything offered until the next whole
late interval, which overloaded the node again (docs/bench-callbacks.md, "Session 10"). The
limit never falls below ``floor``, so a node always has starts in flight whose delays tell
it when the queue is gone; it is never stuck shut on stale figures.

The start delay is known only once a start has finished, and the limit moves once an
interval: meanwhile a node past its capacity keeps admitting requests that then starve
in the pool's queue, where running callbacks' statements go first (``cbserver.priority``).
So the gate also asks the pool, at every request, how long a new start would queue now
(``queue_delay``: the pool's admission queue time times the statements a start takes, both
measured at run time) and refuses at once while that alone exceeds ``target``. No setting of
its own: the limit is derived from the measured delays and the same target.
"""

from __future__ import annotations

import math

#: The limit never goes below this many requests starting at once.
FLOOR = 4
#: After an interval of late starts the limit is cut by ``target / fastest``, at most this much.
MAX_CUT = 0.5
#: After an interval of starts in time with the limit full, it grows by this share (at least 1).
GROWTH = 0.25


class StartDelayGate:
    """An adaptive limit on requests starting at once, from their start delays (see the
    module doc).

    ``clock`` is an ``IReactorTime`` (``task.Clock`` in tests). Call ``admit()`` before taking
    a request, then ``started()`` for a token and ``finished(token)`` when the service answered
    (or failed). ``ceiling`` is the most the limit may grow to (``node_max_starting``).
    """

    def __init__(self, clock, target: float = 0.4, interval: float = 1.0, queue_delay=None,
                 ceiling: int = 100, floor: int = FLOOR):
        self.clock = clock
        # A callable: seconds a start admitted now would queue for database connections
        # (None: not known; only the start-delay rule applies).
        self.queue_delay = queue_delay
        self.target = target
        self.interval = interval
        self.ceiling = max(1, ceiling)
        self.floor = max(1, min(floor, self.ceiling))
        self.limit = float(self.ceiling)  # requests that may be starting at once now
        self.in_flight = 0
        # requests refused by the gate since start-up, by reason (``/readyz``, logs, tests)
        self.refusals = {"start_delay": 0, "queue": 0}
        self.shut_since: float | None = None  # when the gate last began refusing
        self.last_reason: str | None = None  # why the last refusal ("start_delay" / "queue")
        self.cuts = 0  # intervals that cut the limit (for /readyz and the benchmark)
        self.lowest = self.limit  # the lowest the limit has been
        # The interval being measured: when it ends, its fastest delay of each kind (a new
        # request's start, a running callback's legB authorization), the most in flight.
        self._ends = clock.seconds() + interval if clock is not None else 0.0
        self._fastest: dict[str, float] = {}
        self._peak = 0

    @property
    def refused(self) -> int:
        """Requests refused by the gate since start-up, for any reason."""
        return sum(self.refusals.values())

    @property
    def refused_queue(self) -> int:
        """Of those, the ones refused because of the pool's queue."""
        return self.refusals["queue"]

    @property
    def shedding(self) -> bool:
        """Whether the limit is below the ceiling (a standing queue was seen and not yet
        outgrown)."""
        return bool(self.target) and self.limit < self.ceiling

    def admit(self) -> bool:
        """Whether a new request may start now (False: refuse it ``busy``)."""
        if not self.target:
            return True
        self._roll()
        if self.in_flight >= int(self.limit):
            self._peak = max(self._peak, self.in_flight + 1)  # one more was wanted
            return self._refuse("start_delay")
        if self.queue_delay is not None and self.queue_delay() > self.target:
            return self._refuse("queue")
        self.shut_since = None
        return True

    def _refuse(self, reason: str) -> bool:
        self.refusals[reason] += 1
        self.last_reason = reason
        if self.shut_since is None:
            self.shut_since = self.clock.seconds()
        return False

    def state(self) -> dict:
        """The gate as ``/readyz`` reports it (for a balancer; see ``nodestate``)."""
        if not self.target:
            return {"enabled": False}
        self._roll()
        queued = self.queue_delay() if self.queue_delay is not None else None
        full = self.in_flight >= int(self.limit)
        shut = full or (queued is not None and queued > self.target)
        return {"enabled": True, "open": not shut,
                "reason": (("start_delay" if full else "queue") if shut else None),
                "shut_for": (round(self.clock.seconds() - self.shut_since, 3)
                             if shut and self.shut_since is not None else 0.0),
                "target": self.target, "limit": int(self.limit), "ceiling": self.ceiling,
                "lowest_limit": int(self.lowest), "cuts": self.cuts,
                "queue_delay": None if queued is None else round(queued, 4),
                "in_flight": self.in_flight, "refused": self.refused,
                "refused_queue": self.refused_queue}

    def started(self) -> float:
        """A request was admitted; its token (the time it started)."""
        self.in_flight += 1
        self._peak = max(self._peak, self.in_flight)
        return self.clock.seconds()

    def finished(self, token: float) -> None:
        """The request started at ``token`` has its answer: account for its delay."""
        self.in_flight -= 1
        self.observe(self.clock.seconds() - token)

    def observe(self, delay: float, kind: str = "start") -> None:
        """Account for one more delay measured just now: a request's start, or (``kind``
        ``"legb"``, ``observe_legb``) legB's re-authorization of a running callback.

        Each kind has its own fastest per interval: legB's statements go first in the pool
        (``cbserver.priority``), so a legB authorized in time says nothing of the queue new
        starts stand in, and must not hide it; a late one is a standing queue on the path
        where lateness fails an accepted callback (legA hangs up while legB is not dialled).
        """
        if not self.target:
            return
        self._roll()
        fastest = self._fastest.get(kind)
        if fastest is None or delay < fastest:
            self._fastest[kind] = delay

    def observe_legb(self, delay: float) -> None:
        """A running callback's legB waited ``delay`` seconds for its authorization."""
        self.observe(delay, "legb")

    def _roll(self) -> None:
        """Close the measured interval if it has ended: move the limit by what it saw."""
        now = self.clock.seconds()
        if now < self._ends:
            return
        late = max((d for d in self._fastest.values() if d > self.target), default=None)
        if late is not None:
            # A standing queue: fewer at once, in proportion to how late the fastest was.
            self.limit = max(float(self.floor), self.limit * max(MAX_CUT, self.target / late))
            self.cuts += 1
            self.lowest = min(self.lowest, self.limit)
        elif self._fastest and self._peak >= math.floor(self.limit):
            # In time, and the limit is what held requests back: let more start.
            self.limit = min(float(self.ceiling), self.limit + max(1.0, GROWTH * self.limit))
        # An interval where nothing finished says nothing: the limit stays.
        self._ends = now + self.interval
        self._fastest = {}
        self._peak = self.in_flight
