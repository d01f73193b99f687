"""Unit tests for cbserver.sip.locate (RFC 3263) against a fake DNS resolver: no network."""

import random
from collections import Counter

import pytest
from twisted.internet import defer
from twisted.internet.interfaces import IResolver
from twisted.names import common, dns
from twisted.names import error as dns_error
from twisted.names.dns import RRHeader
from twisted.names.error import DNSNameError
from zope.interface.verify import verifyObject

from cbserver.sip.locate import LocateError, ServerLocator, Target, order_srv


class FakeResolver(common.ResolverBase):
    """An IResolver answering from a table; unknown names are NXDOMAIN."""

    def __init__(self, answers=None, additional=None, fail=None):
        super().__init__()
        self.answers = answers or {}
        self.additional = additional or {}
        self.fail = fail or {}
        self.queries = []

    def _lookup(self, name, cls, type, timeout):
        key = (name.decode(), type)
        self.queries.append(key)
        if key in self.fail:
            return defer.fail(self.fail[key])
        if key not in self.answers:
            return defer.fail(DNSNameError(name))
        return defer.succeed((self.answers[key], [], self.additional.get(key, [])))


def a(name, ip):
    return RRHeader(name, dns.A, payload=dns.Record_A(ip))


def aaaa(name, ip):
    return RRHeader(name, dns.AAAA, payload=dns.Record_AAAA(ip))


def srv(name, priority, weight, port, target):
    return RRHeader(name, dns.SRV, payload=dns.Record_SRV(priority, weight, port, target))


def naptr(name, order, pref, service, replacement, flags=b"s"):
    record = dns.Record_NAPTR(order, pref, flags, service, b"", replacement)
    return RRHeader(name, dns.NAPTR, payload=record)


def run(locator, uri):
    """The result of an already-fired Deferred (the fake resolver answers synchronously)."""
    results = []
    d = locator.locate(uri)
    d.addBoth(results.append)
    assert results, "locate did not finish"
    if isinstance(results[0], Exception) or hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def test_fake_resolver_is_an_iresolver():
    assert verifyObject(IResolver, FakeResolver())


def test_ip_literal_short_circuits_dns():
    resolver = FakeResolver()
    locator = ServerLocator(resolver)
    assert run(locator, "sip:+15551234@192.0.2.7") == [Target("UDP", "192.0.2.7", 5060)]
    assert run(locator, "sip:[2001:db8::1]:5070;transport=tcp") == [
        Target("TCP", "2001:db8::1", 5070)
    ]
    assert run(locator, "sips:192.0.2.7") == [Target("TLS", "192.0.2.7", 5061)]
    assert run(locator, "192.0.2.8:5080") == [Target("UDP", "192.0.2.8", 5080)]
    assert resolver.queries == []


def test_explicit_port_uses_address_records_only():
    resolver = FakeResolver({("trunk.example.net", dns.A): [a("trunk.example.net", "192.0.2.1")]})
    targets = run(ServerLocator(resolver), "sip:trunk.example.net:5080")
    assert targets == [Target("UDP", "192.0.2.1", 5080)]
    assert all(t in (dns.A, dns.AAAA) for _, t in resolver.queries)


def test_naptr_then_srv_then_addresses_in_order():
    resolver = FakeResolver(
        {
            ("example.net", dns.NAPTR): [
                naptr("example.net", 20, 10, b"SIP+D2T", b"_sip._tcp.example.net"),
                naptr("example.net", 10, 10, b"SIP+D2U", b"_sip._udp.example.net"),
                naptr("example.net", 5, 10, b"SIPS+D2T", b"_sips._tcp.example.net"),
                naptr("example.net", 1, 10, b"SIP+D2U", b"!^.*$!sip:x@y!", flags=b"u"),
            ],
            ("_sip._udp.example.net", dns.SRV): [
                srv("_sip._udp.example.net", 20, 0, 5062, b"b.example.net"),
                srv("_sip._udp.example.net", 10, 0, 5060, b"a.example.net"),
            ],
            ("_sip._tcp.example.net", dns.SRV): [
                srv("_sip._tcp.example.net", 10, 0, 5060, b"a.example.net"),
            ],
            ("a.example.net", dns.A): [a("a.example.net", "192.0.2.1")],
            ("a.example.net", dns.AAAA): [aaaa("a.example.net", "2001:db8::1")],
            ("b.example.net", dns.A): [a("b.example.net", "192.0.2.2")],
        }
    )
    targets = run(ServerLocator(resolver), "sip:example.net")
    assert targets == [
        Target("UDP", "192.0.2.1", 5060),
        Target("UDP", "2001:db8::1", 5060),
        Target("UDP", "192.0.2.2", 5062),
        Target("TCP", "192.0.2.1", 5060),
        Target("TCP", "2001:db8::1", 5060),
    ]


def test_srv_without_naptr_and_glue_records():
    resolver = FakeResolver(
        answers={
            ("_sip._udp.example.org", dns.SRV): [
                srv("_sip._udp.example.org", 0, 0, 5070, b"sbc.example.org")
            ],
        },
        additional={("_sip._udp.example.org", dns.SRV): [a("sbc.example.org", "198.51.100.9")]},
    )
    locator = ServerLocator(resolver, transports=("UDP",), families=("A",))
    assert run(locator, "sip:example.org") == [Target("UDP", "198.51.100.9", 5070)]
    assert ("sbc.example.org", dns.A) not in resolver.queries  # glue used, no extra query


def test_no_naptr_no_srv_falls_back_to_udp_5060():
    resolver = FakeResolver({("pbx.example.com", dns.A): [a("pbx.example.com", "203.0.113.4")]})
    assert run(ServerLocator(resolver), "sip:pbx.example.com") == [
        Target("UDP", "203.0.113.4", 5060)
    ]


def test_transport_param_selects_the_srv_name():
    resolver = FakeResolver(
        {
            ("_sip._tcp.example.com", dns.SRV): [
                srv("_sip._tcp.example.com", 0, 0, 5090, b"t.example.com")
            ],
            ("t.example.com", dns.A): [a("t.example.com", "192.0.2.30")],
        }
    )
    assert run(ServerLocator(resolver), "sip:example.com;transport=tcp") == [
        Target("TCP", "192.0.2.30", 5090)
    ]


def test_srv_dot_target_means_no_service():
    resolver = FakeResolver(
        {
            ("_sip._udp.example.com", dns.SRV): [srv("_sip._udp.example.com", 0, 0, 0, b".")],
            ("example.com", dns.A): [a("example.com", "192.0.2.40")],
        }
    )
    locator = ServerLocator(resolver, transports=("UDP",))
    assert run(locator, "sip:example.com") == [Target("UDP", "192.0.2.40", 5060)]


def test_timeouts_count_as_no_records():
    resolver = FakeResolver(
        {("example.com", dns.A): [a("example.com", "192.0.2.50")]},
        fail={("example.com", dns.NAPTR): dns_error.DNSQueryTimeoutError("example.com")},
    )
    assert run(ServerLocator(resolver), "sip:example.com")[0].host == "192.0.2.50"


def test_nothing_found_is_locate_error():
    with pytest.raises(LocateError):
        run(ServerLocator(FakeResolver()), "sip:nowhere.example")


@pytest.mark.parametrize("uri", ["tel:+15551234", "sip:bad host", "mailto:x@example.com"])
def test_unlocatable_uris_are_locate_error_without_dns(uri):
    resolver = FakeResolver()
    with pytest.raises(LocateError):
        run(ServerLocator(resolver), uri)
    assert resolver.queries == []


def test_bare_host_and_port_is_a_sip_uri():
    resolver = FakeResolver({("pbx.example.com", dns.A): [a("pbx.example.com", "203.0.113.4")]})
    assert run(ServerLocator(resolver), "pbx.example.com:5099") == [
        Target("UDP", "203.0.113.4", 5099)
    ]


def test_order_srv_priority_first_then_weight_proportional():
    records = [
        dns.Record_SRV(20, 0, 1, b"backup"),
        dns.Record_SRV(10, 90, 1, b"heavy"),
        dns.Record_SRV(10, 10, 1, b"light"),
        dns.Record_SRV(10, 0, 1, b"zero"),
    ]
    rng = random.Random(1)
    firsts = Counter()
    for _ in range(2000):
        ordered = order_srv(records, rng)
        names = [r.target.name for r in ordered]
        assert names[-1] == b"backup"  # RFC 2782: lower priority value always first
        assert sorted(names[:3]) == [b"heavy", b"light", b"zero"]
        firsts[names[0]] += 1
    # Weight 90 of 100 should win first place about 90% of the time.
    assert 0.85 < firsts[b"heavy"] / 2000 < 0.95
    assert firsts[b"zero"] < 60
