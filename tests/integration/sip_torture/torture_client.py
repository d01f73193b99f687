"""Client side of the torture suite; runs inside the test's network namespace.

For each RFC 4475 file: send it as one UDP datagram, collect what comes back, send it again
(a retransmission), collect again, ACK a non-2xx final answer to an INVITE, then send an
OPTIONS probe and wait for its 200. Prints one JSON object: file name -> observations.

    python -m tests.integration.sip_torture.torture_client --server 192.0.2.10:5060
"""

import argparse
import json
import re
import select
import socket
import sys
import time

from cbserver.sip.message import SipParseError, new_branch, parse_message, parse_via
from tests.unit.sip_msg.rfc4475 import load, readme_expectations

_CALL_ID_RE = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)")
_VIA_PORT_RE = re.compile(rb"(?im)^(?:via|v)[ \t]*:[^\r\n]*?:(\d{2,5})\b")


def via_ports(names) -> set[int]:
    """Every sent-by port the torture files' Via headers name (5060 when none is given).

    Without ``rport`` a response goes to the Via's port (RFC 3261 18.2.2), so the client
    listens on all of them."""
    ports = {5060}
    for name in names:
        for m in _VIA_PORT_RE.finditer(load(name)):
            ports.add(int(m.group(1)))
    return ports


class Peer:
    """UDP sockets talking to the server under test: sends from port 5060, listens on every
    port a torture Via names."""

    def __init__(self, bind: str, server: tuple[str, int], ports=(5060,)):
        self.server = server
        self.socks = []
        for port in sorted(ports):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((bind, port))
            self.socks.append(sock)
        self.sock = self.socks[0] if 5060 not in ports else next(
            s for s in self.socks if s.getsockname()[1] == 5060
        )

    def send(self, data: bytes) -> None:
        """One datagram to the server."""
        self.sock.sendto(data, self.server)

    def _receive(self, timeout: float) -> bytes | None:
        ready, _, _ = select.select(self.socks, [], [], timeout)
        if not ready:
            return None
        data, _ = ready[0].recvfrom(65535)
        return data

    def collect(self, call_id: str | None, wait: float, linger: float = 0.15) -> list:
        """Responses for ``call_id`` until a final one (plus ``linger``) or ``wait`` passes."""
        got = []
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            data = self._receive(left)
            if data is None:
                return got
            try:
                msg = parse_message(data)
            except SipParseError as exc:
                got.append({"unparseable": exc.reason})
                continue
            if call_id is not None and msg.headers.get("Call-ID") != call_id:
                continue  # a late retransmission for an earlier file
            if not hasattr(msg, "status"):
                got.append({"request": msg.method})
                continue
            got.append({
                "status": msg.status,
                "to": msg.headers.get("To"),
                "cseq": msg.headers.get("CSeq"),
                "via": msg.headers.get_all("Via"),
                "unsupported": msg.headers.get_all("Unsupported"),
                "allow": msg.headers.get_all("Allow"),
                "wire": data.decode("utf-8", "replace"),
            })  # fmt: skip
            if msg.status >= 200:
                deadline = min(deadline, time.monotonic() + linger)


def _finals(responses) -> list:
    return [r for r in responses if r.get("status", 0) >= 200]


def _ack_for(request_bytes: bytes, final: dict) -> bytes | None:
    """RFC 3261 17.1.1.3: the ACK a client sends for a non-2xx final answer to INVITE."""
    try:
        req = parse_message(request_bytes)
    except SipParseError:
        return None
    if getattr(req, "method", None) != "INVITE" or final["status"] < 300:
        return None
    vias = req.headers.get_all("Via")
    number = (req.headers.get("CSeq") or "0").split()[0]
    lines = [
        f"ACK {req.uri} SIP/2.0", f"Via: {vias[0]}" if vias else "",
        f"From: {req.headers.get('From')}", f"To: {final['to']}",
        f"Call-ID: {req.headers.get('Call-ID')}", f"CSeq: {number} ACK", "Max-Forwards: 70",
        "Content-Length: 0",
    ]  # fmt: skip
    return ("\r\n".join(line for line in lines if line) + "\r\n\r\n").encode()


def probe(peer: Peer, bind: str, index: int) -> int | None:
    """OPTIONS to the server; the status of its final answer, or None after 2 s."""
    call_id = f"probe-{index}-{new_branch()}@{bind}"
    host, port = peer.server
    peer.send(
        (
            f"OPTIONS sip:probe@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {bind}:{peer.sock.getsockname()[1]};branch={new_branch()};rport\r\n"
            f"From: <sip:prober@{bind}>;tag=p{index}\r\nTo: <sip:probe@{host}>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    finals = _finals(peer.collect(call_id, 2.0, linger=0))
    return finals[0]["status"] if finals else None


def _server_txn_key(data: bytes):
    """RFC 3261 17.2.3: branch, sent-by and method identify a server transaction."""
    try:
        msg = parse_message(data)
        via = parse_via(msg.headers.get("Via"))
    except (SipParseError, TypeError):
        return None
    method = getattr(msg, "method", None)
    method = "INVITE" if method == "ACK" else method
    return (via.branch or "").lower(), via.host.lower(), via.port, method


def run(peer: Peer, bind: str, names, wait: float, txn_lifetime: float = 0.0) -> dict:
    """Observations for each file in ``names``.

    Several RFC 4475 files share a Via branch, sent-by and method, so to a conforming
    server they are retransmissions of one transaction (RFC 3261 17.2.3) while it lives.
    Before sending such a file, wait until the earlier transaction has ended
    (``txn_lifetime`` = 64*T1 of the server, Timer J / H)."""
    out = {}
    last_sent: dict = {}
    for index, name in enumerate(names):
        data = load(name)
        key = _server_txn_key(data)
        if key is not None and key in last_sent:
            time.sleep(max(0.0, last_sent[key] + txn_lifetime - time.monotonic()))
        m = _CALL_ID_RE.search(data)
        call_id = m.group(1).decode("utf-8", "surrogateescape") if m else None
        peer.send(data)
        first = peer.collect(call_id, wait)
        peer.send(data)  # the same datagram again: a retransmission
        again = peer.collect(call_id, wait)
        finals = _finals(first + again)
        if finals:
            ack = _ack_for(data, finals[0])
            if ack:
                peer.send(ack)
        if key is not None:
            last_sent[key] = time.monotonic()
        out[name] = {"first": first, "again": again, "probe": probe(peer, bind, index)}
    return out


def main() -> None:
    """Parse arguments, run every file (or the ones named), print JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True, help="host:port of the server under test")
    ap.add_argument("--bind", default="192.0.2.1")
    ap.add_argument("--wait", type=float, default=0.6, help="seconds to wait for an answer")
    ap.add_argument("--txn-lifetime", type=float, default=0.0,
                    help="server transaction lifetime (64*T1) between colliding files")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    host, _, port = args.server.rpartition(":")
    names = args.names or sorted(readme_expectations())
    peer = Peer(args.bind, (host, int(port)), via_ports(names))
    json.dump(run(peer, args.bind, names, args.wait, args.txn_lifetime), sys.stdout)


if __name__ == "__main__":
    main()
