"""Which numbers an instance may dial: E.164's length and the operator's prefix lists.

Issue 14, item 4: toll fraud goes to premium-rate and satellite numbers, and a number longer
than E.164 allows (ITU-T E.164 section 6: at most 15 digits, country code included) is never a
real subscriber. ``DestinationPolicy.check`` runs in the authorizer, before anything is
dialled, on both numbers of a callback (legA, the number called back; legB, the destination)
and on every number keyed in the Hosted IVR; the authorizer turns ``DestinationRefused`` into
its refusal ``destination_not_allowed`` (HTTP 403 with that code).
"""

from __future__ import annotations

from dataclasses import dataclass

E164_MAX_DIGITS = 15
REASON = "destination_not_allowed"


class DestinationRefused(ValueError):
    """The number may not be dialled from this instance (too long, denied, not allowed)."""

    def __init__(self, number: str, why: str):
        super().__init__(f"number {number}: {why}")
        self.reason = REASON
        self.number = number
        self.why = why


@dataclass(frozen=True)
class DestinationPolicy:
    """An instance's rules: ``deny`` prefixes always refuse; a non-empty ``allow`` list
    refuses every number that starts with none of its prefixes."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    max_digits: int = E164_MAX_DIGITS

    def check(self, number: str) -> None:
        """Raise ``DestinationRefused`` unless ``number`` (digits, as rated) may be dialled."""
        digits = sum(c.isdigit() for c in number)
        if digits > self.max_digits:
            raise DestinationRefused(number, f"{digits} digits, more than E.164's {self.max_digits}")
        denied = next((p for p in self.deny if number.startswith(p)), None)
        if denied is not None:
            raise DestinationRefused(number, f"prefix {denied} is denied")
        if self.allow and not any(number.startswith(p) for p in self.allow):
            raise DestinationRefused(number, "no allowed prefix matches")
