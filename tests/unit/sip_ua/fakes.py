"""Fakes shared by the SIP UA unit tests."""

from zope.interface import implementer

from cbserver.sip.message import Headers, Request, Response, parse_message
from cbserver.sip.transport import ISipTransport, TransportError, response_destination


@implementer(ISipTransport)
class FakeTransport:
    """Records what would go on the wire; re-parses it so tests see real bytes."""

    name = "UDP"

    def __init__(self, reliable=False, host="127.0.0.1", port=5070):
        self.reliable = reliable
        self.host = host
        self.port = port
        self.sent = []  # (message, destination)
        self.fail = False

    def send_request(self, request, destination):
        if self.fail:
            raise TransportError("boom")
        self.sent.append((parse_message(request.serialize()), destination))

    def send_response(self, response):
        if self.fail:
            raise TransportError("boom")
        self.sent.append((parse_message(response.serialize()), response_destination(response)))

    def requests(self, method=None):
        return [m for m, _ in self.sent if isinstance(m, Request) and method in (None, m.method)]

    def responses(self, status=None):
        return [m for m, _ in self.sent if isinstance(m, Response) and status in (None, m.status)]


def request(
    method="INVITE",
    branch="z9hG4bKabc",
    cseq=1,
    to_tag=None,
    call_id="c1@x",
    via_host="127.0.0.1",
    via_port=5080,
    uri="sip:100@127.0.0.1",
    body=b"",
):
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP {via_host}:{via_port};branch={branch}")
    h.add("Max-Forwards", "70")
    h.add("From", "<sip:a@127.0.0.1>;tag=ft")
    h.add("To", "<sip:100@127.0.0.1>" + (f";tag={to_tag}" if to_tag else ""))
    h.add("Call-ID", call_id)
    h.add("CSeq", f"{cseq} {method}")
    return Request(method, uri, h, body)


def response_to(req, status, to_tag="tt", body=b""):
    from cbserver.sip.message import make_response

    r = make_response(req, status, None, to_tag=to_tag if status > 100 else None)
    r.body = body
    return parse_message(r.serialize())
