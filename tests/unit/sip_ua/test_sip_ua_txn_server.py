"""Server transactions and the matching rules of the transaction layer (RFC 3261 17.2, 17.2.3)."""

from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cbserver.sip.message import make_response
from cbserver.sip.timers import SipTimers
from cbserver.sip.transaction import ITransactionUser, TransactionLayer
from cbserver.sip.txn_server import IServerTransactionUser
from tests.unit.sip_ua.fakes import FakeTransport, request, response_to

SRC = ("127.0.0.1", 5080)


@implementer(ITransactionUser, IServerTransactionUser)
class TU:
    def __init__(self):
        self.requests = []
        self.strays = []
        self.events = []

    def request_received(self, request, txn, source):
        self.requests.append((request.method, txn))
        if txn is not None:
            txn.user = self

    def stray_response(self, response, source):
        self.strays.append(response.status)

    def ack_timed_out(self, txn):
        self.events.append("ack-timeout")

    def transport_failed(self, txn, error):
        self.events.append("transport")


def layer(reliable=False):
    clock, transport, tu = Clock(), FakeTransport(reliable=reliable), TU()
    return TransactionLayer(transport, clock, SipTimers(), tu), clock, transport, tu


def test_tu_provides_interfaces():
    assert verifyObject(ITransactionUser, TU())
    assert verifyObject(IServerTransactionUser, TU())


def test_invite_gets_100_trying_after_200ms_when_tu_is_silent():
    lay, clock, transport, tu = layer()
    lay.request_received(request(), SRC)
    clock.advance(0.19)
    assert transport.responses() == []
    clock.advance(0.01)
    assert [r.status for r in transport.responses()] == [100]
    assert transport.sent[0][1] == SRC
    txn = tu.requests[0][1]
    txn.respond(make_response(txn.request, 403, "No inbound calls", to_tag="x"))
    lay.request_received(request("ACK"), SRC)
    clock.advance(5)
    assert not lay.servers and not clock.getDelayedCalls()


def test_no_100_when_tu_answered_within_200ms_and_retransmission_resends_provisional():
    lay, clock, transport, tu = layer()
    lay.request_received(request(), SRC)
    txn = tu.requests[0][1]
    txn.respond(make_response(txn.request, 180, None, to_tag="x"))
    clock.advance(1)
    assert [r.status for r in transport.responses()] == [180]
    lay.request_received(request(), SRC)  # retransmission
    assert [r.status for r in transport.responses()] == [180, 180]
    assert len(tu.requests) == 1  # absorbed, never passed up
    txn.terminate()
    assert not clock.getDelayedCalls()


def test_invite_final_error_retransmits_on_g_capped_at_t2_until_h():
    lay, clock, transport, tu = layer()
    lay.request_received(request(), SRC)
    txn = tu.requests[0][1]
    txn.respond(make_response(txn.request, 486, None, to_tag="x"))
    assert txn.state == "completed"
    times = [0.0]
    while clock.getDelayedCalls():
        before = len(transport.sent)
        clock.advance(0.25)
        if len(transport.sent) > before:
            times.append(clock.seconds())
    assert times[:6] == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5]
    assert times[-1] <= 32.0
    assert tu.events == ["ack-timeout"]
    assert txn.state == "terminated" and not lay.servers


def test_invite_ack_confirms_then_timer_i_and_ack_retransmits_absorbed():
    lay, clock, transport, tu = layer()
    lay.request_received(request(), SRC)
    txn = tu.requests[0][1]
    txn.respond(make_response(txn.request, 603, None, to_tag="x"))
    lay.request_received(request(), SRC)  # INVITE retransmission in Completed
    assert [r.status for r in transport.responses()] == [603, 603]
    lay.request_received(request("ACK"), SRC)
    assert txn.state == "confirmed"
    lay.request_received(request("ACK"), SRC)
    assert [m for m, _ in tu.requests] == ["INVITE"]  # ACKs absorbed
    clock.advance(4.9)
    assert txn.state == "confirmed"
    clock.advance(0.1)  # Timer I = T4
    assert txn.state == "terminated" and not clock.getDelayedCalls()
    assert len(transport.responses()) == 2


def test_invite_2xx_accepted_absorbs_invite_and_passes_ack_to_tu():
    lay, clock, transport, tu = layer()
    lay.request_received(request(), SRC)
    txn = tu.requests[0][1]
    ok = make_response(txn.request, 200, None, to_tag="x")
    txn.respond(ok)
    assert txn.state == "accepted"
    lay.request_received(request(), SRC)
    assert len(transport.responses(200)) == 1  # retransmitted INVITE absorbed (RFC 6026)
    txn.respond(ok)  # TU's own 2xx retransmission passes
    assert len(transport.responses(200)) == 2
    lay.request_received(request("ACK", branch="z9hG4bKother"), SRC)
    assert tu.requests[-1] == ("ACK", None)
    clock.advance(32)  # Timer L
    assert txn.state == "terminated" and not clock.getDelayedCalls()


def test_non_invite_trying_discards_then_completed_resends_final_until_j():
    lay, clock, transport, tu = layer()
    lay.request_received(request("OPTIONS"), SRC)
    txn = tu.requests[0][1]
    lay.request_received(request("OPTIONS"), SRC)
    assert transport.responses() == []  # Trying: discarded
    txn.respond(make_response(txn.request, 200, None, to_tag="x"))
    for _ in range(50):
        lay.request_received(request("OPTIONS"), SRC)
    assert len(transport.responses(200)) == 51
    assert len(tu.requests) == 1
    clock.advance(31.9)
    assert txn.state == "completed"
    clock.advance(0.1)  # Timer J = 64*T1
    assert txn.state == "terminated" and not clock.getDelayedCalls()


def test_non_invite_proceeding_resends_provisional():
    lay, clock, transport, tu = layer()
    lay.request_received(request("INFO"), SRC)
    txn = tu.requests[0][1]
    txn.respond(make_response(txn.request, 100))
    assert txn.state == "proceeding"
    lay.request_received(request("INFO"), SRC)
    assert [r.status for r in transport.responses()] == [100, 100]
    txn.respond(make_response(txn.request, 200, None, to_tag="x"))
    txn.respond(make_response(txn.request, 500, None, to_tag="x"))  # after final: dropped
    assert [r.status for r in transport.responses()] == [100, 100, 200]
    clock.advance(32)
    assert not clock.getDelayedCalls()


def test_non_invite_timer_j_zero_on_reliable():
    lay, clock, transport, tu = layer(reliable=True)
    lay.request_received(request("BYE"), SRC)
    txn = tu.requests[0][1]
    txn.respond(make_response(txn.request, 200, None, to_tag="x"))
    clock.advance(0)
    assert txn.state == "terminated" and not clock.getDelayedCalls()


def test_server_transport_error_tells_the_tu():
    lay, clock, transport, tu = layer()
    lay.request_received(request("BYE"), SRC)
    txn = tu.requests[0][1]
    transport.fail = True
    txn.respond(make_response(txn.request, 200, None, to_tag="x"))
    assert tu.events == ["transport"] and txn.state == "terminated"
    assert not clock.getDelayedCalls()


def test_matching_distinguishes_branch_sent_by_and_method():
    lay, clock, transport, tu = layer()
    lay.request_received(request("OPTIONS"), SRC)
    lay.request_received(request("OPTIONS", via_port=5090), SRC)  # other sent-by
    lay.request_received(request("OPTIONS", branch="z9hG4bKzzz"), SRC)
    lay.request_received(request("CANCEL"), SRC)  # same branch, other method
    assert len(tu.requests) == 4 and len(lay.servers) == 4
    lay.stop()
    assert not clock.getDelayedCalls()


def test_rfc2543_fallback_matching_without_magic_cookie():
    lay, clock, transport, tu = layer()
    lay.request_received(request("OPTIONS", branch="oldstyle"), SRC)
    lay.request_received(request("OPTIONS", branch="oldstyle"), SRC)
    lay.request_received(request("OPTIONS", branch="oldstyle", cseq=2), SRC)
    assert len(tu.requests) == 2
    lay.stop()
    assert not clock.getDelayedCalls()


def test_find_server_locates_the_invite_a_cancel_refers_to():
    lay, clock, transport, tu = layer()
    lay.request_received(request("INVITE"), SRC)
    cancel = request("CANCEL")
    assert lay.find_server(cancel, "INVITE") is tu.requests[0][1]
    lay.stop()
    assert not clock.getDelayedCalls()


def test_responses_match_client_transactions_by_branch_and_method():
    lay, clock, transport, tu = layer()

    @implementer(__import__("cbserver.sip.txn_client", fromlist=["x"]).IClientTransactionUser)
    class Owner:
        def __init__(self):
            self.got = []

        def response_received(self, txn, response):
            self.got.append(response.status)

        def transaction_timed_out(self, txn):
            pass

        def transport_failed(self, txn, error):
            pass

    owner = Owner()
    inv = request("INVITE", branch="z9hG4bKcli")
    lay.send_invite(inv, SRC, owner)
    cancel_resp = response_to(request("CANCEL", branch="z9hG4bKcli"), 200)
    lay.response_received(cancel_resp, SRC)  # CANCEL's 200 must not hit the INVITE
    lay.response_received(response_to(request("INVITE", branch="z9hG4bKelse"), 200), SRC)
    lay.response_received(response_to(inv, 180), SRC)
    assert owner.got == [180]
    assert tu.strays == [200, 200]
    lay.stop()
    assert not clock.getDelayedCalls() and not lay.clients


def test_request_with_unreadable_cseq_gets_stateless_400():
    lay, clock, transport, tu = layer()
    bad = request("OPTIONS")
    bad.headers.set("CSeq", "99999999999999999999 OPTIONS")
    lay.request_received(bad, SRC)
    assert [r.status for r in transport.responses()] == [400]
    assert tu.requests == [] and clock.getDelayedCalls() == []
