"""Wiring of the real SIP stack (UDP transport + transaction layer + UserAgent) for the
torture server. Only the composition done here lives in the test tree; every behaviour under
test is cbserver.sip's own."""

from cbserver.sip.transport import SipUdpProtocol
from cbserver.sip.ua import UAConfig, UserAgent


def listen_ua(reactor, host: str, port: int, t1: float = 0.5):
    """Start a UserAgent listening on UDP ``host:port``; return the listening port."""
    transport = SipUdpProtocol(None, host, port)
    config = UAConfig(
        public_address=host,
        public_port=port,
        trunk_host="127.0.0.1",  # never called: the torture suite places no calls
        trunk_port=5060,
        from_domain=host,
        username="cbserver",
        password="unused",
        t1=t1,
        t2=max(4.0, t1),
    )
    ua = UserAgent(transport, reactor, config)
    transport.sink = ua.sink
    return reactor.listenUDP(port, transport, interface=host)
