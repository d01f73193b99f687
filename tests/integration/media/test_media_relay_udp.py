"""The relay over real UDP sockets on loopback: two fake phones, both directions, latching,
telephone-event pass-through and the inactivity end."""

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater

from cbserver.media import mux, rtcp, rtp
from cbserver.media.dtmf import pack_event
from cbserver.media.ports import PortPool
from cbserver.media.relay import Relay, RelayEnd
from cbserver.media.session import RtpSession

pytestmark = pytest.mark.integration


class Phone(protocol.DatagramProtocol):
    def __init__(self):
        self.rtp, self.rtcp = [], []

    def datagramReceived(self, data, addr):
        if rtp.looks_like_rtcp(data):
            self.rtcp.append(rtcp.parse_compound(data))
        else:
            self.rtp.append(rtp.unpack(data))


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


@pytest.mark.parametrize("use_mux", [False, True], ids=["port-per-socket", "media-mux"])
@pytest_twisted.inlineCallbacks
def test_two_phones_talk_through_the_relay_until_one_goes_quiet(use_mux):
    if use_mux and not mux.available():
        pytest.skip("the media mux needs Linux epoll")
    pool = PortPool(44000, 44999)
    the_mux = mux.MediaMux(reactor) if use_mux else None
    a = RtpSession(reactor, reactor, pool, "127.0.0.1", call_id="u", mux=the_mux)
    b = RtpSession(reactor, reactor, pool, "127.0.0.1", call_id="u", mux=the_mux)
    phones, ports = [], []
    try:
        for s in (a, b):
            s.open()
            phone = Phone()
            port = reactor.listenUDP(0, phone, interface="127.0.0.1")
            phones.append(phone)
            ports.append(port)
            # SDP says one port; the phone really sends from another (NAT): latching fixes it
            s.configure(("127.0.0.1", 9), 0, "PCMU", 101)
        relay = Relay(reactor, a, b, inactivity_timeout=1.0, call_id="u")
        ended = relay.start()
        for i in range(25):
            ports[0].write(rtp.pack(0, 100 + i, 160 * i, 0xA, b"\x11" * 160), ("127.0.0.1", a.local_port))
            ports[1].write(rtp.pack(0, 900 + i, 160 * i, 0xB, b"\x22" * 160), ("127.0.0.1", b.local_port))
            yield sleep(0.02)
        ports[0].write(rtp.pack(101, 125, 4000, 0xA, pack_event(7, True, 10, 800), True),
                       ("127.0.0.1", a.local_port))
        # from now on only B talks; A is silent and the relay must end after ~1 s
        t0 = reactor.seconds()
        while not ended.called and reactor.seconds() - t0 < 5:
            ports[1].write(rtp.pack(0, 1000, 0, 0xB, b"\x22" * 160), ("127.0.0.1", b.local_port))
            yield sleep(0.05)
        why = yield ended
        assert why is RelayEnd.INACTIVE
        assert 0.8 < reactor.seconds() - t0 < 2.0
        to_a, to_b = phones[0].rtp, phones[1].rtp
        # Until B's phone has sent its first packet, B's leg sends to the SDP address (port 9):
        # at most the very first packet of A can miss B's phone.
        audio = [p for p in to_b if p.payload_type == 0]
        events = [p for p in to_b if p.payload_type == 101]
        assert len(audio) >= 24 and all(p.payload == b"\x11" * 160 for p in audio)
        assert [p.payload for p in events] == [pack_event(7, True, 10, 800)]
        assert all(p.payload == b"\x22" * 160 for p in to_a) and len(to_a) >= 24
        assert {p.ssrc for p in to_b} == {b.ssrc} and {p.ssrc for p in to_a} == {a.ssrc}
        seqs = [p.sequence for p in to_b]
        assert all(rtp.seq_delta(y, x) == 1 for x, y in zip(seqs, seqs[1:], strict=False))
        assert a.latched and b.latched
    finally:
        yield defer.gatherResults([a.close(), b.close()])
        for p in ports:
            yield p.stopListening()
    if the_mux is not None:
        assert len(the_mux) == 0 and the_mux.fileno() == -1  # left the reactor when empty
