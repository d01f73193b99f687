"""What every RFC 3261 transaction shares: named timers, and ending exactly once."""

from __future__ import annotations

from cbserver.namedtimers import NamedTimersMixin


class TransactionBase(NamedTimersMixin):
    """Base of client and server transactions.

    Subclasses set ``state``, ``_timers`` and ``_on_terminated`` (the transaction layer's
    callback that forgets the transaction) in their constructor.
    """

    state: str

    def _terminate(self) -> None:
        """Enter Terminated once: cancel every timer and let the layer forget us."""
        if self.state == "terminated":
            return
        self.state = "terminated"
        self._cancel_all_timers()
        self._on_terminated(self)

    def terminate(self) -> None:
        """Stop at once, cancelling every timer (used when the UA shuts down)."""
        self._terminate()
