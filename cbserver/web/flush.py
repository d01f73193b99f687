"""Send an answer to the socket when it is finished, not on the reactor's next turn.

Twisted's TCP transport only buffers what a protocol writes and sends it when the reactor
next finds the socket writable: after every other ready connection of the current turn has
been handled, the timed calls have run and ``epoll_wait`` has returned again. Under load a
turn carries tens of requests (and now and then a garbage collection), so an answer that
took a fraction of a millisecond to make waited one or two whole turns in the buffer; at
twice the sustained rate that wait was most of a refusal's latency (docs/bench-callbacks.md,
"Session 8"). ``flush_now`` does at once what the reactor would do on that turn: one
non-blocking ``send`` of the buffered bytes; what the kernel does not take stays buffered
for the reactor as before.

``FlushingRequest`` is the public site's request: every answer is flushed when it finishes.
``QuietSite`` is its site: Twisted's ``Site`` without the access-log line of a request marked
``unlogged`` (a busy refusal past its interval's log lines, ``cbserver.web.busyfront``).
"""

from __future__ import annotations

from twisted.internet.tcp import Connection
from twisted.web.server import Site

from cbserver.connlimit import DeadlineRequest

_MAX_WRAPPERS = 4  # connection limiter, TLS, ...: a few protocol wrappers at most


def tcp_transport(request):
    """The TCP connection beneath ``request``'s channel (through wrappers), or None."""
    transport = getattr(getattr(request, "channel", None), "transport", None)
    for _ in range(_MAX_WRAPPERS):
        if transport is None or isinstance(transport, Connection):
            return transport
        transport = getattr(transport, "transport", None)
    return None


def flush_now(tcp) -> None:
    """Write what the connection ``tcp`` (``tcp_transport``'s answer; None: nothing to do)
    has buffered now, as the reactor's next turn would.

    Only while the connection is open both ways: a connection being closed is left to the
    reactor, whose write handler closes it once its buffer is sent (called from here, the
    close would be reported to nobody). A failed ``send`` leaves the bytes buffered and the
    socket registered for writing, so the reactor meets the same error and closes the
    connection as it always did.
    """
    if tcp is None or not tcp.connected or tcp.disconnecting or tcp._writeDisconnecting:
        return
    if not tcp._tempDataLen and len(tcp.dataBuffer) <= tcp.offset:
        return  # nothing buffered
    tcp.doWrite()


class FlushingRequest(DeadlineRequest):
    """``DeadlineRequest`` whose answer goes to the socket as soon as it is finished."""

    def finish(self):
        """Finish as ``DeadlineRequest`` does, then send the answer now (``flush_now``)."""
        tcp = tcp_transport(self)  # finishing lets go of the channel
        result = super().finish()
        flush_now(tcp)
        return result


class QuietSite(Site):
    """``Site`` whose access log skips requests marked ``unlogged`` (see the module doc)."""

    def log(self, request):
        """The access-log line of ``request``, unless it is marked ``unlogged``."""
        if getattr(request, "unlogged", False):
            return
        super().log(request)
