"""RFC 3261 timer values (T1, T2, T4 and Timers A-K, plus RFC 6026 L and M), in one place.

Every other module asks a :class:`SipTimers` for its durations, so the config's T1/T2/T4
are the only knobs (RFC 3261 17.1.1.1, table 4 in appendix A).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SipTimers", "TRYING_DELAY"]

# RFC 3261 17.2.1: a server INVITE transaction sends 100 Trying if the TU has not sent a
# provisional response within 200 ms.
TRYING_DELAY = 0.2


@dataclass(frozen=True)
class SipTimers:
    """T1, T2, T4 and the timers derived from them for one transport kind.

    ``reliable`` is True for TCP: the retransmission timers are then not used and the
    "wait for retransmissions" timers (D, I, J, K) are zero (RFC 3261 17.1.1.2, 17.1.2.2,
    17.2.1, 17.2.2).
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    reliable: bool = False

    def for_transport(self, reliable: bool) -> SipTimers:
        """The same T1/T2/T4 for a transport that is (or is not) reliable."""
        return SipTimers(self.t1, self.t2, self.t4, reliable)

    @property
    def A(self) -> float:  # noqa: N802 - RFC name
        """INVITE request retransmit interval, initially T1 (17.1.1.2)."""
        return self.t1

    @property
    def B(self) -> float:  # noqa: N802
        """INVITE transaction timeout, 64*T1 (17.1.1.2)."""
        return 64 * self.t1

    @property
    def D(self) -> float:  # noqa: N802
        """Wait time for response retransmits: >32 s on UDP, 0 on reliable (17.1.1.2)."""
        return 0.0 if self.reliable else max(32.0, 64 * self.t1)

    @property
    def E(self) -> float:  # noqa: N802
        """Non-INVITE request retransmit interval, initially T1 (17.1.2.2)."""
        return self.t1

    @property
    def F(self) -> float:  # noqa: N802
        """Non-INVITE transaction timeout, 64*T1 (17.1.2.2)."""
        return 64 * self.t1

    @property
    def G(self) -> float:  # noqa: N802
        """INVITE response retransmit interval, initially T1 (17.2.1)."""
        return self.t1

    @property
    def H(self) -> float:  # noqa: N802
        """Wait time for ACK receipt, 64*T1 (17.2.1)."""
        return 64 * self.t1

    @property
    def I(self) -> float:  # noqa: E743, N802
        """Wait time for ACK retransmits: T4 on UDP, 0 on reliable (17.2.1)."""
        return 0.0 if self.reliable else self.t4

    @property
    def J(self) -> float:  # noqa: N802
        """Wait time for non-INVITE request retransmits: 64*T1 on UDP, 0 reliable (17.2.2)."""
        return 0.0 if self.reliable else 64 * self.t1

    @property
    def K(self) -> float:  # noqa: N802
        """Wait time for response retransmits: T4 on UDP, 0 on reliable (17.1.2.2)."""
        return 0.0 if self.reliable else self.t4

    @property
    def L(self) -> float:  # noqa: N802
        """Server INVITE Accepted-state lifetime, 64*T1 (RFC 6026 8.7)."""
        return 64 * self.t1

    @property
    def M(self) -> float:  # noqa: N802
        """Client INVITE Accepted-state lifetime, 64*T1 (RFC 6026 8.4)."""
        return 64 * self.t1
