"""A phone hanging up is a hang-up, not lost media (RTCP BYE before the SIP BYE).

A real phone sends RTCP BYE as it sends its SIP BYE; the SIP BYE, relayed by a proxy, arrives
later. The session runs here with real media (RTP sessions and the relay, on a fake UDP
reactor that is a ``task.Clock``) and fake SIP calls.
"""

from decimal import Decimal

import pytest

from cbserver.billing.authorize import AuthRequest
from cbserver.callback.legmedia import MediaEnvironment
from cbserver.callback.service import MediaFactory
from cbserver.callback.session import CallbackSession, SessionContext
from cbserver.media import rtcp, rtp
from cbserver.media.clock import MediaClock
from cbserver.media.ports import PortPool
from tests.unit.callback.fakes import FakeAuthorizer, FakeRecorder, FakeUA, Request, app
from tests.unit.media.fakes import FakePrompts, FakeReactor

GRACE = 5.0
PEERS = {"A": ("192.0.2.1", 7000), "B": ("192.0.2.2", 8000)}
PROMPTS = ["please_wait", "one_minute_left", "goodbye", "call_failed", "busy", "no_answer",
           "not_enough_balance"]


def sdp(peer) -> bytes:
    host, port = peer
    return (f"v=0\r\no=- 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()


class Callback:
    """One Extended callback, both legs answered and joined by a real relay."""

    def __init__(self):
        self.clock = reactor = FakeReactor()
        reactor.advance(1_780_000_000)
        application = app()
        env = MediaEnvironment(clock=reactor, reactor=reactor, pool=PortPool(20000, 20099),
                               media_clock=MediaClock(reactor), bind_address="127.0.0.1",
                               public_address="127.0.0.1", inactivity_timeout=30.0,
                               rtcp_bye_grace=GRACE,
                               libraries={application.name: FakePrompts({p: 2 for p in PROMPTS})})
        self.ua, self.authorizer = FakeUA(), FakeAuthorizer(reactor, budget=Decimal("20"))
        self.recorder = FakeRecorder()
        ctx = SessionContext(ua=self.ua, media=MediaFactory(env), authorizer=self.authorizer,
                             recorder=self.recorder, clock=reactor, node="node1",
                             no_answer_timeout=30)
        req = Request()
        first = AuthRequest(session_id="s1", account_id=req.account, cli=req.phone,
                            cld=req.destination)
        auth = self.authorizer.authorize(first).result
        self.session = CallbackSession("s1", req, application, auth, ctx)
        self.final = []
        self.session.start().addCallback(self.final.append)
        self.call("A").answer(sdp(PEERS["A"]))
        self.call("B").answer(sdp(PEERS["B"]))
        assert self.session.state.name == "CONNECTED"
        self.talk(1.0)

    def call(self, leg):
        return self.ua.calls["AB".index(leg)]

    def rtp_session(self, leg):
        return getattr(self.session, leg.lower()).media.session

    def talk(self, seconds, legs="AB"):
        """Both phones send RTP every 20 ms for ``seconds``."""
        for _ in range(round(seconds / 0.02)):
            for leg in legs:
                s = self.rtp_session(leg)
                s.datagramReceived(rtp.pack(0, s.packets_received + 1, 160 * s.packets_received,
                                            0xA0 + "AB".index(leg), b"\x7f" * 160), PEERS[leg])
            self.clock.advance(0.02)

    def rtcp_bye(self, leg):
        host, port = PEERS[leg]
        ssrc = 0xA0 + "AB".index(leg)
        self.rtp_session(leg).rtcp_received(rtcp.pack_rr(ssrc, []) + rtcp.pack_bye(ssrc),
                                            (host, port + 1))


@pytest.mark.parametrize("leg, cause", [("A", "lega_hung_up"), ("B", "legb_hung_up")])
def test_rtcp_bye_then_the_sip_bye_30ms_later_is_that_party_hanging_up(leg, cause):
    cb = Callback()
    other = "B" if leg == "A" else "A"
    cb.rtcp_bye(leg)
    cb.clock.advance(0.03)
    assert not cb.final  # the RTCP BYE alone ends nothing
    cb.call(leg).bye()  # the SIP BYE, through the proxy
    assert cb.final and cb.final[0]["cause"]["code"] == cause
    assert cb.call(leg).hangups == 0  # no BYE of ours on the leg that hung up
    assert cb.call(other).hangups == 1
    assert cb.final[0]["status"] == "ended"


def test_rtcp_bye_without_a_sip_bye_ends_after_the_grace_as_media_lost():
    cb = Callback()
    cb.rtcp_bye("A")
    cb.talk(GRACE - 0.1, legs="B")  # legB still talks; legA sends nothing after its BYE
    assert not cb.final
    cb.talk(0.2, legs="B")
    assert cb.final and cb.final[0]["cause"]["code"] == "media_bye"
    assert "legA" in cb.final[0]["cause"]["reason"]
    assert cb.call("A").hangups == 1 and cb.call("B").hangups == 1  # the dialogs are ours to end


def test_rtp_after_an_rtcp_bye_keeps_the_call_up():
    cb = Callback()
    cb.rtcp_bye("A")
    cb.talk(0.5)
    cb.talk(GRACE * 2)  # e.g. the phone changed its SSRC: its media goes on
    assert not cb.final
    cb.session.shutdown()
    assert cb.final[0]["cause"]["code"] == "shutdown"
