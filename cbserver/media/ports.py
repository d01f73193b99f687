"""The RTP port pool: even ports from a configured range, RTCP on the odd port above each.

RFC 3550 11: RTP uses an even port and RTCP the next (odd) one. The pool only hands out
numbers; the session binds them, and gives a pair back with ``release`` when it closes (or
when the OS refused to bind it, and the session asks for another).

Ports are drawn at random from the free ones (issue 14, docs/security.md "1. RTP hijack"): a
stranger cannot tell the next call's port from the last one's (RFC 3550 11 leaves the choice to
the implementation; a predictable port is the first step of the RTP hijack). A released pair
rests in a short queue before it can be drawn again, so late packets of an ended call do not
reach the next call on the same port.
"""

import random
from collections import deque


class PortsExhausted(RuntimeError):
    """Every RTP port pair of the range is in use."""


class PortPool:
    """Even RTP ports in ``[low, high]``; each allocation reserves ``port`` and ``port + 1``."""

    def __init__(self, low: int, high: int, rng: random.Random | None = None, rest: int | None = None):
        """``rng``: the random source (a ``SystemRandom`` unless a test gives one); ``rest``:
        how many released pairs wait before being drawn again (half the range, at most 64)."""
        if low < 1024 or high > 65535:
            raise ValueError(f"RTP port range {low}-{high} must lie within 1024-65535")
        first = low + (low % 2)  # RFC 3550 11: RTP on even ports
        if first + 1 > high:
            raise ValueError(f"RTP port range {low}-{high} holds no even/odd pair")
        self.low, self.high = low, high
        self._rng = rng or random.SystemRandom()
        self._free: list[int] = list(range(first, high, 2))
        self._resting: deque[int] = deque()
        self._rest = min(64, len(self._free) // 2) if rest is None else rest
        self._used: set[int] = set()

    @property
    def capacity(self) -> int:
        """Number of pairs the range holds."""
        return len(self._free) + len(self._resting) + len(self._used)

    @property
    def in_use(self) -> int:
        """Number of pairs handed out."""
        return len(self._used)

    def allocate(self) -> int:
        """Reserve and return a random free even RTP port (RTCP is the returned port + 1)."""
        if not self._free:
            if not self._resting:
                raise PortsExhausted(f"no free RTP port pair in {self.low}-{self.high}")
            self._free.append(self._resting.popleft())  # least recently released first
        # Swap the drawn port with the last one and pop: O(1) per allocation.
        i = self._rng.randrange(len(self._free))
        free = self._free
        free[i], free[-1] = free[-1], free[i]
        port = free.pop()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a pair back; releasing a port not handed out is an error."""
        try:
            self._used.remove(port)
        except KeyError:
            raise ValueError(f"RTP port {port} was not allocated") from None
        self._resting.append(port)
        while len(self._resting) > self._rest:
            self._free.append(self._resting.popleft())
