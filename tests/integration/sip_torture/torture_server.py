"""Server side of the torture suite; runs inside the test's network namespace.

``--stack validate`` is a minimal UDP responder made only of cbserver.sip.message and
cbserver.sip.validate: it is NOT the user agent. It answers what validate says, OPTIONS with
200, INVITE with 100 then 480, BYE/CANCEL with 481, and repeats its last answer to a
retransmission. ``--stack ua`` runs the real stack (cbserver.sip.ua) when it exists.

Prints ``READY <host> <port> <stack>`` once listening, then serves until killed.
"""

import argparse
import sys

from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from cbserver.sip.message import Request, make_response, new_tag, parse_via
from cbserver.sip.validate import ACCEPT, RESPOND, check_message

log = Logger()
METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"})


def _destination(response, source):
    """RFC 3261 18.2.2 with RFC 3581 4: the source address (the ``received`` a server
    stamps), and the source port only when the top Via asked for ``rport``."""
    via = parse_via(response.headers.get("Via"))
    port = source[1] if "rport" in via.params else (via.port or 5060)
    return source[0], port


class ValidateResponder(DatagramProtocol):
    """Answers from validate.py's verdicts; a stand-in, not the UA."""

    def __init__(self):
        self.answered: dict[bytes, list[tuple[bytes, tuple[str, int]]]] = {}

    def datagramReceived(self, data, addr):  # noqa: N802
        """Answer one datagram; a retransmission gets the same bytes again."""
        if data in self.answered:
            for wire, dest in self.answered[data]:
                self.transport.write(wire, dest)
            return
        verdict = check_message(data, allowed_methods=METHODS)
        replies = []
        if verdict.action == RESPOND:
            replies.append(verdict.response)
        elif verdict.action == ACCEPT and isinstance(verdict.message, Request):
            replies.extend(self._answer(verdict.message))
        wires = [(r.serialize(), _destination(r, addr)) for r in replies]
        self.answered[data] = wires
        for wire, dest in wires:
            self.transport.write(wire, dest)

    def _answer(self, request):
        tag = new_tag()
        if request.method == "OPTIONS":
            resp = make_response(request, 200, to_tag=tag)
            resp.headers.add("Allow", ", ".join(sorted(METHODS)))
            resp.headers.add("Accept", "application/sdp")
            return [resp]
        if request.method == "INVITE":
            return [make_response(request, 100), make_response(request, 480, to_tag=tag)]
        if request.method in ("BYE", "CANCEL"):
            return [make_response(request, 481, to_tag=tag)]
        return []


def main() -> None:
    """Listen and serve until killed."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="192.0.2.10")
    ap.add_argument("--port", type=int, default=5060)
    ap.add_argument("--stack", choices=("validate", "ua"), default="validate")
    ap.add_argument("--t1", type=float, default=0.5, help="RFC 3261 T1 for the ua stack")
    args = ap.parse_args()
    if args.stack == "ua":
        from tests.integration.sip_torture.ua_stack import listen_ua

        port = listen_ua(reactor, args.host, args.port, t1=args.t1)
    else:
        port = reactor.listenUDP(args.port, ValidateResponder(), interface=args.host)
    print(f"READY {args.host} {port.getHost().port} {args.stack}", flush=True)
    reactor.run()


if __name__ == "__main__":
    sys.exit(main())
