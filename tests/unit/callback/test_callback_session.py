"""The legA -> legB state machine, every path, on a fake clock with fake UA and media."""

from decimal import Decimal

import pytest
from twisted.internet.task import Clock

from cbserver.callback.session import CallbackSession, SessionContext
from cbserver.media.relay import RelayEnd
from tests.unit.callback.fakes import (
    FakeAuthorizer,
    FakeMedia,
    FakeRecorder,
    FakeUA,
    Request,
    app,
)


class Harness:
    def __init__(self, request=None, application=None, budget=Decimal("20")):
        self.clock = Clock()
        self.clock.advance(1_780_000_000)
        self.ua = FakeUA()
        self.media = FakeMedia(self.clock)
        self.authorizer = FakeAuthorizer(self.clock, budget=budget)
        self.recorder = FakeRecorder()
        self.changes = []
        self.request = request or Request()
        self.app = application or app()
        ctx = SessionContext(ua=self.ua, media=self.media, authorizer=self.authorizer,
                             recorder=self.recorder, clock=self.clock, node="node1",
                             no_answer_timeout=30, on_change=lambda s: self.changes.append(s.status))
        from cbserver.billing.authorize import AuthRequest

        first = AuthRequest(session_id="s1", account_id=self.request.account, cli=self.request.phone,
                            cld=self.request.destination or self.app.second_number)
        self.auth = self.authorizer.authorize(first).result
        self.session = CallbackSession("s1", self.request, self.app, self.auth, ctx)
        self.final = []
        self.session.start().addCallback(self.final.append)

    @property
    def a(self):
        return self.ua.calls[0]

    @property
    def b(self):
        return self.ua.calls[1]

    def records(self):
        return {r.leg: r for r in self.recorder.records}

    def assert_clean(self):
        assert self.final, "session did not finish"
        assert not self.clock.getDelayedCalls() or all(
            not c.active() for c in self.clock.getDelayedCalls())
        assert all(leg.closed for leg in self.media.legs)


def test_extended_happy_path_joins_and_bills_both_legs():
    h = Harness()
    assert h.a.number == "5511987654321"
    assert h.a.kw["caller_id"] == "18005550100"  # legA shows the instance's number
    h.clock.advance(3)
    h.a.answer()
    assert h.session.status == "calling_destination"
    assert h.media.legs[0].played[0] == ("please_wait",)
    assert h.b.number == "18185550123"
    assert h.b.kw["caller_id"] == "5511987654321"  # legB shows the person's number
    h.clock.advance(5)
    h.b.answer()
    assert h.session.status == "connected"
    assert len(h.media.relays) == 1
    h.clock.advance(45)
    h.b.bye()
    assert h.session.status == "ended"
    st = h.final[0]
    assert st["cause"]["code"] == "legb_hung_up"
    recs = h.records()
    assert recs["A"].duration == 50 and recs["B"].duration == 45
    # legA to Brazil: 30 s first + 20 s in 6 s steps (24 s) at 0.12/min; legB to the US:
    # 60 s first interval at 0.60/min.
    assert recs["A"].charged_seconds == 54 and recs["A"].amount == Decimal("0.10800")
    assert recs["B"].charged_seconds == 60 and recs["B"].amount == Decimal("0.60000")
    assert st["charges"] == {"A": "0.10800", "B": "0.60000", "total": "0.70800", "currency": "USD"}
    assert recs["A"].access_code == "" or recs["A"].access_code == "WEBCALLBACK"
    assert h.a.hangups == 1  # legA hung up by us when legB left
    assert h.changes[:4] == ["calling_you", "calling_you", "answered", "calling_destination"]
    h.assert_clean()


def test_lega_busy_ends_with_both_xdrs_and_no_legb():
    h = Harness()
    h.a.fail(486, "Busy Here")
    assert len(h.ua.calls) == 1
    st = h.final[0]
    assert st["cause"] == {"code": "lega_busy", "sip_status": 486, "reason": "Busy Here"}
    recs = h.records()
    assert recs["A"].amount == 0 and recs["A"].sip_code == 486
    assert recs["B"].amount == 0 and recs["B"].sip_reason.startswith("not placed")
    h.assert_clean()


def test_trunk_unreachable_is_its_own_cause():
    h = Harness()
    h.a.fail(503, "transport error: connection refused")
    assert h.final[0]["cause"]["code"] == "trunk_unreachable"
    h.assert_clean()


def test_lega_no_answer_after_our_cancel():
    h = Harness()
    h.a.fail(487, "no answer")
    assert h.final[0]["cause"]["code"] == "lega_no_answer"


def test_legb_busy_tells_the_caller_and_charges_lega_by_callback_fail():
    h = Harness()
    h.a.answer()
    h.clock.advance(10)
    h.b.fail(486, "Busy Here")
    legA_media = h.media.legs[0]
    assert legA_media.played[-1] == ("busy", "goodbye")
    assert not h.final  # still telling the caller
    h.clock.advance(1)
    st = h.final[0]
    assert st["cause"]["code"] == "legb_busy"
    recs = h.records()
    assert recs["A"].access_code == "CALLBACK_FAIL"
    assert recs["A"].tariff_name == "Callback fail" and recs["A"].amount == 0
    assert recs["A"].duration == 11
    assert recs["B"].sip_code == 486 and recs["B"].amount == 0
    h.assert_clean()


def test_caller_hanging_up_during_the_explanation_keeps_the_cause():
    h = Harness()
    h.a.answer()
    h.b.fail(486, "Busy Here")
    h.a.bye()
    assert h.final[0]["cause"]["code"] == "legb_busy"
    h.assert_clean()


def test_legb_no_answer_prompt():
    h = Harness()
    h.a.answer()
    h.b.fail(487, "no answer")
    assert h.media.legs[0].played[-1] == ("no_answer", "goodbye")
    h.clock.advance(1)
    assert h.final[0]["cause"]["code"] == "legb_no_answer"


def test_caller_hangs_up_while_legb_rings_cancels_legb():
    h = Harness()
    h.a.answer()
    h.b.ring()
    assert h.session.b.state == "ringing"
    h.clock.advance(4)
    h.a.bye()
    assert h.b.hangups == 1
    st = h.final[0]
    assert st["cause"]["code"] == "caller_hung_up"
    assert st["legs"]["B"]["sip_status"] == 487
    h.assert_clean()


def test_please_wait_repeats_while_legb_rings():
    h = Harness()
    h.a.answer()
    h.clock.advance(1)  # prompt done
    h.clock.advance(2)  # pause, plays again
    assert h.media.legs[0].played.count(("please_wait",)) == 2
    h.b.answer()
    h.clock.advance(10)
    assert h.media.legs[0].played.count(("please_wait",)) == 2
    h.a.bye()
    h.assert_clean()


def test_max_duration_warns_a_minute_before_and_ends_both():
    # $1.30 buys legB (0.60/min) + legA (0.12/min) about 100 s.
    h = Harness(budget=Decimal("1.30"))
    h.a.answer()
    limit = h.session.auth.max_seconds
    assert 60 < limit < 180
    h.b.answer()
    h.clock.advance(limit - 60)
    assert h.media.legs[0].played[-1] == ("one_minute_left",)
    assert h.media.legs[1].played[-1] == ("one_minute_left",)
    assert h.media.relays[0].stopped
    h.clock.advance(1)
    assert len(h.media.relays) == 2  # media rejoined after the warning
    h.clock.advance(59)
    st = h.final[0]
    assert st["cause"]["code"] == "max_duration"
    recs = h.records()
    assert recs["B"].duration == limit
    assert recs["A"].amount + recs["B"].amount <= Decimal("1.30")
    h.assert_clean()


def test_shutdown_ends_a_connected_call():
    h = Harness()
    h.a.answer()
    h.b.answer()
    h.clock.advance(20)
    h.session.shutdown()
    assert h.final[0]["cause"]["code"] == "shutdown"
    assert h.a.hangups == 1 and h.b.hangups == 1
    assert h.records()["B"].duration == 20
    h.assert_clean()


def test_media_inactivity_ends_the_call():
    h = Harness()
    h.a.answer()
    h.b.answer()
    h.clock.advance(30)
    h.media.relays[0].done.callback(RelayEnd.INACTIVE)
    assert h.final[0]["cause"]["code"] == "media_timeout"


def test_simple_mode_dials_the_second_number():
    h = Harness(request=Request(mode="simple", destination=None))
    h.a.answer()
    assert h.b.number == "18005550100"


def test_use_account_id_as_ani_shows_the_pin_on_both_legs():
    h = Harness(application=app(use_account_id_as_ani=True))
    assert h.a.kw["caller_id"] == "cb1818000001"
    h.a.answer()
    assert h.b.kw["caller_id"] == "cb1818000001"


def test_without_use_account_id_as_ani_lega_shows_the_helpdesk_and_legb_the_person():
    h = Harness()
    assert h.a.kw["caller_id"] == "18005550100"
    h.a.answer()
    assert h.b.kw["caller_id"] == h.session.request.phone


def test_not_enough_balance_for_legb_after_answer():
    h = Harness(budget=Decimal("0.01"))
    h.a.answer()
    assert h.media.legs[0].played[-1] == ("not_enough_balance", "goodbye")
    h.clock.advance(1)
    assert h.final[0]["cause"]["code"] == "no_balance"
    assert len(h.ua.calls) == 1


def test_answer_crossing_our_hangup_is_ended_too():
    h = Harness()
    h.a.answer()
    h.session.shutdown()
    assert h.b.hangups == 1
    assert h.final


@pytest.mark.parametrize("status,reason,cause", [
    (603, "Decline", "legb_rejected"),
    (404, "Not Found", "legb_rejected"),
    (500, "Server Error", "legb_failed"),
    (480, "Temporarily Unavailable", "legb_no_answer"),
])
def test_legb_failure_causes(status, reason, cause):
    h = Harness()
    h.a.answer()
    h.b.fail(status, reason)
    h.clock.advance(1)
    assert h.final[0]["cause"]["code"] == cause


def test_no_free_media_port_ends_the_callback_with_its_own_cause():
    from twisted.internet.error import CannotListenError

    class NoPorts(FakeMedia):
        def new_leg(self, application, call_id):
            raise CannotListenError("127.0.0.1", 0, "no bindable RTP pair")

    clock = Clock()
    clock.advance(1_780_000_000)
    ua, recorder = FakeUA(), FakeRecorder()
    authorizer = FakeAuthorizer(clock)
    ctx = SessionContext(ua=ua, media=NoPorts(clock), authorizer=authorizer, recorder=recorder,
                         clock=clock, node="node1", no_answer_timeout=30)
    req = Request()
    from cbserver.billing.authorize import AuthRequest

    auth = authorizer.authorize(AuthRequest(session_id="s9", account_id=req.account, cli=req.phone,
                                            cld=req.destination)).result
    final = []
    CallbackSession("s9", req, app(), auth, ctx).start().addCallback(final.append)
    assert final[0]["cause"]["code"] == "media_unavailable"
    assert ua.calls == [] and len(recorder.records) == 2


def test_legb_reauthorization_time_is_reported_and_a_broken_observer_changes_nothing():
    from twisted.internet import defer

    h = Harness()
    delays = []
    h.session.ctx.on_legb_delay = delays.append
    real = h.authorizer.authorize
    pending = []

    def slow(req):  # legB's authorization waits, like a busy database
        pending.append((defer.Deferred(), req))
        return pending[-1][0]

    h.authorizer.authorize = slow
    h.clock.advance(3)
    h.a.answer()
    assert h.session.status == "answered" and len(h.ua.calls) == 1  # legB not dialled yet
    h.clock.advance(0.75)
    d, req = pending[0]
    d.callback(real(req).result)
    assert delays == [0.75] and h.session.status == "calling_destination"

    g = Harness()
    g.session.ctx.on_legb_delay = lambda delay: 1 / 0  # an observer that fails
    g.clock.advance(3)
    g.a.answer()
    assert g.session.status == "calling_destination"  # the call went on regardless


def test_legb_reauthorization_runs_as_urgent_database_work():
    """Its statements go first in the pool (cbserver.priority), ahead of rows and xDRs."""
    from cbserver import priority

    h = Harness()
    seen = []
    real = h.authorizer.authorize

    def noting(req):
        seen.append(priority.current())
        return real(req)

    h.authorizer.authorize = noting
    h.clock.advance(3)
    h.a.answer()
    assert seen == [priority.URGENT] and h.session.status == "calling_destination"
    assert priority.current() == priority.RUNNING  # the mark stayed in its own context
