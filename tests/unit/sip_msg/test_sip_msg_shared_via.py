"""``parse_via_shared``: one parse per Via text for the readers, never a changed answer."""

from __future__ import annotations

import pytest

from cbserver.sip import headers
from cbserver.sip.headers import parse_via, parse_via_shared
from cbserver.sip.message import SipParseError
from cbserver.sip.transaction import client_key, server_key
from cbserver.sip.transport import response_destination, stamp_via
from tests.unit.sip_ua.fakes import request, response_to

VIA = "SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK-shared-1;rport"


def test_the_same_text_gives_the_same_via_equal_to_a_fresh_parse():
    first = parse_via_shared(VIA)
    assert parse_via_shared(VIA) is first
    assert first == parse_via(VIA)
    assert (first.host, first.port, first.branch) == ("192.0.2.7", 5062, "z9hG4bK-shared-1")


def test_a_bad_via_raises_every_time_and_is_not_remembered():
    for _ in range(2):
        with pytest.raises(SipParseError):
            parse_via_shared("SIP/2.0/UDP ;branch=x")
    assert "SIP/2.0/UDP ;branch=x" not in headers._SHARED_VIAS


def test_the_table_stays_within_its_bound(monkeypatch):
    monkeypatch.setattr(headers, "_SHARED_VIAS", {})
    monkeypatch.setattr(headers, "_SHARED_VIAS_MAX", 4)
    for n in range(10):
        parse_via_shared(f"SIP/2.0/UDP 192.0.2.1:{5000 + n};branch=z9hG4bK{n}")
    assert [v.port for v in headers._SHARED_VIAS.values()] == [5006, 5007, 5008, 5009]


def test_stamping_a_request_leaves_the_shared_via_of_its_old_text_alone():
    req = request(via_host="192.0.2.7", via_port=5062, branch="z9hG4bK-stamp")
    before = req.headers.get("Via")
    shared = parse_via_shared(before)
    server_key(req)  # a reader first, as validation and matching do
    stamp_via(req, ("198.51.100.9", 40000), source_port=True)  # parses its own copy
    assert req.headers.get("Via") != before
    assert "received" not in shared.params and "rport" not in shared.params
    assert parse_via_shared(before) == parse_via(before)
    # the readers see the stamped text: the response goes back to the packet's source
    assert response_destination(response_to(req, 200)) == ("198.51.100.9", 40000)


def test_transaction_keys_are_those_of_a_fresh_parse():
    req = request(branch="z9hG4bK-key", via_port=5071)
    assert client_key(req) == ("z9hG4bK-key", "INVITE")
    assert client_key(response_to(req, 180)) == ("z9hG4bK-key", "INVITE")
    assert server_key(req)[:3] == ("z9hG4bK-key", "127.0.0.1", 5071)
