"""Unit tests for cbserver.sip.validate beyond the torture messages."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbserver.sip.message import parse_name_addr
from cbserver.sip.validate import ACCEPT, DROP, RESPOND, check_message
from tests.unit.sip_msg.rfc4475 import DATA, load

UA = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE"})


def request(method="OPTIONS", extra=b"", body=b"", uri=b"sip:a@example.com", cseq=None):
    cseq = cseq or b"1 " + method.encode()
    return (
        method.encode() + b" " + uri + b" SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc\r\n"
        b"From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\n"
        b"Call-ID: c1\r\nCSeq: " + cseq + b"\r\nMax-Forwards: 70\r\n" + extra
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )


def test_plain_options_is_accepted():
    verdict = check_message(request(), allowed_methods=UA)
    assert verdict.action == ACCEPT and verdict.message.method == "OPTIONS"


def test_known_but_refused_method_gets_405_with_allow():
    verdict = check_message(request("SUBSCRIBE"), allowed_methods=UA)
    assert verdict.response.status == 405
    assert set(verdict.response.headers.get_all("Allow")) == UA


def test_unknown_method_gets_501():
    assert check_message(request("FROB"), allowed_methods=UA).response.status == 501


def test_method_check_is_skipped_without_allowed_methods():
    assert check_message(request("FROB")).action == ACCEPT


def test_error_response_gets_a_to_tag_and_keeps_the_dialog_headers():
    verdict = check_message(request(cseq=b"1 INVITE"))
    resp = verdict.response
    assert resp.status == 400
    assert parse_name_addr(resp.headers.get("To")).tag
    assert resp.headers.get("Call-ID") == "c1" and resp.headers.get("CSeq") == "1 INVITE"


def test_ack_is_never_answered_even_when_bad():
    assert check_message(request("ACK", cseq=b"1 INVITE")).action == DROP
    assert check_message(request("ACK", extra=b"Require: foo\r\n")).action == ACCEPT


def test_request_without_usable_via_is_dropped():
    data = request().replace(b"SIP/2.0/UDP 192.0.2.1:5060", b"junk")
    assert check_message(data).action == DROP
    data = request(cseq=b"1 INVITE").replace(b"Via: SIP/2.0/UDP 192.0.2.1:5060;", b"X-Via: ")
    assert check_message(data).action == DROP


def test_require_supported_passes_and_unsupported_is_420():
    assert check_message(request(extra=b"Require: timer\r\n"), supported={"timer"}).action == ACCEPT
    verdict = check_message(request(extra=b"Require: timer, 100rel\r\n"), supported={"timer"})
    assert verdict.response.status == 420
    assert verdict.response.headers.get_all("Unsupported") == ["100rel"]


def test_invite_body_type_is_checked_415_with_accept():
    sdp = b"v=0\r\n"
    ok = check_message(request("INVITE", b"Content-Type: application/sdp\r\n", sdp))
    assert ok.action == ACCEPT
    mixed = check_message(request("INVITE", b"Content-Type: multipart/mixed;boundary=x\r\n", sdp))
    assert mixed.action == ACCEPT
    bad = check_message(request("INVITE", b"Content-Type: text/html\r\n", sdp))
    assert bad.response.status == 415
    assert bad.response.headers.get("Accept") == "application/sdp"


def test_info_bodies_are_left_to_the_ua():
    verdict = check_message(request("INFO", b"Content-Type: application/dtmf-relay\r\n", b"x"))
    assert verdict.action == ACCEPT


def test_body_without_content_type_is_400():
    assert check_message(request("INFO", body=b"x")).response.status == 400


@pytest.mark.parametrize(
    "accept,action",
    [(b"application/sdp", ACCEPT), (b"*/*", ACCEPT), (b"application/*", ACCEPT),
     (b"text/plain, application/sdp;level=1", ACCEPT), (b"text/*", RESPOND), (b"", RESPOND)],
)  # fmt: skip
def test_invite_accept_header_406(accept, action):
    verdict = check_message(request("INVITE", b"Accept: " + accept + b"\r\n"))
    assert verdict.action == action
    if action == RESPOND:
        assert verdict.response.status == 406


@pytest.mark.parametrize(
    "extra",
    [b"Max-Forwards: 256\r\n", b"Expires: 4294967296\r\n", b"Expires: soon\r\n",
     b"Date: Fri, 01 Jan 2010 16:00:00 EST\r\n", b"Call-ID: c2\r\n",
     b"Contact: <sip:x@h>, sip:y@h?z=1\r\n", b"Route: <sip:x@h;lr\r\n", b"Require: a b\r\n"],
)  # fmt: skip
def test_bad_headers_are_400(extra):
    assert check_message(request(extra=extra)).response.status == 400


def test_good_optional_headers_pass():
    extra = (
        b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\nExpires: 4294967295\r\nContact: *\r\n"
        b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    )
    assert check_message(request(extra=extra)).action == ACCEPT


@pytest.mark.parametrize(
    "uri,status",
    [(b"sips:a@example.com", None), (b"tel:+15551234", None), (b"mailto:a@example.com", 416),
     (b"sip:a@example.com?Subject=x", 400)],
)  # fmt: skip
def test_request_uri_schemes(uri, status):
    verdict = check_message(request(uri=uri))
    assert (verdict.response.status if verdict.response else None) == status


def test_oversized_datagram_gets_513():
    verdict = check_message(request(extra=b"X-Pad: " + b"p" * 2000 + b"\r\n"), max_size=1500)
    assert verdict.response.status == 513


def response(extra=b"", vias=1):
    via = b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKabc\r\n"
    return (
        b"SIP/2.0 200 OK\r\n" + via * vias
        + b"From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>;tag=2\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\n" + extra + b"Content-Length: 0\r\n\r\n"
    )


def test_good_response_is_accepted():
    assert check_message(response()).action == ACCEPT


@pytest.mark.parametrize(
    "data",
    [response(vias=2), response(vias=0), response(extra=b"CSeq: 2 INVITE\r\n"),
     response().replace(b"From: <sip:b@example.com>", b'From: "x <sip:b@example.com>'),
     b"SIP/2.0 200 OK\r\nContent-Length: 5\r\n\r\n"],
)  # fmt: skip
def test_bad_responses_are_dropped_silently(data):
    verdict = check_message(data)
    assert verdict.action == DROP and verdict.response is None


@pytest.mark.parametrize("digits", ["²", "٣", "1²"])
def test_non_ascii_digits_are_not_numbers(digits):
    for header in ("Content-Length", "Max-Forwards", "Expires"):
        data = request(extra=f"X-Pad: 1\r\n{header}: {digits}\r\n".encode())
        if header == "Content-Length":
            data = data.replace(b"Content-Length: 0\r\n", b"")
        verdict = check_message(data)
        assert verdict.action == RESPOND and verdict.response.status == 400


_ALPHABET = b" \t\r\n:;,<>\"\\%@=?/[]0123456789abcSIP/2.0\xc2\xb2\xff"


@given(
    name=st.sampled_from(sorted(p.name for p in DATA.glob("*.dat"))),
    edits=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 5000), st.sampled_from(_ALPHABET)),
        min_size=1, max_size=6,
    ),
)
@settings(max_examples=300, deadline=None)
def test_mutated_torture_messages_never_raise(name, edits):
    data = bytearray(load(name))
    for op, pos, byte in edits:
        pos %= len(data) + 1
        if op == 0 and pos < len(data):
            data[pos] = byte
        elif op == 1:
            data[pos:pos] = bytes([byte])
        elif pos < len(data):
            del data[pos]
    verdict = check_message(bytes(data), allowed_methods=UA)
    assert verdict.action in (ACCEPT, RESPOND, DROP)
    if verdict.response is not None:
        assert verdict.response.serialize().startswith(b"SIP/2.0 ")
