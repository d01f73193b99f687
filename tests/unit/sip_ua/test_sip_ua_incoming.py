"""Requests outside any dialog, and requests naming a dialog we do not have."""

import pytest
from twisted.internet.task import Clock

from cbserver.sip.message import parse_message
from cbserver.sip.ua import UserAgent
from tests.unit.sip_ua.fakes import FakeTransport
from tests.unit.sip_ua.uafakes import TRUNK, config, out_of_dialog


def ua_and_transport():
    clock, transport = Clock(), FakeTransport()
    return UserAgent(transport, clock, config()), clock, transport


def deliver(ua, req):
    ua.sink.request_received(parse_message(req.serialize()), TRUNK)


def drain(ua, clock):
    ua.layer.stop()
    assert clock.getDelayedCalls() == []


def test_options_gets_200_with_allow():
    ua, clock, transport = ua_and_transport()
    deliver(ua, out_of_dialog("OPTIONS"))
    (resp,) = transport.responses()
    assert resp.status == 200
    assert "INVITE" in resp.headers.get_all("Allow") and "BYE" in resp.headers.get_all("Allow")
    assert ";tag=" in resp.headers.get("To")
    drain(ua, clock)


def test_inbound_invite_is_refused_politely():
    ua, clock, transport = ua_and_transport()
    deliver(ua, out_of_dialog("INVITE"))
    assert [r.status for r in transport.responses()] == [403]
    drain(ua, clock)


@pytest.mark.parametrize("method,status", [("MESSAGE", 405), ("REGISTER", 405), ("FROB", 501)])
def test_unsupported_methods(method, status):
    ua, clock, transport = ua_and_transport()
    deliver(ua, out_of_dialog(method))
    (resp,) = transport.responses()
    assert resp.status == status
    if status == 405:
        assert "OPTIONS" in resp.headers.get_all("Allow")
    drain(ua, clock)


def test_required_unknown_extension_gets_420_with_unsupported():
    ua, clock, transport = ua_and_transport()
    deliver(ua, out_of_dialog("OPTIONS", headers=[("Require", "nonsense, timer")]))
    (resp,) = transport.responses()
    assert resp.status == 420 and resp.headers.get("Unsupported") == "nonsense"
    drain(ua, clock)


def test_unsupported_uri_scheme_gets_416():
    ua, clock, transport = ua_and_transport()
    deliver(ua, out_of_dialog("OPTIONS", uri="http://example.com/x"))
    assert [r.status for r in transport.responses()] == [416]
    drain(ua, clock)


@pytest.mark.parametrize("method", ["BYE", "INFO", "UPDATE"])
def test_in_dialog_request_for_unknown_dialog_gets_481(method):
    ua, clock, transport = ua_and_transport()
    req = out_of_dialog(method)
    req.headers.set("To", "<sip:cbuser@127.0.0.1>;tag=nosuch")
    deliver(ua, req)
    assert [r.status for r in transport.responses()] == [481]
    drain(ua, clock)


def test_bye_without_to_tag_gets_481():
    ua, clock, transport = ua_and_transport()
    deliver(ua, out_of_dialog("BYE"))
    assert [r.status for r in transport.responses()] == [481]
    drain(ua, clock)


def test_cancel_for_unknown_invite_gets_481_and_stray_ack_is_silent():
    ua, clock, transport = ua_and_transport()
    deliver(ua, out_of_dialog("CANCEL"))
    deliver(ua, out_of_dialog("ACK", branch="z9hG4bKstray"))
    assert [r.status for r in transport.responses()] == [481]
    drain(ua, clock)


def test_retransmitted_options_flood_is_absorbed():
    ua, clock, transport = ua_and_transport()
    for _ in range(200):
        deliver(ua, out_of_dialog("OPTIONS"))
    # One 200, then each retransmission gets the same final again (17.2.2), never the TU.
    assert {r.status for r in transport.responses()} == {200}
    assert len(ua.layer.servers) == 1
    clock.advance(32)
    assert ua.layer.servers == {} and clock.getDelayedCalls() == []


# Issue 14 item 8: a stranger (not the trunk, no dialog of ours) gets one response per request.

STRANGER = ("198.51.100.66", 5099)  # documentation address: fake transport only


def test_a_strangers_invite_gets_one_403_and_no_retransmission():
    ua, clock, transport = ua_and_transport()
    ua.sink.request_received(parse_message(out_of_dialog("INVITE").serialize()), STRANGER)
    clock.advance(40)  # past Timer H: G would have retransmitted the 403 11 times
    assert [r.status for r in transport.responses()] == [403]
    assert ua.layer.servers == {}
    drain(ua, clock)


def test_the_trunks_invite_still_gets_a_retransmitted_403_until_acked():
    ua, clock, transport = ua_and_transport()
    deliver(ua, out_of_dialog("INVITE"))
    clock.advance(2)
    assert [r.status for r in transport.responses()].count(403) > 1  # RFC 3261 17.2.1 Timer G
    drain(ua, clock)


@pytest.mark.parametrize("method", ["OPTIONS", "BYE", "FROB"])
def test_a_strangers_other_requests_get_one_response_each(method):
    ua, clock, transport = ua_and_transport()
    req = parse_message(out_of_dialog(method).serialize())
    ua.sink.request_received(req, STRANGER)
    clock.advance(40)
    assert len(transport.responses()) == 1 and ua.layer.servers == {}
    drain(ua, clock)
