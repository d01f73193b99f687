"""What a callback session shows: its status dict, its immutable snapshot, its caller ids.

``SessionView`` is mixed into ``CallbackSession``; it only reads the session's fields (and
tells ``on_change`` that they changed), it decides nothing.
"""

from __future__ import annotations

import datetime as dt

from cbserver.callback.api import CallbackSnapshot


class SessionView:
    """Status reporting for ``CallbackSession`` (see the module docstring)."""

    def _datetime(self, seconds: float | None) -> dt.datetime | None:
        """Clock seconds as an aware UTC datetime."""
        return None if seconds is None else dt.datetime.fromtimestamp(seconds, dt.UTC)

    def _set_status(self, status: str) -> None:
        """Record a new status and tell the service."""
        self.status = status
        self._changed()

    def _changed(self) -> None:
        """Something the page shows changed."""
        self.updated_at = self.clock.seconds()
        if self.ctx.on_change is not None:
            self.ctx.on_change(self)

    def caller_id_for(self, leg: str) -> str:
        """The calling number shown on a leg (RFC 3325 P-Asserted-Identity too).

        With ``use_account_id_as_ani`` (manual: "show the account ID (i.e. PIN) as the
        calling number") both legs show the account ID once there is one: legA, so the person
        sees which account calls them back, and legB. Otherwise, and for a Hosted legA (nobody
        is identified before it), legA shows the instance's number (the helpdesk) when it has
        one, and legB the person's own number.
        """
        if self.app.use_account_id_as_ani and self.account_id:
            return self.account_id
        if leg == "A":
            return self.app.second_number or "cbserver"
        return self.request.phone

    def as_dict(self) -> dict:
        """The status of this callback (the ``ICallbackService.get_status`` shape)."""
        return {
            "id": self.id, "application": self.app.name, "mode": self.request.mode,
            # The node running it ([server] node), for the operator a user reads the page to;
            # only the name: no host, address or process (docs/web.md "Status").
            "node": self.ctx.node, "status": self.status,
            "legs": {"A": self.a.as_dict(), "B": self.b.as_dict()},
            "cause": self.cause, "charges": self.charges,
            "created_at": self._datetime(self.created_at).isoformat(timespec="milliseconds"),
            "updated_at": self._datetime(self.updated_at).isoformat(timespec="milliseconds"),
        }

    def snapshot(self) -> CallbackSnapshot:
        """The status now, immutable: what the status writer stores."""
        return CallbackSnapshot(id=self.id, application=self.app.name, mode=self.request.mode,
                                account_id=self.account_id, phone=self.request.phone,
                                destination=self.b.number or None, status=self.status,
                                state=self.as_dict())
