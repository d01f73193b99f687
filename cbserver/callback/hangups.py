"""Operator hang-ups, the node's side: end the callbacks an operator asked to end.

``DELETE /v1/callbacks/{id}`` (any node's admin endpoint) stores a request in
``callback_hangups`` naming the process that runs the callback (migration 042). Every
``interval`` seconds, while this process has callbacks in progress, ``HangupWatcher`` asks
for its pending requests, ends each callback it runs with the cause ``operator_hangup``
(``CallbackSession.hang_up``: both legs CANCELled or BYEd, RFC 3261 9.1 and 15.1, both
xDRs written and billed as for any other end) and marks the requests handled. A request for
a callback that ended meanwhile is marked handled and changes nothing. A poll, not
LISTEN/NOTIFY: the pool's connections are shared, and a one-second poll of an indexed table,
only while calls run, is cheaper than a connection kept for listening.
"""

from __future__ import annotations

from twisted.application import service
from twisted.internet import defer

from cbserver.callback.console import CAUSE
from cbserver.callback.periodic import Periodic
from cbserver.logs import Logger, describe_failure

log = Logger()

INTERVAL = 1.0  # seconds between two looks for hang-up requests (only while calls run)


class HangupWatcher(service.Service):
    """See the module docstring. ``callbacks`` is the ``CallbackService`` (its ``sessions``)."""

    name = "hangups"

    def __init__(self, store, callbacks, clock, instance_id: str, interval: float = INTERVAL,
                 ready=lambda: True):
        self.store = store
        self.callbacks = callbacks
        self.clock = clock
        self.instance_id = instance_id
        self.interval = interval
        self.ready = ready
        self._polling = False
        self._poller: Periodic | None = None

    def startService(self) -> None:
        """Start polling."""
        super().startService()
        self._poller = Periodic("hang-ups", self.poll, self.clock, self.interval, now=False)
        self._poller.startService()

    def stopService(self):
        """Stop polling."""
        super().stopService()
        if self._poller is not None:
            self._poller.stopService()
            self._poller = None

    def poll(self) -> defer.Deferred:
        """One look: fires with the ids of the callbacks hung up (never fails)."""
        if self._polling or not self.callbacks.sessions or not self.ready():
            return defer.succeed([])
        self._polling = True
        d = defer.ensureDeferred(self._poll())

        def failed(f):
            log.warn("hang-up requests not read: {err}", err=describe_failure(f))
            return []

        def done(result):
            self._polling = False
            return result

        return d.addErrback(failed).addBoth(done)

    async def _poll(self):
        ids = await self.store.pending_hangups(self.instance_id)
        if not ids:
            return []
        ended = []
        for sid in ids:
            session = self.callbacks.sessions.get(sid)
            if session is None:
                continue  # ended meanwhile: nothing to do
            log.info("operator hang-up callback_id={callback_id}", callback_id=sid)
            session.hang_up(CAUSE, "hung up by the operator")
            ended.append(sid)
        await self.store.hangups_handled(ids)
        return ended
