"""A minimal SIP trunk on a real UDP socket, in a thread: answers every INVITE at once and
keeps the call up for ever (as a carrier does while it is not told otherwise), answers BYE
and anything else with 200, and records every request with the time it arrived.

For the crash-recovery test: a carrier that never hangs up, and a record of the BYEs that
reached it on the wire (Call-ID, source address, arrival time).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass


@dataclass
class Received:
    """One request as it arrived."""

    method: str
    uri: str
    call_id: str
    cseq: str
    source: tuple[str, int]
    at: float  # time.monotonic()


def _headers(lines: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    compact = {"v": "via", "f": "from", "t": "to", "i": "call-id", "m": "contact", "l": "content-length"}
    for line in lines:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        out.setdefault(compact.get(name, name), []).append(value.strip())
    return out


class SipPeer:
    """See the module docstring. ``start()`` binds and returns the port."""

    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        # Where the SDP says our RTP goes: bound (so no ICMP port unreachable comes back),
        # never read (the kernel drops what does not fit its buffer).
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((host, 0))
        self.requests: list[Received] = []
        self._tags: dict[str, str] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.lock = threading.Lock()

    def start(self) -> int:
        """Start answering."""
        self.sock.settimeout(0.2)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Stop and close the socket."""
        self._stop = True
        self._thread.join(2)
        self.sock.close()
        self.rtp.close()

    def of(self, method: str) -> list[Received]:
        """The requests of ``method`` received so far."""
        with self.lock:
            return [r for r in self.requests if r.method == method]

    def _run(self) -> None:
        while not self._stop:
            try:
                data, source = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                self._handle(data.decode("utf-8", "replace"), source)
            except Exception:  # noqa: BLE001 - a malformed datagram must not stop the trunk
                continue

    def _handle(self, text: str, source) -> None:
        head, _, _body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        parts = lines[0].split()
        if lines[0].startswith("SIP/2.0"):
            return  # a response (to nothing we sent): ignore
        method, uri = parts[0], parts[1]
        h = _headers(lines[1:])
        call_id = h.get("call-id", [""])[0]
        with self.lock:
            self.requests.append(Received(method, uri, call_id, h.get("cseq", [""])[0], source,
                                          time.monotonic()))
        if method == "ACK":
            return
        tag = self._tags.setdefault(call_id, f"peer{len(self._tags) + 1}")
        to = h.get("to", [""])[0]
        if method == "INVITE" and ";tag=" not in to:
            to = f"{to};tag={tag}"
        body = ""
        extra = []
        if method == "INVITE":
            rtp_port = self.rtp.getsockname()[1]
            body = (f"v=0\r\no=peer 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\n"
                    f"t=0 0\r\nm=audio {rtp_port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
                    f"a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
            extra = [f"Contact: <sip:peer@{self.host}:{self.port}>", "Content-Type: application/sdp"]
        out = ["SIP/2.0 200 OK"]
        out += [f"Via: {v}" for v in h.get("via", [])]
        out += [f"From: {h.get('from', [''])[0]}", f"To: {to}", f"Call-ID: {call_id}",
                f"CSeq: {h.get('cseq', [''])[0]}"]
        out += extra
        out.append(f"Content-Length: {len(body.encode())}")
        self.sock.sendto(("\r\n".join(out) + "\r\n\r\n" + body).encode(), source)
