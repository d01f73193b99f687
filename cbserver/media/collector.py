"""Digit collection logic (pure, no Twisted): timeouts, maximum length and terminator.

The shell (``cbserver.media.listen``) feeds digits and the current time and arms timers for
``deadline``. The first-digit timeout runs from ``arm()`` (normally the end of the prompt),
the inter-digit timeout from the last digit. A digit that arrives before ``arm()`` is
accepted: that is barge-in, and the caller stops the prompt when ``barged_in`` turns true.
"""

import enum
from dataclasses import dataclass


class CollectOutcome(enum.Enum):
    """Why a collection ended."""

    TERMINATOR = "terminator"
    MAX_DIGITS = "max_digits"
    INTER_DIGIT_TIMEOUT = "inter_digit_timeout"
    FIRST_DIGIT_TIMEOUT = "first_digit_timeout"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class CollectResult:
    """The digits collected (terminator not included) and why collection ended."""

    digits: str
    outcome: CollectOutcome


class DigitCollector:
    """One collection of up to ``max_digits`` digits."""

    def __init__(
        self, max_digits: int, first_digit_timeout: float, inter_digit_timeout: float,
        terminator: str | None = "#",
    ):
        if max_digits < 1:
            raise ValueError("max_digits must be at least 1")
        self.max_digits = max_digits
        self.first_digit_timeout = first_digit_timeout
        self.inter_digit_timeout = inter_digit_timeout
        self.terminator = terminator
        self.digits = ""
        self.deadline: float | None = None
        self.result: CollectResult | None = None
        self.barged_in = False

    def arm(self, now: float) -> None:
        """Start the first-digit timeout (if no digit came yet)."""
        if self.result is None and not self.barged_in:
            self.deadline = now + self.first_digit_timeout

    def digit(self, d: str, now: float) -> CollectResult | None:
        """Accept one digit; return the result when it ends the collection."""
        if self.result is not None:
            return self.result
        self.barged_in = True
        if self.terminator is not None and d == self.terminator:
            return self._finish(CollectOutcome.TERMINATOR)
        self.digits += d
        if len(self.digits) >= self.max_digits:
            return self._finish(CollectOutcome.MAX_DIGITS)
        self.deadline = now + self.inter_digit_timeout
        return None

    def expire(self, now: float) -> CollectResult | None:
        """Check the deadline; return the result when it has passed."""
        if self.result is not None:
            return self.result
        if self.deadline is None or now < self.deadline:
            return None
        if self.digits:
            return self._finish(CollectOutcome.INTER_DIGIT_TIMEOUT)
        return self._finish(CollectOutcome.FIRST_DIGIT_TIMEOUT)

    def cancel(self) -> CollectResult:
        """End now with what was collected."""
        if self.result is None:
            self._finish(CollectOutcome.CANCELLED)
        return self.result

    def _finish(self, outcome: CollectOutcome) -> CollectResult:
        self.deadline = None
        self.result = CollectResult(self.digits, outcome)
        return self.result
