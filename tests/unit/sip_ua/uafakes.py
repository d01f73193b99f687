"""A fake far end (the trunk) for UA unit tests: builds its responses and requests."""

from zope.interface import implementer

from cbserver.sip.message import Headers, Request, make_response, parse_message
from cbserver.sip.ua import ICallListener, UAConfig

TRUNK = ("127.0.0.1", 5080)
SDP_OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
)
SDP_ANSWER = SDP_OFFER.replace(b"4000", b"6000")


def config(**kw):
    base = dict(
        public_address="127.0.0.1",
        public_port=5070,
        trunk_host="127.0.0.1",
        trunk_port=5080,
        from_domain="cb.example",
        username="cbuser",
        password="pw",
        keepalive_interval=0,
        session_expires=0,
    )
    base.update(kw)
    return UAConfig(**base)


@implementer(ICallListener)
class Listener:
    def __init__(self):
        self.events = []

    def call_trying(self, call):
        self.events.append(("trying",))

    def call_ringing(self, call, early_sdp):
        self.events.append(("ringing", early_sdp))

    def call_answered(self, call, remote_sdp):
        self.events.append(("answered", remote_sdp))

    def call_failed(self, call, status, reason):
        self.events.append(("failed", status, reason))

    def call_ended(self, call, by_remote, reason):
        self.events.append(("ended", by_remote, reason))

    def call_info(self, call, content_type, body):
        self.events.append(("info", content_type, body))

    def call_offer(self, call, remote_sdp):
        self.events.append(("offer", remote_sdp))

    def names(self):
        return [e[0] for e in self.events]


class FarEnd:
    """Plays the trunk against a UserAgent fed directly through its transaction layer."""

    def __init__(self, ua, transport):
        self.ua = ua
        self.transport = transport
        self.cseq = 100
        self.branch_n = 0

    def last(self, method):
        reqs = self.transport.requests(method)
        assert reqs, f"no {method} sent"
        return reqs[-1]

    def respond(self, req, status, body=b"", headers=()):
        resp = make_response(req, status, None, to_tag="far" if status > 100 else None)
        if 200 <= status < 300 and req.method == "INVITE":
            resp.headers.add("Contact", "<sip:far@127.0.0.1:5080>")
        for name, value in headers:
            resp.headers.add(name, value)
        if body:
            resp.headers.add("Content-Type", "application/sdp")
            resp.body = body
        resp = parse_message(resp.serialize())
        self.ua.sink.response_received(resp, TRUNK)
        return resp

    def request(self, call, method, body=b"", headers=(), cseq=None, branch=None):
        """An in-dialog request from the far end."""
        invite = self.last("INVITE")
        h = Headers()
        self.branch_n += 1
        h.add("Via", f"SIP/2.0/UDP 127.0.0.1:5080;branch={branch or f'z9hG4bKfar{self.branch_n}'}")
        h.add("Max-Forwards", "70")
        h.add("From", f"<{invite.uri}>;tag=far")
        h.add("To", invite.headers.get("From"))
        h.add("Call-ID", call.call_id)
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        h.add("CSeq", f"{cseq} {method}")
        h.add("Contact", "<sip:far@127.0.0.1:5080>")
        for name, value in headers:
            h.add(name, value)
        if body:
            h.add("Content-Type", "application/sdp")
        req = parse_message(Request(method, "sip:cbuser@127.0.0.1:5070", h, body).serialize())
        self.ua.sink.request_received(req, TRUNK)
        return req

    def responses_to(self, method):
        return [r for r in self.transport.responses() if r.headers.get("CSeq").endswith(method)]


def out_of_dialog(method, uri="sip:cbuser@127.0.0.1:5070", headers=(), branch="z9hG4bKood"):
    h = Headers()
    h.add("Via", f"SIP/2.0/UDP 127.0.0.1:5080;branch={branch}")
    h.add("Max-Forwards", "70")
    h.add("From", "<sip:probe@127.0.0.1>;tag=p1")
    h.add("To", "<sip:cbuser@127.0.0.1>")
    h.add("Call-ID", "ood-" + branch)
    h.add("CSeq", f"1 {method}")
    for name, value in headers:
        h.add(name, value)
    return Request(method, uri, h, b"")
