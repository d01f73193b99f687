"""SIP over UDP reads a few messages per turn of the reactor, not a whole burst.

Sixty datagrams wait in the real socket's buffer; one read handles at most
``SIP_READ_PER_TURN`` bytes of them (Twisted's own limit, 256 KB, took them all), and the
following turns read the rest: none is lost.
"""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from cbserver.sip.service import SIP_READ_PER_TURN, SipService
from cbserver.sip.ua import UAConfig

pytestmark = pytest.mark.integration

SIZE = 600  # bytes per datagram: a small SIP message


@pytest_twisted.ensureDeferred
async def test_a_burst_of_datagrams_is_read_a_few_per_turn_and_none_is_lost():
    config = UAConfig(public_address="127.0.0.3", public_port=0, trunk_host="127.0.0.2",
                      trunk_port=9, from_domain="cb.test", username="u", password="p",
                      session_expires=0, keepalive_interval=0)
    service = SipService(config, reactor, listen_address="127.0.0.3", listen_port=0)
    service.startService()
    seen = []
    service.protocol.datagramReceived = lambda data, addr: seen.append(data)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        port = service.port.getHost().port
        for i in range(60):
            sender.sendto(b"%03d" % i + b"x" * (SIZE - 3), ("127.0.0.3", port))
        service.port.doRead()  # one turn's read, as the reactor would make it
        assert 1 <= len(seen) <= SIP_READ_PER_TURN // SIZE + 1
        for _ in range(200):
            if len(seen) == 60:
                break
            await task.deferLater(reactor, 0.02, lambda: None)
        assert [d[:3] for d in seen] == [b"%03d" % i for i in range(60)]
    finally:
        sender.close()
        await service.stopService()
