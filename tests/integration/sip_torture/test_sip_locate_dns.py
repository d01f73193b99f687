"""RFC 3263 location through the real twisted.names client, over real DNS packets.

A twisted.names DNS server on 127.0.0.1 (random port) answers from an in-memory table; the
locator's resolver is ``twisted.names.client.Resolver`` pointed at it, so NAPTR, SRV and
A/AAAA records travel as real UDP DNS messages on loopback, and nothing else is asked.
"""

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.names import client, common, dns, server
from twisted.names.error import DNSNameError

from cbserver.sip.locate import LocateError, ServerLocator, Target

pytestmark = pytest.mark.integration


class TableResolver(common.ResolverBase):
    """The zone the DNS server serves: (name, type) -> answer records."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def _lookup(self, name, cls, type, timeout):
        records = self.table.get((name.decode().lower(), type))
        if records is None:
            return defer.fail(DNSNameError(name))
        return defer.succeed((records, [], []))


def _rr(name, type_, payload):
    return dns.RRHeader(name, type_, ttl=60, payload=payload, auth=True)


ZONE = {
    ("trunk.example.net", dns.NAPTR): [
        _rr("trunk.example.net", dns.NAPTR,
            dns.Record_NAPTR(10, 50, b"s", b"SIP+D2U", b"", b"_sip._udp.trunk.example.net")),
        _rr("trunk.example.net", dns.NAPTR,
            dns.Record_NAPTR(20, 50, b"s", b"SIP+D2T", b"", b"_sip._tcp.trunk.example.net")),
    ],
    ("_sip._udp.trunk.example.net", dns.SRV): [
        _rr("_sip._udp.trunk.example.net", dns.SRV, dns.Record_SRV(10, 0, 5060, b"a.example.net")),
        _rr("_sip._udp.trunk.example.net", dns.SRV, dns.Record_SRV(20, 0, 5070, b"b.example.net")),
    ],
    ("_sip._tcp.trunk.example.net", dns.SRV): [
        _rr("_sip._tcp.trunk.example.net", dns.SRV, dns.Record_SRV(10, 0, 5060, b"a.example.net")),
    ],
    ("a.example.net", dns.A): [_rr("a.example.net", dns.A, dns.Record_A("192.0.2.1"))],
    ("b.example.net", dns.A): [_rr("b.example.net", dns.A, dns.Record_A("192.0.2.2"))],
    ("b.example.net", dns.AAAA): [_rr("b.example.net", dns.AAAA, dns.Record_AAAA("2001:db8::2"))],
}  # fmt: skip


@pytest.fixture
def dns_server():
    factory = server.DNSServerFactory(clients=[TableResolver(ZONE)])
    port = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    yield port.getHost().port
    port.stopListening()


def _locator(port):
    resolver = client.Resolver(servers=[("127.0.0.1", port)], reactor=reactor)
    return ServerLocator(resolver, transports=("UDP", "TCP"))


@pytest_twisted.ensureDeferred
async def test_naptr_srv_a_aaaa_over_real_dns(dns_server):
    locator = _locator(dns_server)
    targets = await locator.locate("sip:trunk.example.net")
    assert targets == [
        Target("UDP", "192.0.2.1", 5060),
        Target("UDP", "192.0.2.2", 5070),
        Target("UDP", "2001:db8::2", 5070),
        Target("TCP", "192.0.2.1", 5060),
    ]


@pytest_twisted.ensureDeferred
async def test_unknown_name_is_locate_error_over_real_dns(dns_server):
    locator = _locator(dns_server)
    with pytest.raises(LocateError):
        await locator.locate("sip:nowhere.example.net")
