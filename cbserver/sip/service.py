"""A Twisted ``Service`` running the SIP stack: a UDP (or TCP) listener plus the user agent.

Nothing happens in the constructor; ``startService`` binds the port (port 0 picks a free
one, which is then written into Via and Contact) and builds the UA; ``stopService`` ends every
call (CANCEL/BYE, bounded by the UA's stop timeout) and then closes the port.
"""

from __future__ import annotations

import dataclasses

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred

from cbserver.logs import Logger
from cbserver.sip.transport import SipUdpProtocol
from cbserver.sip.transport_tcp import SipTcpTransport
from cbserver.sip.ua import UAConfig, UserAgent

__all__ = ["SipService"]

log = Logger()


# Bytes of SIP datagrams read per turn of the reactor (a few messages; see startService).
SIP_READ_PER_TURN = 8 * 1024


class SipService(Service):
    """Owns the UDP port and the :class:`UserAgent`; ``ua`` exists once started."""

    name = "sip"

    def __init__(
        self,
        config: UAConfig,
        clock,
        *,
        listen_address: str | None = None,
        listen_port: int | None = None,
        locator=None,
        transport: str = "udp",
        wrap_tcp_factory=None,
    ) -> None:
        """``clock`` is the reactor (``IReactorTime``, ``IReactorUDP``, ``IReactorTCP``);
        ``transport`` is ``"udp"`` or ``"tcp"``; ``wrap_tcp_factory`` (optional) wraps the TCP
        listener's factory (the server's connection caps and idle timeout)."""
        if transport not in ("udp", "tcp"):
            raise ValueError(f"unknown SIP transport {transport!r}")
        self.transport_name = transport
        self.config = config
        self.clock = clock
        self.listen_address = listen_address or config.public_address
        self.listen_port = config.public_port if listen_port is None else listen_port
        self.locator = locator
        self.wrap_tcp_factory = wrap_tcp_factory or (lambda factory: factory)
        self.protocol: SipUdpProtocol | SipTcpTransport | None = None
        self.port = None
        self.ua: UserAgent | None = None

    def startService(self) -> None:  # noqa: N802 - Twisted API
        """Bind the port and create the user agent."""
        super().startService()
        if self.transport_name == "udp":
            self.protocol = SipUdpProtocol(None, self.config.public_address, self.config.public_port)
            self.port = self.clock.listenUDP(
                self.listen_port, self.protocol, interface=self.listen_address, maxPacketSize=65535
            )
            # Twisted reads up to 256 KB of datagrams in one turn of the reactor: under load a
            # burst of a few hundred SIP messages was handled back to back (15 ms and more),
            # while web requests and timers waited. A few messages per turn, then the others.
            self.port.maxThroughput = SIP_READ_PER_TURN
        else:
            self.protocol = SipTcpTransport(
                self.clock, None, self.config.public_address, self.config.public_port,
                bind_address=self.listen_address,
            )
            self.port = self.clock.listenTCP(
                self.listen_port, self.wrap_tcp_factory(self.protocol.factory()),
                interface=self.listen_address
            )
        config = self.config
        if config.public_port == 0:
            # A free port was asked for: advertise the one we got.
            bound = self.port.getHost().port
            config = dataclasses.replace(config, public_port=bound)
            self.protocol.port = bound
        self.ua = UserAgent(self.protocol, self.clock, config, self.locator)
        self.protocol.sink = self.ua.sink
        log.info(
            "SIP listening on {host}:{port}/{transport}",
            transport=self.transport_name,
            host=self.listen_address,
            port=self.port.getHost().port,
        )

    def stopService(self) -> Deferred:  # noqa: N802 - Twisted API
        """End every call, then close the port."""
        super().stopService()
        if self.ua is None:
            return maybeDeferred(lambda: None)
        d = self.ua.stop()

        def close(_):
            self.ua.layer.stop()
            if self.protocol is not None:
                self.protocol.sink = None
                if isinstance(self.protocol, SipTcpTransport):
                    self.protocol.close()
            return self.port.stopListening() if self.port is not None else None

        d.addCallback(close)
        return d
