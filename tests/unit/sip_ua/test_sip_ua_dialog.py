"""Dialog state: route set, target refresh, request building (RFC 3261 12)."""

import json

import pytest
from zope.interface.verify import verifyObject

from cbserver.sip.dialog import Dialog, DialogError, IDialog
from cbserver.sip.message import make_response, parse_message
from tests.unit.sip_ua.fakes import request


def dialog_with(record_routes, contact="<sip:far@10.0.0.1:5062>"):
    inv = request("INVITE")
    inv.headers.set("From", "<sip:a@127.0.0.1>;tag=ours")
    resp = make_response(inv, 200, None, to_tag="theirs")
    for rr in record_routes:
        resp.headers.add("Record-Route", rr)
    resp.headers.add("Contact", contact)
    return Dialog.from_response(inv, parse_message(resp.serialize()))


def test_ids_and_route_set_reversed():
    d = dialog_with(["<sip:p2.example;lr>", "<sip:p1.example;lr>"])
    assert d.id == ("c1@x", "ours", "theirs")
    assert d.route_set == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert d.state == "confirmed"
    bye = d.new_request("BYE", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1")
    assert bye.uri == "sip:far@10.0.0.1:5062"
    assert bye.headers.get_all("Route") == d.route_set
    assert bye.headers.get("CSeq") == "2 BYE"
    assert d.next_hop().host == "p1.example"


def test_strict_router_becomes_request_uri():
    d = dialog_with(["<sip:strict.example>"])
    req = d.new_request("INFO", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1")
    assert req.uri == "sip:strict.example"
    assert req.headers.get_all("Route") == ["<sip:far@10.0.0.1:5062>"]


def test_ack_reuses_invite_cseq_and_target_refresh():
    d = dialog_with([])
    ack = d.ack_for_2xx(1, "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK2")
    assert ack.headers.get("CSeq") == "1 ACK" and d.local_seq == 1
    reinv = request("INVITE")
    reinv.headers.set("Contact", "<sip:moved@10.0.0.2>")
    d.refresh_target(reinv)
    assert d.remote_target == "sip:moved@10.0.0.2"


def test_remote_cseq_must_increase():
    d = dialog_with([])
    d.check_request(request("INFO", cseq=5))
    d.check_request(request("ACK", cseq=5))  # ACK reuses a CSeq
    with pytest.raises(DialogError) as err:
        d.check_request(request("INFO", cseq=4))
    assert err.value.status == 500


def test_dialog_provides_its_interface():
    assert verifyObject(IDialog, dialog_with([]))


def test_to_dict_is_plain_json_and_round_trips():
    d = dialog_with(["<sip:p2.example;lr>", "<sip:p1.example;lr>"])
    d.new_request("BYE", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1")  # local CSeq moves on
    d.check_request(request("INFO", cseq=7))  # and the remote one is known
    data = d.to_dict()
    assert json.loads(json.dumps(data)) == data  # nothing but JSON values
    assert set(data) == {
        "call_id", "local_tag", "remote_tag", "local_party", "remote_party", "remote_target",
        "route_set", "local_seq", "remote_seq", "secure", "state",
    }  # fmt: skip
    back = Dialog.from_dict(json.loads(json.dumps(data)))
    assert back == d and back.to_dict() == data
    assert (back.local_seq, back.remote_seq, back.secure) == (2, 7, False)
    # The rebuilt dialog goes on where the stored one stopped (what crash recovery needs).
    bye = back.new_request("BYE", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK3")
    assert bye.headers.get("CSeq") == "3 BYE" and bye.headers.get_all("Route") == d.route_set
    with pytest.raises(DialogError):
        back.check_request(request("INFO", cseq=6))


def test_fresh_dialog_round_trips_with_no_remote_cseq():
    d = dialog_with([])
    assert d.remote_seq is None
    assert Dialog.from_dict(d.to_dict()) == d


def test_ok_response_names_our_contact_and_allow_and_carries_the_answer():
    d = dialog_with([])
    reinv = request("INVITE")
    resp = d.ok_response(reinv, contact="<sip:me@127.0.0.1:5070>", allow="INVITE, BYE", body=b"v=0\r\n")
    assert resp.status == 200 and resp.headers.get("Contact") == "<sip:me@127.0.0.1:5070>"
    assert resp.headers.get_all("Allow") == ["INVITE", "BYE"]
    assert resp.headers.get("Content-Type") == "application/sdp" and resp.body == b"v=0\r\n"
    bare = d.ok_response(request("OPTIONS"), contact="<sip:me@h>", allow="BYE")
    assert bare.body == b"" and bare.headers.get("Content-Type") is None
