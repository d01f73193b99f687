"""Connection limits: descriptors, connections per client and in total, deadlines.

Anyone who can reach the web endpoints or the SIP TCP listener can open connections and
hold them: 1,100 TLS connections dripping one header line every 20 s, or 3,000 idle SIP TCP
connections, used every descriptor of a process limited to 1,024 (EMFILE) and ``/healthz``
failed for everyone (issue 14 item 7). Four things keep the server answering:

* ``raise_descriptor_limit``: at start-up the soft ``RLIMIT_NOFILE`` is raised to the hard
  one (the most an unprivileged process may have), and the figure logged.
* ``ConnectionLimiter``: connections per client address and in total on one listener. A
  client over its share is refused at once (the socket closed). When the listener is full,
  the newest connection still gets in if its client holds fewer connections than the
  heaviest one: the oldest connection of the heaviest client is closed for it, so many
  addresses holding connections cannot lock a single other client out.
  The total is also bounded by what the process can spare: ``DescriptorBudget`` keeps a
  reserve of descriptors for RTP sockets, database connections and files.
* ``LimitedFactory``'s ``deadline``: a connection must deliver what it owes (for HTTP, a whole
  request, headers and body) within that many seconds of opening or of its previous answer.
  Dripping bytes does not extend it (a slow-loris client): a connection that started a request
  and did not finish it in time is aborted (RST). One that sent no byte of a next request
  is an idle keep-alive connection, and is closed gracefully instead (FIN, TLS close_notify),
  and every byte arriving after that decision is dropped unread, so a request racing the
  close is provably never acted on and the client may send it again on a new connection
  (RFC 9112 9.3.1 and 9.6). Answers carry ``Keep-Alive: timeout=N`` so that clients stop
  reusing a connection before the server closes it.
* ``idle_timeout``: a connection that sends nothing for that long is closed (SIP over TCP;
  any byte, a CRLF keep-alive of RFC 5626 4.4.1 too, counts).
"""

from __future__ import annotations

import resource
from collections import OrderedDict

from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.server import Request
from zope.interface import implementer

from cbserver.logs import Logger

log = Logger()

#: Seconds a gracefully closed connection may take to flush what it still has to send (a
#: client that stopped reading); then it is aborted, so a descriptor is never held forever.
CLOSE_GRACE = 5.0

#: Descriptors kept free besides RTP and the database pool: listening sockets, the log, the
#: xDR spool, templates and prompts being read, TLS files, a DNS lookup.
FIXED_RESERVE = 64


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft descriptor limit to the hard one where allowed; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            log.warn("descriptor limit stays {soft} (hard {hard}): {err}", soft=soft, hard=hard, err=e)
            return soft, soft
        log.info("descriptor limit raised from {before} to {after}", before=soft, after=target)
        return soft, target
    log.info("descriptor limit {soft}", soft=soft)
    return soft, soft


class DescriptorBudget:
    """The descriptors every limited listener together may hold: the process limit less a
    reserve (``reserve``: RTP sockets and the database pool; ``FIXED_RESERVE`` besides)."""

    def __init__(self, limit: int, reserve: int):
        self.reserve = reserve + FIXED_RESERVE
        self.used = 0
        self.set_limit(limit)

    def set_limit(self, limit: int) -> None:
        """The process limit is known (raised at start-up): what connections may use."""
        self.limit = limit
        self.available = max(0, limit - self.reserve)

    def take(self) -> bool:
        """One descriptor for a connection, if the reserve stays whole."""
        if self.used >= self.available:
            return False
        self.used += 1
        return True

    def give_back(self) -> None:
        """A connection closed."""
        self.used -= 1


class ConnectionLimiter:
    """Connections of one listener, per client address and in total (see the module doc)."""

    def __init__(self, name: str, max_total: int, max_per_client: int,
                 budget: DescriptorBudget | None = None):
        self.name = name
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.budget = budget
        self.by_host: dict[str, OrderedDict] = {}
        self.total = 0
        self.refused = 0
        self.evicted = 0

    def admit(self, host: str) -> bool:
        """May a new connection from ``host`` open? Makes room by evicting when it should."""
        held = len(self.by_host.get(host, ()))
        if held >= self.max_per_client:
            return self._refuse(host, "per-client")
        if self.total >= self.max_total or (self.budget is not None and
                                            self.budget.used >= self.budget.available):
            heaviest = max(self.by_host, key=lambda h: len(self.by_host[h]), default=None)
            if heaviest is None or len(self.by_host[heaviest]) <= held + 1:
                return self._refuse(host, "total")
            victim = next(iter(self.by_host[heaviest]))
            self.evicted += 1
            if self.evicted in (1, 10, 100) or self.evicted % 1000 == 0:
                log.warn("{name}: full ({total} connections): closed the oldest of {victim}'s "
                         "{held} connections for a new client ({n} so far)", name=self.name,
                         total=self.total, victim=heaviest, held=len(self.by_host[heaviest]),
                         n=self.evicted)
            self.remove(victim)
            victim.abort()
        return True

    def _refuse(self, host: str, which: str) -> bool:
        self.refused += 1
        # Rate-limited: a flood must not become a flood of log lines.
        if self.refused in (1, 10, 100) or self.refused % 1000 == 0:
            log.warn("{name}: connection from {host} refused ({which} limit; {n} refused so far)",
                     name=self.name, host=host, which=which, n=self.refused)
        return False

    def add(self, proto) -> None:
        """Count an admitted connection."""
        self.by_host.setdefault(proto.host, OrderedDict())[proto] = None
        self.total += 1
        if self.budget is not None:
            self.budget.take()

    def remove(self, proto) -> None:
        """Forget a connection (closed, or evicted); idempotent."""
        conns = self.by_host.get(proto.host)
        if conns is None or proto not in conns:
            return
        del conns[proto]
        if not conns:
            del self.by_host[proto.host]
        self.total -= 1
        if self.budget is not None:
            self.budget.give_back()


class _Refused(Protocol):
    """A connection refused after the accept: closed at once, nothing read or written."""

    def connectionMade(self) -> None:  # noqa: N802 - Twisted API
        """Close at once (an abort: no TLS goodbye owed to a refused client)."""
        self.transport.abortConnection()


class LimitedProtocol(ProtocolWrapper):
    """One admitted connection: counted by its limiter, held to the deadline and idle time."""

    def __init__(self, factory, wrapped, host: str):
        super().__init__(factory, wrapped)
        self.host = host
        self._deadline = None
        self._idle = None
        self._owing = False   # a byte of the request the deadline waits for has arrived
        self._closing = None  # the abort that follows a graceful close, once decided

    def makeConnection(self, transport) -> None:  # noqa: N802 - Twisted API
        """Start the clocks, then let the wrapped protocol see the connection."""
        self._start_deadline()
        self._touch()
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted API
        """Bytes arrived: only the idle clock restarts (the deadline does not). After a graceful
        close was decided they are dropped: the wrapped protocol never sees a request that
        raced the close, so its client can safely send it again."""
        if self._closing is not None:
            return
        if data:
            self._owing = True
        self._touch()
        super().dataReceived(data)

    def request_received(self) -> None:
        """What the deadline waited for arrived (an HTTP request, whole): stop that clock."""
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def answered(self) -> None:
        """An answer went out: the next request is owed within the deadline again."""
        if self.connected:
            self._owing = False
            self._start_deadline()

    def keep_alive_timeout(self) -> float:
        """Seconds an idle keep-alive connection stays open after an answer (0: no limit)."""
        return self.factory.deadline or 0.0

    def _start_deadline(self) -> None:
        seconds = self.factory.deadline
        if seconds:
            if self._deadline is not None and self._deadline.active():
                self._deadline.cancel()
            self._deadline = self.factory.clock.callLater(seconds, self._expired, "deadline")

    def _touch(self) -> None:
        seconds = self.factory.idle_timeout
        if not seconds:
            return
        if self._idle is not None and self._idle.active():
            self._idle.reset(seconds)
        else:
            self._idle = self.factory.clock.callLater(seconds, self._expired, "idle")

    def _expired(self, which: str) -> None:
        if which == "deadline" and not self._owing:
            # Nothing of a next request arrived: an idle keep-alive connection (or one that
            # never spoke), not a slow-loris. Close it the polite way.
            which = "keep-alive"
            self.factory.expired[which] = self.factory.expired.get(which, 0) + 1
            self.close_gracefully()
            return
        self.factory.expired[which] = self.factory.expired.get(which, 0) + 1
        self.abort()

    def close_gracefully(self) -> None:
        """Close after what is queued is sent (FIN); abort if that takes over ``CLOSE_GRACE``."""
        if self._closing is not None:
            return
        self._stop_clocks()
        self._closing = self.factory.clock.callLater(CLOSE_GRACE, self.abort)
        if self.transport is None:
            return
        # An HTTP channel registers itself as its transport's producer for good, and TLS
        # holds a close back until the producer goes (as HTTPChannel.loseConnection does, but
        # the site's protocol is a proxy without it): unregister it first. Idle, nothing
        # more is produced.
        try:
            self.transport.unregisterProducer()
        except RuntimeError:  # none registered; only some transports (test doubles) complain
            pass
        self.transport.loseConnection()

    def abort(self) -> None:
        """Close now (a deadline passed, or evicted for a new client)."""
        self._stop_clocks()
        self._stop_closing()
        if self.transport is not None:
            self.transport.abortConnection()

    def _stop_clocks(self) -> None:
        for call in (self._deadline, self._idle):
            if call is not None and call.active():
                call.cancel()
        self._deadline = self._idle = None

    def _stop_closing(self) -> None:
        if self._closing is not None and self._closing.active():
            self._closing.cancel()

    def connectionLost(self, reason) -> None:  # noqa: N802 - Twisted API
        """Stop the clocks and give the slot back."""
        self._stop_clocks()
        self._stop_closing()
        self.factory.limiter.remove(self)
        super().connectionLost(reason)


@implementer(IProtocolNegotiationFactory)
class LimitedFactory(WrappingFactory):
    """Wraps a listener's factory with a ``ConnectionLimiter``, a deadline and an idle time.

    Under TLS it answers the client's ALPN offer (RFC 7301) for the wrapped factory: Twisted
    asks the factory it wraps in TLS, which is this one, and without an answer it selects no
    protocol, which the TLS library turns into a failed handshake ("internal error" alert) for
    every client that offers ALPN: every browser.

    ``deadline``: seconds a connection has to deliver a request from its opening or its last
    answer (the wrapped protocol's code calls ``request_received``/``answered`` on its
    transport); ``idle_timeout``: seconds without a byte before it is closed (0: neither).
    """

    protocol = LimitedProtocol

    def __init__(self, wrapped, limiter: ConnectionLimiter, clock, deadline: float = 0,
                 idle_timeout: float = 0):
        super().__init__(wrapped)
        self.limiter = limiter
        self.clock = clock
        self.deadline = deadline
        self.idle_timeout = idle_timeout
        self.expired: dict[str, int] = {}

    def buildProtocol(self, addr):  # noqa: N802 - Twisted API
        """An admitted connection's protocol, or one that closes it at once."""
        host = getattr(addr, "host", "") or ""
        if not self.limiter.admit(host):
            refused = _Refused()
            refused.factory = self
            return refused
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        proto = self.protocol(self, wrapped, host)
        self.limiter.add(proto)
        return proto

    def acceptableProtocols(self) -> list[bytes]:  # noqa: N802 - Twisted API
        """The wrapped factory's ALPN protocols (a web ``Site``'s), else HTTP/1.1."""
        inner = IProtocolNegotiationFactory(self.wrappedFactory, None)
        return list(inner.acceptableProtocols()) if inner is not None else [b"http/1.1"]

    # WrappingFactory keeps its own set of protocols; the limiter is the one count here.
    def registerProtocol(self, p) -> None:  # noqa: N802 - Twisted API
        """Not tracked twice (the limiter counts connections)."""

    def unregisterProtocol(self, p) -> None:  # noqa: N802 - Twisted API
        """Not tracked twice (the limiter counts connections)."""


class DeadlineRequest(Request):
    """A web request that tells its connection's ``LimitedProtocol`` when it was received
    whole (the deadline stops) and when it was answered (the next request's starts)."""

    def requestReceived(self, command, path, version):  # noqa: N802 - Twisted API
        """Headers and body are in: stop the connection's deadline, then handle it."""
        transport = getattr(self.channel, "transport", None)
        hook = getattr(transport, "request_received", None)
        if hook is not None:
            hook()
        # How long the connection may then sit idle before the server closes it, for clients
        # that reuse connections (the Keep-Alive header, RFC 2068 19.7.1.1, as browsers and
        # HTTP libraries read it): one that knows stops reusing it in time.
        keep_alive = getattr(transport, "keep_alive_timeout", None)
        seconds = int(keep_alive()) if keep_alive is not None else 0
        if seconds > 0:
            self.responseHeaders.setRawHeaders(b"keep-alive", [b"timeout=%d" % seconds])
        # The Content-Type's form check is cheap for every request class: see
        # cbserver.web.contenttype (installed at start-up).
        return super().requestReceived(command, path, version)

    def finish(self):
        """Answered: a keep-alive connection owes its next request within the deadline."""
        transport = getattr(self.channel, "transport", None)
        result = super().finish()
        hook = getattr(transport, "answered", None)
        if hook is not None:
            hook()
        return result
