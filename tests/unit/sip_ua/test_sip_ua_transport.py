"""UDP transport: parsing, Via stamping and response routing (RFC 3261 18, RFC 3581)."""

import pytest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cbserver.sip.message import make_response, parse_message, parse_via
from cbserver.sip.transport import (
    IMessageSink,
    ISipTransport,
    SipUdpProtocol,
    TransportError,
    response_destination,
)
from tests.unit.sip_ua.fakes import request


class FakeDatagramTransport:
    def __init__(self):
        self.written = []

    def write(self, data, addr):
        self.written.append((data, addr))


@implementer(IMessageSink)
class Sink:
    def __init__(self, explode=False):
        self.requests, self.responses, self.explode = [], [], explode

    def request_received(self, request, source):
        if self.explode:
            raise RuntimeError("bug in the TU")
        self.requests.append((request, source))

    def response_received(self, response, source):
        self.responses.append((response, source))

    def destination_failed(self, destination, error):
        self.failed = (destination, error)


def proto(sink=None):
    p = SipUdpProtocol(sink if sink is not None else Sink(), "127.0.0.1", 5070)
    p.transport = FakeDatagramTransport()
    return p


def test_protocol_provides_transport_interface():
    assert verifyObject(ISipTransport, proto())
    assert verifyObject(IMessageSink, Sink())


def test_request_gets_received_and_rport_when_asked():
    p = proto()
    raw = request("OPTIONS").serialize().replace(b";branch=", b";rport;branch=")
    p.datagramReceived(raw, ("127.0.0.9", 40000))
    req, src = p.sink.requests[0]
    via = parse_via(req.headers.get("Via"))
    assert via.params["received"] == "127.0.0.9"
    assert via.params["rport"] == "40000"
    assert src == ("127.0.0.9", 40000)


def test_received_only_when_sent_by_differs():
    p = proto()
    p.datagramReceived(request("OPTIONS").serialize(), ("127.0.0.1", 5080))
    via = parse_via(p.sink.requests[0][0].headers.get("Via"))
    assert "received" not in via.params
    p.datagramReceived(request("OPTIONS", via_host="pbx.example.com").serialize(), ("127.0.0.2", 5080))
    via = parse_via(p.sink.requests[1][0].headers.get("Via"))
    assert via.params["received"] == "127.0.0.2"


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\xff garbage",
        b"INVITE\r\n\r\n",
        b"SIP/2.0 999 What\r\n\r\n",
        b"\r\n\r\n" * 3,
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: ???\r\n\r\n",
    ],
)
def test_garbage_never_raises_and_is_not_delivered(data):
    p = proto()
    p.datagramReceived(data, ("127.0.0.1", 5080))
    assert p.sink.requests == [] and p.sink.responses == []


def test_bad_request_that_can_be_routed_gets_400_to_its_source():
    p = proto()
    raw = request("OPTIONS").serialize().replace(b"Content-Length: 0", b"Content-Length: 50")
    p.datagramReceived(raw, ("127.0.0.1", 5099))
    assert p.sink.requests == []
    data, addr = p.transport.written[0]
    resp = parse_message(data)
    assert resp.status == 400 and addr == ("127.0.0.1", 5099)


def test_request_missing_call_id_still_gets_400():
    p = proto()
    raw = request("OPTIONS").serialize().replace(b"Call-ID: c1@x\r\n", b"")
    p.datagramReceived(raw, ("127.0.0.1", 5080))
    assert p.sink.requests == []
    data, addr = p.transport.written[0]
    assert parse_message(data).status == 400 and addr == ("127.0.0.1", 5080)


def test_request_with_unusable_via_is_dropped():
    p = proto()
    raw = (
        request("OPTIONS")
        .serialize()
        .replace(b"Call-ID: c1@x\r\n", b"")
        .replace(b"Via: SIP/2.0/UDP 127.0.0.1:5080", b"Via: garbage")
    )
    p.datagramReceived(raw, ("127.0.0.1", 5080))
    assert p.sink.requests == [] and p.transport.written == []


def test_oversized_datagram_is_dropped():
    p = SipUdpProtocol(Sink(), "127.0.0.1", 5070, max_size=1000)
    p.transport = FakeDatagramTransport()
    p.datagramReceived(request("OPTIONS", body=b"x" * 2000).serialize(), ("127.0.0.1", 5080))
    assert p.sink.requests == [] and p.dropped == 1


def test_sink_bug_does_not_escape_datagram_received():
    p = proto(Sink(explode=True))
    p.datagramReceived(request("OPTIONS").serialize(), ("127.0.0.1", 5080))
    assert p.dropped == 1


def test_responses_are_delivered():
    p = proto()
    resp = make_response(request("OPTIONS"), 200, None, to_tag="t")
    p.datagramReceived(resp.serialize(), ("127.0.0.1", 5080))
    assert p.sink.responses[0][0].status == 200


def test_response_routing_prefers_received_and_rport():
    req = request("OPTIONS")
    req.headers.set("Via", "SIP/2.0/UDP host.invalid:5080;branch=z9hG4bKx;received=127.0.0.3;rport=4000")
    assert response_destination(make_response(req, 200)) == ("127.0.0.3", 4000)
    req.headers.set("Via", "SIP/2.0/UDP 127.0.0.4;branch=z9hG4bKx")
    assert response_destination(make_response(req, 200)) == ("127.0.0.4", 5060)


def test_response_routing_never_resolves_a_host_name():
    req = request("OPTIONS", via_host="pbx.example.com")
    with pytest.raises(TransportError):
        response_destination(make_response(req, 200))


def test_send_response_writes_to_via_destination_and_refuses_oversize():
    p = proto()
    req = request("OPTIONS", via_port=6000)
    p.send_response(make_response(req, 200))
    assert p.transport.written[0][1] == ("127.0.0.1", 6000)
    big = make_response(req, 200)
    big.body = b"x" * 70000
    with pytest.raises(TransportError):
        p.send_response(big)


def test_send_without_listening_port_raises_transport_error():
    p = SipUdpProtocol(Sink(), "127.0.0.1", 5070)
    with pytest.raises(TransportError):
        p.send_request(request("OPTIONS"), ("127.0.0.1", 5080))


# Issue 14 item 8: responses go to the request's source, never to maddr or a forged received.

@pytest.mark.parametrize("params", [
    ";maddr=127.0.0.5", ";maddr=127.0.0.5;rport", ";received=127.0.0.5", ";received=127.0.0.5;rport=9",
    ";rport=9", "",
])
def test_responses_go_to_the_datagrams_source_whatever_the_via_says(params):
    p = proto()
    req = request("OPTIONS", via_host="127.0.0.5", via_port=5060)
    req.headers.set("Via", str(req.headers.get("Via")) + params)
    p.datagramReceived(req.serialize(), ("127.0.0.9", 40000))
    (got, _src), = p.sink.requests
    assert response_destination(make_response(got, 200)) == ("127.0.0.9", 40000)
    via = parse_via(got.headers.get("Via"))
    assert via.params["received"] == "127.0.0.9" and via.params["rport"] == "40000"


def test_a_request_from_its_sent_by_keeps_its_via_unchanged():
    p = proto()
    raw = request("OPTIONS", via_host="127.0.0.1", via_port=5080).serialize()
    p.datagramReceived(raw, ("127.0.0.1", 5080))
    (got, _src), = p.sink.requests
    assert "received" not in got.headers.get("Via") and "rport" not in got.headers.get("Via")
