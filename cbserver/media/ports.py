"""The RTP port pool: even ports from a configured range, RTCP on the odd port above each.

RFC 3550 11: RTP uses an even port and RTCP the next (odd) one. The pool only hands out
numbers; the session binds them, and gives a pair back with ``release`` when it closes (or
when the OS refused to bind it: the pair then goes to the back of the queue, and the session
asks for the next one).
"""

from collections import deque


class PortsExhausted(RuntimeError):
    """Every RTP port pair of the range is in use."""


class PortPool:
    """Even RTP ports in ``[low, high]``; each allocation reserves ``port`` and ``port + 1``."""

    def __init__(self, low: int, high: int):
        if low < 1024 or high > 65535:
            raise ValueError(f"RTP port range {low}-{high} must lie within 1024-65535")
        first = low + (low % 2)  # RFC 3550 11: RTP on even ports
        if first + 1 > high:
            raise ValueError(f"RTP port range {low}-{high} holds no even/odd pair")
        self.low, self.high = low, high
        # Least recently used first, so a just-released port is not reused at once and late
        # packets of an ended call do not reach the next one.
        self._free = deque(range(first, high, 2))
        self._used: set[int] = set()

    @property
    def capacity(self) -> int:
        """Number of pairs the range holds."""
        return len(self._free) + len(self._used)

    @property
    def in_use(self) -> int:
        """Number of pairs handed out."""
        return len(self._used)

    def allocate(self) -> int:
        """Reserve and return an even RTP port (RTCP is the returned port + 1)."""
        if not self._free:
            raise PortsExhausted(f"no free RTP port pair in {self.low}-{self.high}")
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a pair back; releasing a port not handed out is an error."""
        try:
            self._used.remove(port)
        except KeyError:
            raise ValueError(f"RTP port {port} was not allocated") from None
        self._free.append(port)
