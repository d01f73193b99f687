"""Sends each RFC 4475 torture message to a running SipService; prints what came back (JSON).

Meant to run inside a network namespace the test creates (``ip netns exec``): the messages'
Vias name documentation hosts, so no packet may be able to leave the machine. The service
listens on 127.0.0.1:5080; responses are routed to ``received`` (127.0.0.1) and the Via port,
so this runner listens on the ports the Vias name. After every message an OPTIONS probe must
still get its 200.
"""

import json
import re
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater

from cbserver.sip.message import Response, SipParseError, parse_message
from cbserver.sip.service import SipService
from cbserver.sip.ua import UAConfig

SERVER = ("127.0.0.1", 5080)
LISTEN_PORTS = (5060, 5050, 5070)
PROBE = (
    "OPTIONS sip:cbserver@127.0.0.1:5080 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKprobe{n}\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p{n}\r\nTo: <sip:cbserver@127.0.0.1>\r\n"
    "Call-ID: probe{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)
CALL_ID_RE = re.compile(rb"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.I | re.M)


class Catcher(DatagramProtocol):
    """Collects (port, status, Call-ID, headers of interest) of every datagram it gets."""

    def __init__(self, port, seen):
        self.port, self.seen = port, seen

    def datagramReceived(self, data, addr):  # noqa: N802
        try:
            msg = parse_message(data)
        except SipParseError:
            self.seen.append({"port": self.port, "unparseable": True})
            return
        if isinstance(msg, Response):
            self.seen.append({
                "port": self.port, "status": msg.status, "call_id": msg.headers.get("Call-ID"),
                "unsupported": msg.headers.get("Unsupported"),
            })  # fmt: skip


async def run(datadir: Path) -> dict:
    config = UAConfig(
        public_address="127.0.0.1", public_port=SERVER[1], trunk_host="127.0.0.1",
        trunk_port=5999, from_domain="cb.test", username="cbserver", password="x",
        session_expires=0, keepalive_interval=0,
    )  # fmt: skip
    service = SipService(config, reactor)
    service.startService()
    seen: list = []
    ports = [reactor.listenUDP(p, Catcher(p, seen), interface="127.0.0.1") for p in LISTEN_PORTS]
    sender = ports[0]  # 127.0.0.1:5060: the source address of every message
    results = {}
    for n, path in enumerate(sorted(datadir.glob("*.dat"))):
        data = path.read_bytes()
        m = CALL_ID_RE.search(data)
        call_id = m.group(1).decode("latin-1") if m else None
        seen.clear()
        sender.write(data, SERVER)
        await deferLater(reactor, 0.3, lambda: None)
        got = [s for s in seen if s.get("call_id") in (call_id, None) or "unparseable" in s]
        seen.clear()
        sender.write(PROBE.format(n=n).encode(), SERVER)
        await deferLater(reactor, 0.2, lambda: None)
        alive = any(s.get("call_id") == f"probe{n}@127.0.0.1" and s.get("status") == 200
                    for s in seen)  # fmt: skip
        results[path.name] = {"responses": got, "alive_after": alive}
    for p in ports:
        await p.stopListening()
    await service.stopService()
    return results


def main():
    d = Deferred.fromCoroutine(run(Path(sys.argv[1])))
    out = {}

    def done(result):
        out["result"] = result
        reactor.stop()

    def failed(f):
        out["error"] = f.getTraceback()
        reactor.stop()

    d.addCallbacks(done, failed)
    reactor.run()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
