"""MediaMux with real loopback sockets and a recording stand-in for the reactor's FD set."""

import socket

import pytest

from cbserver.media import mux

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not mux.available(), reason="the media mux needs Linux epoll"),
]


class FDSet:
    def __init__(self):
        self.readers = []

    def addReader(self, reader):
        self.readers.append(reader)

    def removeReader(self, reader):
        self.readers.remove(reader)


class Sink:
    def __init__(self, fail=False):
        self.got, self.fail = [], fail

    def datagramReceived(self, data, addr):
        self.got.append((data, addr))
        if self.fail:
            raise RuntimeError("handler bug")


def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def wait_readable(m):
    import select
    select.select([m.fileno()], [], [], 2.0)


def test_one_reader_serves_every_socket_one_datagram_each_per_turn():
    fds = FDSet()
    m = mux.MediaMux(fds)
    socks = [udp() for _ in range(3)]
    sinks = [Sink(), Sink(fail=True), Sink()]
    for s, k in zip(socks, sinks, strict=True):
        m.add(s, k)
    assert fds.readers == [m] and len(m) == 3
    sender = udp()
    for i, s in enumerate(socks):
        for j in range(2):
            sender.sendto(bytes([i, j]), s.getsockname())
    wait_readable(m)
    m.doRead()
    assert [len(k.got) for k in sinks] == [1, 1, 1]  # a failing handler stops nobody else
    m.doRead()
    assert [[d for d, _ in k.got] for k in sinks] == [[b"\0\0", b"\0\1"], [b"\1\0", b"\1\1"],
                                                      [b"\2\0", b"\2\1"]]
    assert sinks[0].got[0][1] == sender.getsockname()
    m.doRead()  # nothing ready: no error
    for s in socks:
        m.remove(s)
        s.close()
    assert fds.readers == [] and m.fileno() == -1
    sender.close()


def test_shared_mux_only_for_the_epoll_reactor():
    assert mux.shared_mux(FDSet()) is None
    from twisted.internet.epollreactor import EPollReactor

    r = EPollReactor()
    try:
        assert mux.shared_mux(r) is mux.shared_mux(r)
    finally:
        r._poller.close()
