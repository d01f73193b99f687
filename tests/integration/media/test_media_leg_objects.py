"""An open RTP leg holds few objects for the garbage collector, and its mux still reads.

Each object a call keeps alive is visited by the paced collections (cbserver/gcpacer.py;
issue 17 item 2). Opening a leg on the epoll reactor binds two sockets with their mux ports
and table entries, and gives the clock's RTCP timer a due time (cbserver/media/rtcptimer.py).
The mux keeps (socket, protocol) per socket, not two bound methods, and the session keeps its
socket, not a bound ``sendto``. Real loopback sockets.
"""

from __future__ import annotations

import gc
import socket
import time

import pytest
from twisted.internet import reactor

from cbserver.media import mux
from cbserver.media.ports import PortPool
from cbserver.media.session import RtpSession

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mux.available(), reason="the media mux needs Linux epoll"),
]


def test_opening_a_leg_costs_at_most_seven_tracked_objects():
    pool = PortPool(41000, 41999)
    warm = RtpSession(reactor, reactor, pool)  # the shared mux exists before counting
    warm.open()
    sessions = [RtpSession(reactor, reactor, pool) for _ in range(50)]
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for s in sessions:
            s.open()
        per_leg = (len(gc.get_objects()) - before) / len(sessions)
    finally:
        gc.enable()
        for s in [warm, *sessions]:
            s.close()
    # Two sockets, two mux ports, two mux entries: 6. Keeping recvfrom, datagramReceived and
    # sendto bound made it 15 with a DelayedCall (and its three bound methods) per leg for
    # RTCP, 10 without them; the clock's one RTCP timer now has only a due time per leg.
    assert per_leg <= 7


def _pump(m, done) -> None:
    """Run the mux's reader until ``done()`` (or 5 s)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not done():
        m.doRead()
        time.sleep(0.01)
    assert done()


def test_the_mux_still_reads_each_leg_and_survives_garbage_and_strangers():
    pool = PortPool(42000, 42999)
    legs = [RtpSession(reactor, reactor, pool) for _ in range(3)]
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    try:
        for leg in legs:
            leg.open()
            leg.configure(peer.getsockname(), 0, "PCMU")
        m = mux.shared_mux(reactor)
        rtp = bytes([0x80, 0]) + b"\x00\x01" + b"\x00" * 8 + b"\xff" * 160
        for leg in legs:
            # malformed bytes, an empty datagram, the peer's packet, then a stranger's
            peer.sendto(b"\x01\x02", ("127.0.0.1", leg.local_port))
            peer.sendto(b"", ("127.0.0.1", leg.local_port))
        # one reactor turn reads one datagram per ready socket: the malformed ones first
        _pump(m, lambda: all(leg.packets_dropped == 2 for leg in legs))
        for leg in legs:
            peer.sendto(rtp, ("127.0.0.1", leg.local_port))
        _pump(m, lambda: all(leg.packets_received == 1 for leg in legs))
        for leg in legs:
            stranger.sendto(rtp, ("127.0.0.1", leg.local_port))
        _pump(m, lambda: all(leg.strangers_dropped == 1 for leg in legs))
        for leg in legs:
            assert leg.latched and leg.remote == peer.getsockname()
            # dropped: the two malformed datagrams and the stranger's (also counted as such)
            assert (leg.packets_received, leg.packets_dropped, leg.strangers_dropped) == (1, 3, 1)
    finally:
        for leg in legs:
            leg.close()
        peer.close()
        stranger.close()
