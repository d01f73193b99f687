"""SipService on the real reactor: binds, answers OPTIONS over UDP, survives garbage, stops."""

import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from cbserver.sip.message import parse_message, parse_via
from tests.integration.sip_sipp.sipp_harness import make_service

pytestmark = pytest.mark.integration

OPTIONS = (
    "OPTIONS sip:cbserver@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKprobe{n};rport\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:cbserver@127.0.0.1>\r\n"
    "Call-ID: probe{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


async def receive(sock, timeout=5.0):
    waited = 0.0
    while waited < timeout:
        try:
            return sock.recvfrom(65535)
        except BlockingIOError:
            await deferLater(reactor, 0.02, lambda: None)
            waited += 0.02
    raise AssertionError("no answer from the SIP service")


@pytest_twisted.ensureDeferred
async def test_service_answers_options_after_garbage_and_stops_cleanly():
    service = make_service(trunk_port=9)  # no calls are placed: the trunk is never used
    service.startService()
    port = service.port.getHost().port
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    try:
        for junk in (b"\x00" * 50, b"INVITE\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n", b"x" * 70000):
            try:
                sock.sendto(junk, ("127.0.0.1", port))
            except OSError:
                pass  # the 70000-byte one may be refused by the kernel itself
        sock.sendto(OPTIONS.format(n=1).encode(), ("127.0.0.1", port))
        data, _ = await receive(sock)
        resp = parse_message(data)
        assert resp.status == 200
        via = parse_via(resp.headers.get("Via"))
        # RFC 3581: answered to the packet's source port, not the Via's port 9
        assert via.params["rport"] == str(sock.getsockname()[1])
        assert via.params["received"] == "127.0.0.1"
    finally:
        sock.close()
        await service.stopService()
    assert not service.port.connected
