"""One callback run by cbserver's real SIP stack (UDP), real RTP media and a real
``CallbackSession``, in the test process, against a trunk at a given address.

Billing is the unit tests' (``FakeAuthorizer``, ``FakeRecorder``): these tests are about how
calls end, not about PostgreSQL. ``requests`` lists what cbserver sent: (method, Call-ID).
"""

from decimal import Decimal

from twisted.internet import defer, reactor

from cbserver.billing.authorize import AuthRequest
from cbserver.callback.legmedia import MediaEnvironment
from cbserver.callback.service import MediaFactory
from cbserver.callback.session import CallbackSession, SessionContext
from cbserver.media.clock import MediaClock
from cbserver.media.ports import PortPool
from cbserver.media.prompts import load_prompt_library
from cbserver.sip.transport import SipUdpProtocol
from cbserver.sip.ua import UAConfig, UserAgent
from tests.unit.callback.fakes import FakeAuthorizer, FakeRecorder, Request, app


class RecordingUdp(SipUdpProtocol):
    """cbserver's SIP over UDP, remembering the requests it sends."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.requests: list[tuple[str, str]] = []

    def send_request(self, request, destination):
        self.requests.append((request.method, request.headers.get("Call-ID") or ""))
        return super().send_request(request, destination)


class CallbackRig:
    """An Extended callback (legA 5511987654321, legB 18185550123) through ``trunk``."""

    def __init__(self, trunk: tuple[str, int], rtp_ports=(44000, 44999), rtcp_bye_grace=5.0,
                 session_id="rig"):
        self.sip = RecordingUdp(None, "127.0.0.1", 0)
        self.sip_port = reactor.listenUDP(0, self.sip, interface="127.0.0.1")
        self.sip.port = self.sip_port.getHost().port
        self.ua = UserAgent(self.sip, reactor, UAConfig(
            public_address="127.0.0.1", public_port=self.sip.port, trunk_host=trunk[0],
            trunk_port=trunk[1], from_domain="127.0.0.1", username="cbserver",
            password="unused", session_expires=0, keepalive_interval=0))
        self.sip.sink = self.ua.sink
        application = app()
        self.media_clock = MediaClock(reactor)
        env = MediaEnvironment(clock=reactor, reactor=reactor, pool=PortPool(*rtp_ports),
                               media_clock=self.media_clock, bind_address="127.0.0.1",
                               public_address="127.0.0.1", inactivity_timeout=30.0,
                               rtcp_bye_grace=rtcp_bye_grace,
                               libraries={application.name: load_prompt_library("en")})
        self.authorizer = FakeAuthorizer(reactor, budget=Decimal("20"))
        self.recorder = FakeRecorder()
        ctx = SessionContext(ua=self.ua, media=MediaFactory(env), authorizer=self.authorizer,
                             recorder=self.recorder, clock=reactor, node="node1",
                             no_answer_timeout=15)
        req = Request()
        auth = self.authorizer.authorize(AuthRequest(
            session_id=session_id, account_id=req.account, cli=req.phone,
            cld=req.destination)).result
        self.session = CallbackSession(session_id, req, application, auth, ctx)

    def byes_on(self, leg) -> int:
        """How many BYEs cbserver sent in ``leg``'s (a session ``Leg``) dialog."""
        call_id = leg.call.call_id
        return sum(1 for method, cid in self.sip.requests if method == "BYE" and cid == call_id)

    @defer.inlineCallbacks
    def close(self):
        """Stop the UA, the media clock and the SIP port."""
        yield self.ua.stop()
        self.ua.stop_listening()
        self.media_clock.stop()
        yield self.sip_port.stopListening()
