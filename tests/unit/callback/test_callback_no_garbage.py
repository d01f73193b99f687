"""A finished callback leaves no cyclic garbage and no table entry behind.

Everything a callback built must be freed by reference counting the moment the last timer
that needs it is gone: a reference cycle instead waits for a full garbage collection, which
under steady load came every few minutes, held the reactor for seconds over hundreds of MB,
and failed calls (issue 17, item 6). The callbacks here run through the real session and the
real SIP stack (``UserAgent``, ``Call``, transactions, dialog usage) against a scripted trunk
on a ``task.Clock``, and through the real ``RtpSession``; the collector is paused and saves what
it finds (``gc.DEBUG_SAVEALL``), so every cycle shows up in ``gc.garbage``. Deterministic, not
timed.
"""

from __future__ import annotations

import gc
from collections import Counter
from decimal import Decimal

import pytest
from twisted.internet.task import Clock

from cbserver.billing.authorize import AuthRequest
from cbserver.callback.session import CallbackSession, SessionContext
from cbserver.media.ports import PortPool
from cbserver.media.session import RtpSession
from cbserver.sip.ua import UserAgent
from tests.support.collector import saving_collector as collector_held
from tests.unit.callback.fakes import FakeAuthorizer, FakeMedia, FakeRecorder, Request, app
from tests.unit.media.fakes import FakeReactor
from tests.unit.sip_ua.fakes import FakeTransport
from tests.unit.sip_ua.uafakes import SDP_ANSWER, FarEnd, config

CALLBACKS = 5


@pytest.fixture
def collector():
    """The collector paused, emptied and saving what it finds (tests.support.collector)."""
    with collector_held():
        yield


def project_garbage() -> Counter:
    """Collect now; the project's objects among what the collector found, by type."""
    gc.collect()
    found = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
                    if type(o).__module__.startswith("cbserver."))
    gc.garbage.clear()
    return found


class Trunk:
    """A callback's whole life against a real UserAgent whose trunk answers as the test says."""

    def __init__(self):
        self.clock = Clock()
        self.clock.advance(1_780_000_000)
        self.transport = FakeTransport()
        self.ua = UserAgent(self.transport, self.clock, config())
        self.far = FarEnd(self.ua, self.transport)
        self.media = FakeMedia(self.clock)
        self.authorizer = FakeAuthorizer(self.clock, budget=Decimal("20"))
        self.recorder = FakeRecorder()

    def session(self, n: int) -> tuple[CallbackSession, list]:
        """Start callback ``n`` (legA's INVITE goes out)."""
        request = Request()
        application = app()
        ctx = SessionContext(ua=self.ua, media=self.media, authorizer=self.authorizer,
                             recorder=self.recorder, clock=self.clock, node="node1",
                             no_answer_timeout=30, on_change=lambda s: None)
        first = AuthRequest(session_id=f"s{n}", account_id=request.account, cli=request.phone,
                            cld=request.destination or application.second_number)
        auth = self.authorizer.authorize(first).result
        session = CallbackSession(f"s{n}", request, application, auth, ctx)
        final: list = []
        session.start().addCallback(final.append)
        return session, final

    def invite(self):
        """The INVITE the trunk got last."""
        return self.far.last("INVITE")

    def answer(self) -> None:
        """The trunk rings and answers the last INVITE."""
        inv = self.invite()
        self.far.respond(inv, 180)
        self.far.respond(inv, 200, SDP_ANSWER)

    def run_out(self) -> None:
        """Let every timer (prompts, Timers D/K/M...) run out."""
        for _ in range(40):
            if not any(c.active() for c in self.clock.getDelayedCalls()):
                return
            self.clock.advance(5)


def connected_then_legb_hangs_up(trunk: Trunk, n: int) -> list:
    """legA answers, legB answers, legB's far end sends BYE; we BYE legA."""
    session, final = trunk.session(n)
    trunk.answer()
    trunk.clock.advance(5)          # the prompt plays, legB is dialled
    trunk.answer()
    trunk.clock.advance(20)
    trunk.far.request(session.b.call, "BYE")
    trunk.far.respond(trunk.far.last("BYE"), 200)
    return final


def lega_busy(trunk: Trunk, n: int) -> list:
    """legA's far end is busy: 486, ACKed by the transaction, Timer D runs."""
    _, final = trunk.session(n)
    trunk.far.respond(trunk.invite(), 486)
    return final


def lega_no_answer(trunk: Trunk, n: int) -> list:
    """legA rings until the no-answer timer: CANCEL, 487."""
    _, final = trunk.session(n)
    inv = trunk.invite()
    trunk.far.respond(inv, 180)
    trunk.clock.advance(31)
    trunk.far.respond(trunk.far.last("CANCEL"), 200)
    trunk.far.respond(inv, 487)
    return final


@pytest.mark.parametrize("flow, cause", [(connected_then_legb_hangs_up, "legb_hung_up"),
                                         (lega_busy, "lega_busy"), (lega_no_answer, "lega_no_answer")])
def test_finished_callbacks_leave_no_cycles_and_no_table_entries(collector, flow, cause):
    trunk = Trunk()
    finals = [flow(trunk, n) for n in range(CALLBACKS)]
    trunk.run_out()
    assert [f[0]["cause"]["code"] for f in finals] == [cause] * CALLBACKS
    assert len(trunk.recorder.records) == 2 * CALLBACKS
    # The UA's and the transaction layer's tables forget ended calls and transactions.
    assert trunk.ua.calls == {}
    assert trunk.ua.layer.clients == {} and trunk.ua.layer.servers == {}
    del finals
    assert project_garbage() == Counter()


class _PortReactor(FakeReactor):
    """``FakeReactor`` whose ports connect and disconnect their protocol as Twisted's UDP
    ports do (``makeConnection`` on listening, ``doStop`` on stopping: the transport is
    dropped), so that only the session's own references are under test."""

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):  # noqa: N802
        """Bind in memory and connect the protocol."""
        bound = super().listenUDP(port, protocol, interface, maxPacketSize)
        protocol.transport = None  # connected below, as Twisted does it
        protocol.makeConnection(bound)
        stop = bound.stopListening

        def stopping():
            stop()
            bound.protocol.doStop()
            bound.protocol = None
            del bound.stopListening  # this wrapper (it holds the port) goes too

        bound.stopListening = stopping
        return bound


def test_a_closed_rtp_session_is_not_a_cycle(collector):
    reactor = _PortReactor()
    pool = PortPool(40000, 40099)
    for _ in range(3):
        session = RtpSession(reactor, reactor, pool, mux=None)
        session.open()
        session.close()
    del session
    assert reactor.ports == {}
    assert project_garbage() == Counter()
