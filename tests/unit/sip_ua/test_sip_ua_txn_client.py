"""Client transactions: every state and timer path (RFC 3261 17.1), on a task.Clock."""

import pytest
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cbserver.sip.message import parse_name_addr
from cbserver.sip.timers import SipTimers
from cbserver.sip.transport import ISipTransport
from cbserver.sip.txn_client import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    IClientTransactionUser,
    build_cancel,
)
from tests.unit.sip_ua.fakes import FakeTransport, request, response_to

DEST = ("127.0.0.1", 5080)


@implementer(IClientTransactionUser)
class Recorder:
    def __init__(self):
        self.events = []

    def response_received(self, txn, response):
        self.events.append(("response", response.status))

    def transaction_timed_out(self, txn):
        self.events.append(("timeout",))

    def transport_failed(self, txn, error):
        self.events.append(("transport", str(error)))


def make(cls, reliable=False, method="INVITE"):
    clock, transport, user = Clock(), FakeTransport(reliable=reliable), Recorder()
    terminated = []
    txn = cls(
        request(method), DEST, transport, clock, SipTimers().for_transport(reliable), user, terminated.append
    )
    txn.start()
    return txn, clock, transport, user, terminated


def test_fakes_provide_interfaces():
    assert verifyObject(ISipTransport, FakeTransport())
    assert verifyObject(IClientTransactionUser, Recorder())


def test_invite_timer_a_doubles_until_timer_b_times_out():
    txn, clock, transport, user, terminated = make(ClientInviteTransaction)
    assert txn.state == "calling"
    send_times = [0.0]
    while clock.getDelayedCalls():
        before = len(transport.sent)
        clock.advance(0.25)
        if len(transport.sent) > before:
            send_times.append(clock.seconds())
    # RFC 3261 17.1.1.2: T1, 2T1, 4T1... with no cap, until B = 64*T1 = 32 s.
    assert send_times == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert user.events == [("timeout",)]
    assert txn.state == "terminated" and terminated == [txn]
    assert clock.seconds() == 32.0


def test_invite_over_reliable_transport_never_retransmits():
    txn, clock, transport, user, _ = make(ClientInviteTransaction, reliable=True)
    clock.advance(31.9)
    assert len(transport.sent) == 1
    clock.advance(0.1)
    assert user.events == [("timeout",)]
    assert not clock.getDelayedCalls()


def test_invite_provisional_stops_retransmission_and_timer_b():
    txn, clock, transport, user, _ = make(ClientInviteTransaction)
    txn.receive_response(response_to(txn.request, 180))
    assert txn.state == "proceeding"
    clock.advance(100)
    assert len(transport.sent) == 1
    assert user.events == [("response", 180)]
    assert txn.state == "proceeding"
    txn.terminate()
    assert not clock.getDelayedCalls()


def test_invite_2xx_enters_accepted_and_passes_retransmissions_until_timer_m():
    txn, clock, transport, user, terminated = make(ClientInviteTransaction)
    ok = response_to(txn.request, 200)
    txn.receive_response(ok)
    assert txn.state == "accepted"
    txn.receive_response(ok)
    txn.receive_response(response_to(txn.request, 180))  # absorbed
    assert user.events == [("response", 200), ("response", 200)]
    assert transport.requests("ACK") == []  # the 2xx ACK belongs to the TU (13.2.2.4)
    clock.advance(31.9)
    assert txn.state == "accepted"
    clock.advance(0.1)
    assert txn.state == "terminated" and terminated == [txn]
    assert not clock.getDelayedCalls()


def test_invite_non_2xx_is_acked_by_the_transaction_and_timer_d_ends_it():
    txn, clock, transport, user, _ = make(ClientInviteTransaction)
    txn.receive_response(response_to(txn.request, 100))
    busy = response_to(txn.request, 486, to_tag="far")
    txn.receive_response(busy)
    assert txn.state == "completed"
    acks = transport.requests("ACK")
    assert len(acks) == 1
    ack = acks[0]
    # RFC 3261 17.1.1.3: same branch, To from the response, CSeq number with method ACK.
    assert ack.headers.get("Via") == txn.request.headers.get("Via")
    assert parse_name_addr(ack.headers.get("To")).tag == "far"
    assert ack.headers.get("CSeq") == "1 ACK"
    assert ack.uri == txn.request.uri
    txn.receive_response(busy)  # retransmitted 486: ACK again, not passed up
    assert len(transport.requests("ACK")) == 2
    assert user.events == [("response", 100), ("response", 486)]
    clock.advance(31.9)
    assert txn.state == "completed"
    clock.advance(0.1)
    assert txn.state == "terminated"
    assert not clock.getDelayedCalls()


def test_invite_timer_d_is_zero_on_reliable_transport():
    txn, clock, transport, user, _ = make(ClientInviteTransaction, reliable=True)
    txn.receive_response(response_to(txn.request, 603))
    clock.advance(0)
    assert txn.state == "terminated"
    assert not clock.getDelayedCalls()


def test_invite_transport_error_terminates_and_tells_the_user():
    clock, transport, user = Clock(), FakeTransport(), Recorder()
    transport.fail = True
    txn = ClientInviteTransaction(request(), DEST, transport, clock, SipTimers(), user)
    txn.start()
    assert txn.state == "terminated"
    assert user.events == []  # told once start()'s caller holds the transaction
    clock.advance(0)
    assert user.events == [("transport", "boom")]
    assert not clock.getDelayedCalls()


def test_non_invite_timer_e_doubles_up_to_t2_until_timer_f():
    txn, clock, transport, user, _ = make(ClientNonInviteTransaction, method="OPTIONS")
    assert txn.state == "trying"
    times = [0.0]
    while clock.getDelayedCalls():
        before = len(transport.sent)
        clock.advance(0.25)
        if len(transport.sent) > before:
            times.append(clock.seconds())
    # RFC 3261 17.1.2.2: 0.5, 1, 2, 4, 4, 4 ... until F = 32 s.
    assert times[:6] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]
    assert all(b - a == 4.0 for a, b in zip(times[4:], times[5:], strict=False))
    assert times[-1] == 31.5
    assert user.events == [("timeout",)]


def test_non_invite_proceeding_retransmits_every_t2():
    txn, clock, transport, user, _ = make(ClientNonInviteTransaction, method="BYE")
    txn.receive_response(response_to(txn.request, 100))
    assert txn.state == "proceeding"
    clock.advance(0.5)  # E was armed at T1 in Trying
    assert len(transport.sent) == 2
    clock.advance(4.0)
    assert len(transport.sent) == 3
    clock.advance(4.0)
    assert len(transport.sent) == 4
    txn.receive_response(response_to(txn.request, 200))
    assert txn.state == "completed"
    clock.advance(5.0)  # Timer K = T4
    assert txn.state == "terminated"
    assert user.events == [("response", 100), ("response", 200)]
    assert not clock.getDelayedCalls()


def test_non_invite_completed_absorbs_retransmitted_finals():
    txn, clock, transport, user, _ = make(ClientNonInviteTransaction, method="BYE")
    ok = response_to(txn.request, 200)
    txn.receive_response(ok)
    txn.receive_response(ok)
    assert user.events == [("response", 200)]
    clock.advance(4.9)
    assert txn.state == "completed"
    clock.advance(0.1)
    assert txn.state == "terminated"
    assert not clock.getDelayedCalls()


def test_non_invite_timer_k_zero_on_reliable():
    txn, clock, transport, user, _ = make(ClientNonInviteTransaction, True, "BYE")
    txn.receive_response(response_to(txn.request, 481))
    clock.advance(0)
    assert txn.state == "terminated" and not clock.getDelayedCalls()


def test_non_invite_transport_error_on_retransmission():
    txn, clock, transport, user, _ = make(ClientNonInviteTransaction, method="INFO")
    transport.fail = True
    clock.advance(0.5)
    assert txn.state == "terminated"
    assert user.events == [("transport", "boom")]
    assert not clock.getDelayedCalls()


def test_cancel_copies_the_invite_identity():
    inv = request()
    cancel = build_cancel(inv)
    assert cancel.method == "CANCEL"
    assert cancel.uri == inv.uri
    for name in ("Via", "From", "To", "Call-ID"):
        assert cancel.headers.get(name) == inv.headers.get(name)
    assert cancel.headers.get("CSeq") == "1 CANCEL"


@pytest.mark.parametrize("t1,t2", [(0.1, 1.0), (0.5, 4.0)])
def test_timer_values_derive_from_t1(t1, t2):
    t = SipTimers(t1=t1, t2=t2, t4=5.0)
    assert t.B == t.F == t.H == t.J == 64 * t1
    assert t.A == t.E == t.G == t1
    assert t.for_transport(True).D == 0 and t.for_transport(True).K == 0
