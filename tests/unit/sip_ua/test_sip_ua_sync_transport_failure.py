"""A transport that fails synchronously while a client transaction starts (RFC 3261 17.1.4).

The transaction tells its user about the failure only once the user has stored it (on the
next turn of the injected clock): a BYE whose send raises still ends the call, and an
INVITE whose send raises fails the call with 503.
"""

from twisted.internet.task import Clock

from cbserver.sip.timers import SipTimers
from cbserver.sip.txn_client import ClientInviteTransaction, ClientNonInviteTransaction
from cbserver.sip.ua import UserAgent
from tests.unit.sip_ua.fakes import FakeTransport, request
from tests.unit.sip_ua.uafakes import SDP_ANSWER, SDP_OFFER, FarEnd, Listener, config

DEST = ("127.0.0.1", 5080)


class Owner:
    """A transaction user that, like the UA, only knows the transaction once it is returned."""

    def __init__(self):
        self.txn = None
        self.events = []

    def response_received(self, txn, response):
        self.events.append(("response", txn is self.txn))

    def transaction_timed_out(self, txn):
        self.events.append(("timeout", txn is self.txn))

    def transport_failed(self, txn, error):
        self.events.append(("transport", txn is self.txn, str(error)))


def _place(clock, transport, listener):
    ua = UserAgent(transport, clock, config())
    call = ua.place_call("15551234", caller_id="cb1818", display_name=None, sdp_offer=SDP_OFFER,
                         no_answer_timeout=30, listener=listener)
    return ua, call


def _finish(ua, clock):
    d = ua.stop()
    for _ in range(200):
        if not clock.getDelayedCalls():
            break
        clock.advance(1)
    assert d.called and clock.getDelayedCalls() == []


def test_a_synchronous_failure_reaches_the_user_once_it_stored_the_transaction():
    for kind in (ClientInviteTransaction, ClientNonInviteTransaction):
        clock, transport, owner = Clock(), FakeTransport(), Owner()
        transport.fail = True
        method = "INVITE" if kind is ClientInviteTransaction else "BYE"
        owner.txn = txn = kind(request(method), DEST, transport, clock, SipTimers(), owner)
        txn.start()
        assert txn.state == "terminated"
        assert owner.events == []  # not yet: the caller of start() may not hold txn yet
        clock.advance(0)
        assert owner.events == [("transport", True, "boom")]
        assert not clock.getDelayedCalls()


def test_a_bye_whose_send_raises_still_ends_the_call():
    clock, transport, listener = Clock(), FakeTransport(), Listener()
    ua, call = _place(clock, transport, listener)
    far = FarEnd(ua, transport)
    inv = far.last("INVITE")
    far.respond(inv, 180)
    far.respond(inv, 200, SDP_ANSWER)
    assert call.state == "confirmed"
    transport.fail = True
    d = call.hangup()
    clock.advance(0)
    assert d.called  # the BYE's transport error is its outcome (RFC 3261 15.1.1)
    assert call.state == "ended" and call.finished
    assert listener.events[-1] == ("ended", False, "local hangup")
    transport.fail = False
    _finish(ua, clock)


def test_an_invite_whose_send_raises_fails_the_call_with_503():
    clock, transport, listener = Clock(), FakeTransport(), Listener()
    transport.fail = True
    ua, call = _place(clock, transport, listener)
    clock.advance(0)
    assert call.state == "failed" and call.finished
    assert listener.events == [("failed", 503, "transport error: boom")]
    transport.fail = False
    _finish(ua, clock)
