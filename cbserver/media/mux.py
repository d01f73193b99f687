"""One reactor reader for every RTP socket: the receive-side twin of the media clock.

Also the two RTP socket wrappers a session binds: ``MuxPort`` (a socket in the mux) and
``OneReadPort`` (a Twisted UDP port reading one datagram per event, where there is no mux).

With a Twisted port per RTP socket, every packet costs a reactor dispatch (logging context,
call wrappers) on top of the read itself. ``MediaMux`` keeps the RTP sockets in an epoll set of
its own and registers only that set's file descriptor with the reactor; when any socket is
readable the reactor calls ``doRead`` once, and the mux reads one datagram from each ready
socket in a tight loop. Level-triggered, so sockets left over after ``max_events`` are served
on the next reactor turn. Linux only (``select.epoll``); elsewhere sessions use plain ports.
"""

import select
import socket
import weakref

from twisted.internet import udp
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorFDSet

from cbserver.logs import Logger, RateLimitedLog

_EVENTS = getattr(select, "EPOLLIN", 1)
_log = Logger()
# A handler bug hit by every packet of a flood gives a few tracebacks a minute, not one each.
_limited = RateLimitedLog(_log, lines=3, interval=60.0)


def available() -> bool:
    """True where the mux can run (Linux epoll)."""
    return hasattr(select, "epoll")


class MediaMux:
    """A set of non-blocking datagram sockets served by one reactor reader."""

    log = Logger()

    def __init__(self, reactor: IReactorFDSet, max_events: int = 512):
        self._reactor = reactor
        self.max_events = max_events
        self._epoll = None
        self._handlers: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self._handlers)

    def add(self, sock, protocol) -> None:
        """Serve ``sock``: each datagram goes to ``protocol.datagramReceived(data, addr)``."""
        if self._epoll is None:
            self._epoll = select.epoll()
            self._reactor.addReader(self)
        fd = sock.fileno()
        self._epoll.register(fd, _EVENTS)
        # The socket and the protocol, not their bound methods: two objects fewer per socket
        # for the garbage collector to visit for a call's life, and calling a method on an
        # object costs no allocation (issue 17, docs/bench-callbacks.md "Session 9").
        self._handlers[fd] = (sock, protocol)

    def remove(self, sock) -> None:
        """Stop serving ``sock`` (before it is closed)."""
        fd = sock.fileno()
        if self._handlers.pop(fd, None) is not None and self._epoll is not None:
            self._epoll.unregister(fd)
        if not self._handlers and self._epoll is not None:
            self._reactor.removeReader(self)
            self._epoll.close()
            self._epoll = None

    # IReadDescriptor

    def fileno(self) -> int:
        """The inner epoll set's descriptor (readable when any socket is)."""
        return self._epoll.fileno() if self._epoll is not None else -1

    def doRead(self) -> None:
        """Read one datagram from every ready socket."""
        if self._epoll is None:
            return
        handlers = self._handlers
        for fd, _event in self._epoll.poll(0, self.max_events):
            handler = handlers.get(fd)
            if handler is None:
                continue
            sock, protocol = handler
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                continue
            try:
                protocol.datagramReceived(data, addr)
            except Exception:  # one bad packet must not stop every other call's media
                _limited.failure("rtp-handler", "rtp packet handling failed")

    def connectionLost(self, reason) -> None:
        """The reactor dropped us (shutdown)."""
        self._handlers.clear()

    def logPrefix(self) -> str:
        """Name used by Twisted's logging context."""
        return "MediaMux"


_shared: "weakref.WeakKeyDictionary[object, MediaMux]" = weakref.WeakKeyDictionary()


def shared_mux(reactor) -> "MediaMux | None":
    """The process's mux for ``reactor`` when it is an epoll reactor, else None.

    Like the media clock, one mux serves every session of the process, so a session built
    without an explicit mux still gets the cheap receive path on the usual Linux reactor.
    """
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # not Linux
        return None
    if not available() or not isinstance(reactor, EPollReactor):
        return None
    mux = _shared.get(reactor)
    if mux is None:
        mux = _shared[reactor] = MediaMux(reactor)
    return mux


class MuxPort:
    """An RTP socket served by a MediaMux, with the bits of a Twisted port the session uses."""

    def __init__(self, mux, sock):
        self._mux = mux
        self.socket = sock

    @classmethod
    def bind(cls, mux, protocol, host: str, port: int) -> "MuxPort":
        """Bind a non-blocking UDP socket and register it with the mux."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((host, port))
        except OSError as e:
            sock.close()
            raise CannotListenError(host, port, e) from e
        mux.add(sock, protocol)
        return cls(mux, sock)

    def write(self, data: bytes, addr) -> None:
        """Send one datagram."""
        self.socket.sendto(data, addr)

    def stopListening(self) -> None:
        """Leave the mux and close the socket."""
        self._mux.remove(self.socket)
        self.socket.close()


class OneReadPort(udp.Port):
    """A UDP port that reads one datagram per readiness event.

    Twisted's ``Port.doRead`` loops until the socket would block, so every packet costs a
    second ``recvfrom`` that raises EAGAIN. An RTP socket gets one packet per 20 ms, and epoll
    is level-triggered, so reading exactly one datagram per event does the same work for less.
    """

    log = Logger()

    def doRead(self):
        """Read one datagram and hand it to the protocol."""
        try:
            data, addr = self.socket.recvfrom(2048)
        except (BlockingIOError, InterruptedError, ConnectionRefusedError):
            return
        try:
            self.protocol.datagramReceived(data, addr)
        except Exception:  # a bad packet must not close the port (the reactor would)
            _limited.failure("rtp-handler", "rtp packet handling failed")
