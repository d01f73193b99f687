"""Benchmark: SIP messages parsed per second (cbserver.sip.message) against two baselines.

Run from the repository root:  .venv/bin/python bench/bench_sip_parse.py [--seconds N]

Baselines measured in the same run on the same bytes:
- naive: ``bytes.split(b"\\r\\n")`` and a dict filled with ``name: value`` (no validation,
  no compact forms, no folding, no Content-Length) -- a floor for any Python parser;
- twisted: Twisted's RFC 2543 ``twisted.protocols.sip.MessagesParser`` (LineReceiver based).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cbserver.sip.message import parse_message  # noqa: E402
from cbserver.sip.sdp import negotiate  # noqa: E402
from cbserver.sip.validate import check_message  # noqa: E402

SDP = (
    b"v=0\r\no=cbserver 3912894719 3912894719 IN IP4 203.0.113.10\r\ns=-\r\n"
    b"c=IN IP4 203.0.113.10\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:+442071234567@trunk.example.net;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK5f1c9a7e33d04b21;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Callback" <sip:+15551230000@203.0.113.10>;tag=8c3e27f1a0b94d65\r\n'
    b"To: <sip:+442071234567@trunk.example.net;user=phone>\r\n"
    b"Call-ID: 4f2a9c1e8b7d4a3f9e6c5b2a1d0e9f8a@203.0.113.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:cbserver@203.0.113.10:5060>\r\n"
    b"P-Asserted-Identity: <sip:+15551230000@203.0.113.10>\r\n"
    b"Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE\r\n"
    b"Supported: timer\r\n"
    b"User-Agent: cbserver/0.1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SDP)
) + SDP

OK200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK5f1c9a7e33d04b21;rport=5060;"
    b"received=203.0.113.10\r\n"
    b"Record-Route: <sip:198.51.100.7;lr>\r\n"
    b'From: "Callback" <sip:+15551230000@203.0.113.10>;tag=8c3e27f1a0b94d65\r\n'
    b"To: <sip:+442071234567@trunk.example.net;user=phone>;tag=as58f4201b\r\n"
    b"Call-ID: 4f2a9c1e8b7d4a3f9e6c5b2a1d0e9f8a@203.0.113.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:+442071234567@198.51.100.7:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, INFO\r\n"
    b"Server: Trunk/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SDP)
) + SDP


def naive(data: bytes) -> dict:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    return {"start": lines[0], "headers": fields, "body": body}


def parse_and_negotiate(data: bytes):
    return negotiate(parse_message(data).body)


def twisted_parser():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from twisted.protocols import sip as tsip

    def parse(data: bytes):
        out = []
        parser = tsip.MessagesParser(out.append)
        parser.dataReceived(data)
        parser.dataDone()
        return out[0]

    return parse


def rate(func, data: bytes, seconds: float) -> tuple[float, float]:
    """(messages per second, microseconds per message), best of 5 runs."""
    n = 1000
    while True:  # size a batch to about a tenth of the budget
        t0 = time.perf_counter()
        for _ in range(n):
            func(data)
        dt = time.perf_counter() - t0
        if dt > seconds / 10:
            break
        n *= 2
    best = dt / n
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            func(data)
        best = min(best, (time.perf_counter() - t0) / n)
    return 1 / best, best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="rough time budget per row")
    args = ap.parse_args()
    tparse = twisted_parser()
    assert parse_message(INVITE).headers.get("Call-ID") == tparse(INVITE).headers["call-id"][0]
    print(f"python {sys.version.split()[0]}; INVITE {len(INVITE)} bytes, 200 OK {len(OK200)} bytes")
    print(f"{'what':52} {'msgs/s':>10} {'us/msg':>8} {'vs naive':>9} {'vs twisted':>11}")
    for label, data in (("INVITE+SDP", INVITE), ("200 OK+SDP", OK200)):
        base, _ = rate(naive, data, args.seconds)
        tw, _ = rate(tparse, data, args.seconds)
        rows = [
            ("naive split + dict (baseline)", naive),
            ("twisted.protocols.sip.MessagesParser", tparse),
            ("cbserver parse_message", parse_message),
            ("cbserver check_message (parse+validate)", check_message),
        ]
        if label.startswith("INVITE"):
            rows.append(("cbserver parse + SDP negotiate", parse_and_negotiate))
        for name, func in rows:
            per_s, us = rate(func, data, args.seconds)
            print(f"{label + ' ' + name:52} {per_s:10.0f} {us:8.2f} {per_s / base:9.2f} "
                  f"{per_s / tw:11.2f}")


if __name__ == "__main__":
    main()
