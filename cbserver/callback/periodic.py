"""Poll every N seconds while running: the one loop behind the node's periodic database looks.

``Periodic`` calls a function every ``interval`` seconds between ``startService`` and
``stopService``, on the clock it is given (the reactor, or ``task.Clock`` in the tests). It
serves the node's pollers (``ApplicationDirectory``: the catalog change counter;
``NodeMonitor``: schema, drain and catalog readiness; ``HangupWatcher``: operator hang-ups;
``RecoveryService``: dead nodes' callbacks) so that each of them states only *what* it asks,
and the four agree on *how*:

- one call at a time: when the function returns a Deferred (a query), the next call waits for
  it; ticks missed meanwhile are skipped, not queued, so a stalled database never piles up
  queries (the next call comes at the first tick after the slow one ended);
- a failure (an exception, or a Deferred that fails) is logged with the loop's name and the
  loop goes on: a bad poll never ends the polling, and each owner's loop is its own, so one
  poller's errors never stop another's;
- ``stopService`` stops the ticks at once; a call in flight is left to finish on its own
  (shutdown never waits for a database that does not answer).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application import service
from twisted.internet import defer, task

from cbserver.errors import DatabaseUnavailable
from cbserver.logs import Logger, describe_failure


class Periodic(service.Service):
    """Call ``fn`` every ``interval`` seconds while running; see the module docstring.

    ``now``: the first call at start (True) or one ``interval`` later (False). ``calls``
    counts the calls made, ``failures`` those that failed (the tests read both).
    """

    log = Logger()

    def __init__(self, name: str, fn: Callable[[], object], clock, interval: float, *,
                 now: bool = True):
        self.name = name
        self.fn = fn
        self.clock = clock
        self.interval = interval
        self.now = now
        self.calls = 0
        self.failures = 0
        self._loop: task.LoopingCall | None = None

    def startService(self) -> None:
        """Start the ticks (the first at once when ``now``)."""
        super().startService()
        loop = task.LoopingCall(self._call)
        loop.clock = self.clock
        self._loop = loop
        # _call never fails, so the loop's Deferred only fires at stop; an errback is there
        # in case LoopingCall itself ever does.
        loop.start(self.interval, now=self.now).addErrback(
            lambda f: self.log.failure("{name}: polling loop ended", failure=f, name=self.name))

    def stopService(self):
        """Stop the ticks; a call in flight finishes on its own."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _call(self) -> defer.Deferred:
        """One call; the returned Deferred (which never fails) holds the loop until it fires."""
        self.calls += 1
        d = defer.maybeDeferred(self.fn)
        d.addCallbacks(lambda _: None, self._failed)
        return d

    def _failed(self, failure) -> None:
        self.failures += 1
        if failure.check(DatabaseUnavailable):
            # An outage is reported by the pool and /readyz; one line per poll would flood.
            self.log.debug("{name}: {why}", name=self.name, why=describe_failure(failure))
        else:
            self.log.failure("{name}: poll failed; polling goes on", failure=failure,
                             name=self.name)
