"""A tiny test-only SIP endpoint over UDP on loopback, just enough to set up one media session.

It answers INVITEs (``Answerer``) or places one INVITE (``Caller``) with a plain SDP offering
PCMU/PCMA and telephone-event, so the media tests can run against sipp and baresip without the
real SIP stack. It knows nothing of retransmissions, auth or forking: it is not a UA.
"""

import itertools
import re

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol

_counter = itertools.count(1)


def parse(data: bytes):
    """(first line, headers as list of (name, value), body) of a SIP message."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return lines[0], headers, body


def header(headers, *names):
    """First value of any of the (case-insensitive) header names, or ''."""
    wanted = {n.lower() for n in names}
    for name, value in headers:
        if name.lower() in wanted:
            return value
    return ""


def sdp(port: int, pts=(0, 8), te_pt=101, host="127.0.0.1") -> bytes:
    """A minimal SDP offer/answer."""
    fmts = " ".join(str(p) for p in (*pts, te_pt))
    names = {0: "PCMU", 8: "PCMA"}
    lines = [
        "v=0", f"o=- 1 1 IN IP4 {host}", "s=cbtest", f"c=IN IP4 {host}", "t=0 0",
        f"m=audio {port} RTP/AVP {fmts}",
        *(f"a=rtpmap:{p} {names[p]}/8000" for p in pts),
        f"a=rtpmap:{te_pt} telephone-event/8000", f"a=fmtp:{te_pt} 0-15", "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def sdp_media(body: bytes):
    """(host, port, first payload type, telephone-event pt) of an SDP body."""
    text = body.decode()
    host = re.search(r"^c=IN IP4 (\S+)", text, re.M).group(1)
    m = re.search(r"^m=audio (\d+) RTP/AVP ([\d ]+)", text, re.M)
    te = re.search(r"^a=rtpmap:(\d+) telephone-event", text, re.M)
    return host, int(m.group(1)), int(m.group(2).split()[0]), int(te.group(1)) if te else None


def respond(transport, headers, addr, status=200, body=b"", ctype=None, tag="ans1",
            user="ans"):
    """Answer the request whose ``headers`` came from ``addr`` with ``status`` (and ``body``).

    The To tag is added only when the request had none (RFC 3261 §8.2.6.2: a response inside
    an existing dialog keeps the dialog's tags); ``tag=None`` leaves To as it came."""
    to = header(headers, "To", "t")
    if tag is not None and ";tag=" not in to:
        to += f";tag={tag}"
    reason = {180: "Ringing", 200: "OK"}.get(status, "Response")
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {v}" for n, v in headers if n.lower() in ("via", "v")]
    lines += [
        f"From: {header(headers, 'From', 'f')}", f"To: {to}",
        f"Call-ID: {header(headers, 'Call-ID', 'i')}", f"CSeq: {header(headers, 'CSeq')}",
        f"Contact: <sip:{user}@127.0.0.1:{transport.getHost().port}>",
    ]
    if ctype:
        lines.append(f"Content-Type: {ctype}")
    lines.append(f"Content-Length: {len(body)}")
    transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body, addr)


def respond_ok(transport, headers, addr, body=b"", ctype=None):
    """Answer the request whose ``headers`` came from ``addr`` with 200 OK (and ``body``)."""
    respond(transport, headers, addr, 200, body, ctype)


class Answerer(DatagramProtocol):
    """Answers one INVITE with 200 OK and ``answer_sdp(remote_media)``; acknowledges BYE."""

    def __init__(self, answer_sdp):
        self.answer_sdp = answer_sdp
        self.invited = defer.Deferred()  # fires with the offer's (host, port, pt, te_pt)
        self.bye = defer.Deferred()

    def datagramReceived(self, data, addr):
        first, headers, body = parse(data)
        method = first.split(" ", 1)[0]
        if method == "INVITE":
            media = sdp_media(body)
            respond_ok(self.transport, headers, addr, self.answer_sdp(media), "application/sdp")
            if not self.invited.called:
                self.invited.callback(media)
        elif method in ("BYE", "INFO", "OPTIONS"):
            respond_ok(self.transport, headers, addr)
            if method == "BYE" and not self.bye.called:
                self.bye.callback(None)

class Caller(DatagramProtocol):
    """Sends one INVITE to ``target`` (host, port); ACKs the 200; can send BYE."""

    def __init__(self, target, offer: bytes, user="phone"):
        self.target, self.offer, self.user = target, offer, user
        self.answered = defer.Deferred()  # fires with the answer's (host, port, pt, te_pt)
        self.call_id = f"cbtest-{next(_counter)}@127.0.0.1"
        self._to_tag = ""

    def _request(self, method, cseq, body=b"", ctype=None):
        host = self.transport.getHost()
        uri = f"sip:{self.user}@{self.target[0]}:{self.target[1]}"
        to = f"<{uri}>" + (f";tag={self._to_tag}" if self._to_tag and method != "INVITE" else "")
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{host.port};branch=z9hG4bK{method}{cseq}x{id(self)}",
            "Max-Forwards: 70", f"From: <sip:cbtest@127.0.0.1>;tag=c{id(self)}", f"To: {to}",
            f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}",
            f"Contact: <sip:cbtest@127.0.0.1:{host.port}>",
        ]
        if ctype:
            lines.append(f"Content-Type: {ctype}")
        lines.append(f"Content-Length: {len(body)}")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body, self.target)

    def invite(self):
        """Send the INVITE; ``answered`` fires on the 200 OK."""
        self._request("INVITE", 1, self.offer, "application/sdp")
        return self.answered

    def bye(self):
        """Hang up."""
        self._request("BYE", 2)

    def datagramReceived(self, data, addr):
        first, headers, body = parse(data)
        if not first.startswith("SIP/2.0 "):
            if first.startswith(("BYE", "OPTIONS")):
                respond_ok(self.transport, headers, addr)
            return
        code = int(first.split()[1])
        if "INVITE" in header(headers, "CSeq") and code == 200 and not self.answered.called:
            tag = re.search(r";tag=([^;\s]+)", header(headers, "To", "t"))
            self._to_tag = tag.group(1) if tag else ""
            self._request("ACK", 1)
            self.answered.callback(sdp_media(body))
