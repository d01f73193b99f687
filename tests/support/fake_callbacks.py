"""A scripted ``ICallbackService`` for web tests: statuses advance on an injected clock.

It knows a few accounts, refuses the way the real service does (bad credentials, no balance,
inactive account, not ready) and walks every accepted callback through calling_you ->
answered -> calling_destination -> connected -> ended, one step every ``step`` seconds,
holding "connected" for ``hold`` seconds. Used by the unit tests (with ``task.Clock``) and the
browser test (with the real reactor).
"""

from __future__ import annotations

import datetime
import itertools

from twisted.internet import defer
from zope.interface import implementer

from cbserver.callback.api import FINAL_STATUSES, CallbackRefused, ICallbackService

PROGRESS = ("calling_you", "answered", "calling_destination", "connected", "ended")
ACCOUNTS = {
    "cb1001": {"password": "right-pw", "balance": "10.00", "active": True},
    "cb1002": {"password": "pw2", "balance": "0.00", "active": True},
    "cb1003": {"password": "pw3", "balance": "5.00", "active": False},
}


@implementer(ICallbackService)
class ScriptedCallbackService:
    """Accepts callbacks for ``ACCOUNTS`` and advances their status on ``clock``."""

    def __init__(self, clock, step: float = 1.0, hold: float = 3.0, accounts=None):
        self.clock = clock
        self.step = step
        self.hold = hold
        self.accounts = dict(accounts or ACCOUNTS)
        self.requests = []  # every CallbackRequest received, in order
        self.statuses: dict[str, dict] = {}
        self.ready = True
        self._ids = itertools.count(1)
        self._calls = []

    def _now(self) -> str:
        """The clock's time as ISO-8601 UTC."""
        t = datetime.datetime.fromtimestamp(self.clock.seconds(), datetime.UTC)
        return t.isoformat(timespec="milliseconds")

    @property
    def active(self) -> int:
        """Callbacks in progress (as the real service counts its sessions)."""
        return sum(1 for cb_id in self.statuses if self.is_open(cb_id))

    def new_callback_id(self):
        """Readable ids for tests: cb-0001, cb-0002, ..."""
        return f"cb-{next(self._ids):04d}"

    def request_callback(self, request):
        """Check the request like the real service would; start the script."""
        self.requests.append(request)
        if not self.ready:
            return defer.fail(CallbackRefused("not_ready", "the callback service is not ready"))
        if request.mode != "hosted":
            acct = self.accounts.get(request.account)
            if acct is None or (request.mode == "extended" and acct["password"] != request.password):
                return defer.fail(CallbackRefused("bad_credentials",
                                                  "unknown account or wrong password"))
            if not acct["active"]:
                return defer.fail(CallbackRefused("inactive_account", "this account is not active"))
            if acct["balance"] == "0.00":
                return defer.fail(CallbackRefused("no_balance", "not enough balance for this call"))
        cb_id = request.callback_id or self.new_callback_id()
        now = self._now()
        self.statuses[cb_id] = {
            "id": cb_id, "application": request.application, "mode": request.mode,
            "node": "node1", "status": "calling_you",
            "legs": {"A": {"state": "calling", "sip_status": None, "reason": None},
                     "B": {"state": "idle", "sip_status": None, "reason": None}},
            "cause": None, "charges": None, "created_at": now, "updated_at": now}
        self._schedule(cb_id, 1)
        return defer.succeed(cb_id)

    def _schedule(self, cb_id: str, index: int) -> None:
        """Advance ``cb_id`` to PROGRESS[index] after a step (or the hold, before ending)."""
        delay = self.hold if PROGRESS[index] == "ended" else self.step
        self._calls.append(self.clock.callLater(delay, self._advance, cb_id, index))

    def _advance(self, cb_id: str, index: int) -> None:
        """Move one step; the last step writes a cause and the charges."""
        st = self.statuses[cb_id]
        if st["status"] in FINAL_STATUSES:
            return
        st["status"] = PROGRESS[index]
        st["updated_at"] = self._now()
        legs = st["legs"]
        if st["status"] == "answered":
            legs["A"].update(state="answered", sip_status=200)
        elif st["status"] == "calling_destination":
            legs["B"].update(state="calling")
        elif st["status"] == "connected":
            legs["B"].update(state="answered", sip_status=200)
        elif st["status"] == "ended":
            legs["A"].update(state="ended", reason="BYE")
            legs["B"].update(state="ended", reason="BYE")
            st["cause"] = {"code": "normal", "sip_status": None, "reason": "caller hung up",
                           "description": "the call ended normally"}
            st["charges"] = {"A": "0.02", "B": "0.10", "total": "0.12", "currency": "USD"}
        if index + 1 < len(PROGRESS):
            self._schedule(cb_id, index + 1)

    def is_open(self, cb_id: str) -> bool:
        """Whether the callback is in progress."""
        st = self.statuses.get(cb_id)
        return st is not None and st["status"] not in FINAL_STATUSES

    def get_status(self, callback_id):
        """A copy of the status dict, or None."""
        st = self.statuses.get(callback_id)
        return defer.succeed(None if st is None else {**st, "legs": {k: dict(v) for k, v in
                                                                     st["legs"].items()}})

    def stop(self) -> None:
        """Cancel every pending step (tests end with no delayed calls)."""
        for call in self._calls:
            if call.active():
                call.cancel()
