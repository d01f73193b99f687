"""Unit tests for cbserver.sip.message / headers / uri (RFC 3261 section 25 grammar)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbserver.sip.headers import unquote_display
from cbserver.sip.message import (
    Headers,
    Request,
    Response,
    SipParseError,
    StreamParser,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    unescape,
    uri_equal,
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_request_line_headers_and_body_are_parsed():
    msg = parse_message(INVITE)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri, msg.body) == ("INVITE", "sip:bob@biloxi.example.com", b"v=0\n")
    assert msg.headers.get("call-id") == "a84b4c76e66710@pc33.atlanta.example.com"
    assert msg.headers.get("CSEQ") == "314159 INVITE"


def test_serialize_round_trips_the_same_bytes():
    assert parse_message(INVITE).serialize() == INVITE


def test_serialize_rewrites_a_wrong_content_length():
    msg = parse_message(INVITE)
    msg.body = b"v=0\r\ns=-\r\n"
    again = parse_message(msg.serialize())
    assert again.headers.get("Content-Length") == "10"
    assert again.body == b"v=0\r\ns=-\r\n"


def test_serialize_adds_content_length_when_missing():
    req = Request("OPTIONS", "sip:a@b.example", Headers([("Call-ID", "x")]))
    assert b"\r\nContent-Length: 0\r\n\r\n" in req.serialize()


def test_compact_forms_fold_to_canonical_names():
    data = (
        b"OPTIONS sip:a@example.com SIP/2.0\r\nv: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n"
        b"i: abc\r\nf: <sip:x@example.com>;tag=1\r\nt: sip:a@example.com\r\nm: <sip:x@h>\r\n"
        b"c: text/plain\r\nk: timer\r\ns: hi\r\nl: 0\r\n\r\n"
    )
    names = [name for name, _ in parse_message(data).headers.items()]
    assert names == [
        "Via", "Call-ID", "From", "To", "Contact", "Content-Type", "Supported", "Subject",
        "Content-Length",
    ]  # fmt: skip


def test_folded_lines_are_unfolded():
    data = b"OPTIONS sip:a@example.com SIP/2.0\r\nSubject: one\r\n  two\r\n\ttwo-b\r\nl: 0\r\n\r\n"
    assert parse_message(data).headers.get("Subject") == "one two two-b"


def test_get_all_splits_list_headers_but_not_single_ones():
    h = Headers()
    h.add("Via", 'SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2')
    h.add("v", "SIP/2.0/TCP c;branch=z9hG4bK3")
    h.add("Contact", '"Doe, John" <sip:j@x;a=1,2>, <sip:k@y>')
    h.add("Date", "Sat, 13 Nov 2010 23:29:00 GMT")
    assert [parse_via(v).host for v in h.get_all("via")] == ["a", "b", "c"]
    assert h.get("Via").endswith("branch=z9hG4bK1")
    assert h.get_all("Contact") == ['"Doe, John" <sip:j@x;a=1,2>', "<sip:k@y>"]
    assert h.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]


def test_headers_set_add_remove_keep_order():
    h = Headers([("To", "a"), ("Via", "v1"), ("X-Foo", "1"), ("via", "v2")])
    h.set("VIA", "v3")
    assert h.items() == [("To", "a"), ("Via", "v3"), ("X-Foo", "1")]
    h.add("Via", "v0", first=True)
    assert h.get_all("Via") == ["v0", "v3"]
    h.remove("x-foo")
    assert "X-Foo" not in h and "x-FOO" not in h
    assert h.count("via") == 2


def test_response_parse_and_reason_phrase_with_utf8():
    data = "SIP/2.0 180 Звонит\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".encode()
    msg = parse_message(data)
    assert isinstance(msg, Response)
    assert (msg.status, msg.reason) == (180, "Звонит")
    assert msg.serialize() == data


def test_non_utf8_bytes_survive_a_round_trip():
    data = b"SIP/2.0 200 \xff\xfe odd\r\nX-Bin: \xc3\x28\r\nContent-Length: 0\r\n\r\n"
    assert parse_message(data).serialize() == data


def test_datagram_without_content_length_takes_the_rest_as_body():
    data = b"MESSAGE sip:a@example.com SIP/2.0\r\nCSeq: 1 MESSAGE\r\n\r\nhello"
    assert parse_message(data).body == b"hello"


def test_bytes_after_content_length_are_discarded():
    data = INVITE + b"garbage"
    assert parse_message(data).body == b"v=0\n"


@pytest.mark.parametrize(
    "length,reason",
    [(b"99", "exceeds"), (b"-1", "bad Content-Length"), (b"1" * 30, "bad Content-Length")],
)
def test_bad_content_length_on_a_request_is_a_400_with_partial(length, reason):
    data = INVITE.replace(b"Content-Length: 4", b"Content-Length: " + length)
    with pytest.raises(SipParseError, match=reason) as info:
        parse_message(data)
    assert info.value.status == 400
    assert info.value.partial.headers.get("Call-ID") == "a84b4c76e66710@pc33.atlanta.example.com"


def test_content_length_too_big_on_a_response_implies_no_response():
    data = b"SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status is None and info.value.partial is None


@pytest.mark.parametrize(
    "line",
    [
        b"INVITE  sip:a@example.com SIP/2.0",
        b"INVITE sip:a@example.com SIP/2.0 ",
        b"INVITE sip:a@example.com; lr SIP/2.0",
        b"INVITE <sip:a@example.com> SIP/2.0",
        b"INVITE sip:a@example.com",
        b"INV(ITE sip:a@example.com SIP/2.0",
    ],
)
def test_malformed_request_lines_are_400(line):
    with pytest.raises(SipParseError) as info:
        parse_message(line + b"\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert info.value.status == 400
    assert info.value.partial.headers.get("CSeq") == "1 INVITE"


def test_unknown_version_is_505():
    with pytest.raises(SipParseError) as info:
        parse_message(b"OPTIONS sip:a@example.com SIP/3.0\r\nContent-Length: 0\r\n\r\n")
    assert info.value.status == 505


@pytest.mark.parametrize("line", [b"SIP/2.0 2000 OK", b"SIP/2.0 099 Low", b"SIP/2.0 abc"])
def test_malformed_status_lines_imply_no_response(line):
    with pytest.raises(SipParseError) as info:
        parse_message(line + b"\r\nContent-Length: 0\r\n\r\n")
    assert info.value.status is None


def test_header_line_without_colon_is_rejected():
    with pytest.raises(SipParseError):
        parse_message(b"OPTIONS sip:a@example.com SIP/2.0\r\nNoColonHere\r\n\r\n")


def test_oversized_message_is_513():
    data = INVITE.replace(b"Content-Length: 4", b"Content-Length: 3000") + b"x" * 2996
    with pytest.raises(SipParseError) as info:
        parse_message(data, max_size=1000)
    assert info.value.status == 513


def test_leading_crlf_is_ignored_and_empty_datagram_rejected():
    assert parse_message(b"\r\n\r\n" + INVITE).method == "INVITE"
    with pytest.raises(SipParseError):
        parse_message(b"\r\n\r\n")


def test_multipart_body_is_passed_through_untouched():
    body = b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b\r\n\x00\xff\r\n--b--\r\n"
    data = (
        b"MESSAGE sip:a@example.com SIP/2.0\r\nContent-Type: multipart/mixed;boundary=b\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    msg = parse_message(data)
    assert msg.body == body and msg.serialize() == data


# ---- stream framing


def test_stream_parser_frames_by_content_length_across_chunks():
    parser = StreamParser()
    stream = b"\r\n\r\n" + INVITE + INVITE
    got = []
    for i in range(0, len(stream), 7):
        got.extend(parser.feed(stream[i : i + 7]))
    assert [m.body for m in got] == [b"v=0\n", b"v=0\n"]


def test_stream_parser_requires_content_length():
    parser = StreamParser()
    with pytest.raises(SipParseError):
        parser.feed(b"OPTIONS sip:a@example.com SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n")
    assert parser.broken


def test_stream_parser_reports_bad_message_and_continues():
    errors = []
    parser = StreamParser(on_error=errors.append)
    bad = b"INVITE  sip:a@x SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    msgs = parser.feed(bad + INVITE)
    assert len(errors) == 1 and errors[0].status == 400
    assert [m.method for m in msgs] == ["INVITE"]


def test_stream_parser_refuses_oversized_messages():
    parser = StreamParser(max_size=200)
    with pytest.raises(SipParseError) as info:
        parser.feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: 900"))
    assert info.value.status == 513 and parser.broken


# ---- URIs


def test_sip_uri_with_everything():
    uri = parse_uri("sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=hi&x=%20")
    assert (uri.scheme, uri.user, uri.password, uri.host, uri.port) == (
        "sips", "alice", "secret", "[2001:db8::1]", 5061,
    )  # fmt: skip
    assert uri.params == {"transport": "tcp", "lr": None}
    assert uri.headers == {"subject": "hi", "x": "%20"}
    assert str(uri) == "sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?subject=hi&x=%20"
    assert uri.host_port() == ("2001:db8::1", 5061)


def test_user_part_may_hold_semicolons_and_escapes():
    uri = parse_uri("sip:user;par=u%40example.net@example.com")
    assert (uri.user, uri.host) == ("user;par=u%40example.net", "example.com")
    assert unescape(uri.user) == "user;par=u@example.net"
    assert unescape("%75se%72") == "user"


def test_tel_and_other_schemes():
    tel = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (tel.user, tel.params) == ("+1-201-555-0123", {"phone-context": "example.com"})
    assert str(tel) == "tel:+1-201-555-0123;phone-context=example.com"
    other = parse_uri("soap.beep://192.0.2.103:3002")
    assert (other.scheme, other.opaque) == ("soap.beep", "//192.0.2.103:3002")


@pytest.mark.parametrize(
    "text",
    ["sip:", "sip:user@", "sip:a b@example.com", "sip:a@exa mple.com", "sip:a@host:99999",
     "sip:a@host;=x", "sip:%zz@host", "nocolon", ":x", "sip:a@[::1", "tel:abc!"],
)  # fmt: skip
def test_junk_uris_raise(text):
    with pytest.raises(SipParseError):
        parse_uri(text)


# ---- name-addr, Via, CSeq


def test_name_addr_quoted_display_with_escapes():
    na = parse_name_addr(r'"J Rosenberg \\\""  <sip:jdrosen@example.com> ; tag = 98asjd8')
    assert na.display == r'"J Rosenberg \\\""'
    assert na.tag == "98asjd8"
    assert str(na) == r'"J Rosenberg \\\"" <sip:jdrosen@example.com>;tag=98asjd8'


def test_addr_spec_params_belong_to_the_header():
    na = parse_name_addr("sip:+19725552222@gw1.example.net;unknownparam;tag=7")
    assert na.uri.params == {} and na.params == {"unknownparam": None, "tag": "7"}
    inside = parse_name_addr("<sip:+19725552222@gw1.example.net;unknownparam>")
    assert inside.uri.params == {"unknownparam": None} and inside.params == {}


def test_token_display_name_without_space_before_angle():
    na = parse_name_addr("caller<sip:caller@example.com>;tag=323")
    assert (na.display, na.uri.user, na.tag) == ("caller", "caller", "323")


@pytest.mark.parametrize(
    "text",
    ['"Mr. J. User <sip:j.user@example.com>', "Bell, Alexander <sip:a@example.com>",
     "< sip:t.watson@example.org >", "sip:user@example.com?Route=%3Csip:x%3E",
     '"Joe" <sip:joe@example.org>;;;', "<sip:a@example.com"],
)  # fmt: skip
def test_bad_name_addrs_raise(text):
    with pytest.raises(SipParseError):
        parse_name_addr(text)


def test_via_with_lws_everywhere():
    via = parse_via("SIP  / 2.0  / tcp     spindle.example.com :5070  ; branch  =   z9hG4bK9ikj8")
    assert (via.transport, via.host, via.port, via.branch) == (
        "TCP", "spindle.example.com", 5070, "z9hG4bK9ikj8",
    )  # fmt: skip
    assert str(via) == "SIP/2.0/TCP spindle.example.com:5070;branch=z9hG4bK9ikj8"


def test_via_received_rport_and_ipv6():
    via = parse_via("SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKx;rport;received=192.0.2.1")
    assert via.host == "[2001:db8::9]" and via.params["rport"] is None
    assert via.params["received"] == "192.0.2.1"


@pytest.mark.parametrize("text", ["SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP 192.0.2.15;;"])
def test_bad_via_raises(text):
    with pytest.raises(SipParseError):
        parse_via(text)


def test_cseq():
    assert parse_cseq("0009\t INVITE") == (9, "INVITE")
    for bad in ("1", "x INVITE", "36893488147419103232 REGISTER", "1 INV ITE"):
        with pytest.raises(SipParseError):
            parse_cseq(bad)


# ---- helpers


def test_new_ids_are_fresh_and_well_formed():
    assert new_branch().startswith("z9hG4bK") and new_branch() != new_branch()
    assert new_tag() != new_tag()
    assert new_call_id("h.example.com").endswith("@h.example.com")


def test_make_response_copies_the_dialog_headers_and_adds_a_to_tag():
    req = parse_message(INVITE)
    resp = make_response(req, 486, to_tag="abc")
    assert resp.reason == "Busy Here"
    assert [n for n, _ in resp.headers.items()] == ["Via", "From", "To", "Call-ID", "CSeq"]
    assert parse_name_addr(resp.headers.get("To")).tag == "abc"
    assert make_response(req, 100, to_tag="abc").headers.get("To") == req.headers.get("To")
    parsed = parse_message(resp.serialize())
    assert parsed.status == 486 and parsed.headers.get("Content-Length") == "0"


_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~", min_size=1, max_size=12)


@given(
    method=_token,
    values=st.lists(st.tuples(_token, st.text(min_size=0, max_size=30).map(str.strip)), max_size=8),
    body=st.binary(max_size=64),
)
def test_any_serialized_request_parses_back(method, values, body):
    headers = Headers([(n, v.replace("\r", "").replace("\n", "")) for n, v in values])
    headers.remove("Content-Length")
    req = Request(method, "sip:x@example.com", headers, body)
    again = parse_message(req.serialize())
    assert (again.method, again.body) == (method, body)
    assert [v for n, v in again.headers.items() if n != "Content-Length"] == [
        v.strip() for _, v in headers.items()
    ]


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_sip_parse_error(data):
    try:
        msg = parse_message(b"OPTIONS sip:a@example.com SIP/2.0\r\n" + data)
    except SipParseError as exc:
        assert exc.status in (None, 400, 505, 513)
    else:
        assert msg.method == "OPTIONS"


def test_bare_lf_and_mixed_line_ends_split_into_lines():
    data = b"OPTIONS sip:a@example.com SIP/2.0\nCSeq: 1 OPTIONS\r\nCall-ID: x\nl: 0\r\n\r\n"
    msg = parse_message(data)
    assert msg.headers.get("CSeq") == "1 OPTIONS" and msg.headers.get("Call-ID") == "x"
    assert b"\n" not in msg.serialize().replace(b"\r\n", b"")


def test_lone_cr_in_headers_is_rejected():
    with pytest.raises(SipParseError):
        parse_message(b"OPTIONS sip:a@example.com SIP/2.0\r\nX-A: 1\rX-B: 2\r\nl: 0\r\n\r\n")


def test_bad_header_in_a_response_implies_no_response():
    with pytest.raises(SipParseError) as info:
        parse_message(b"SIP/2.0 200 OK\r\nno colon\r\nContent-Length: 0\r\n\r\n")
    assert info.value.status is None and info.value.partial is None


_user = st.text(alphabet="abcXYZ019-_.!~*'()&=+$,;?/", min_size=1, max_size=12)
_host = st.one_of(
    # RFC 3261 25.1: a domain label ends with an alphanumeric ("a-" is not a host).
    st.from_regex(r"[a-z]([a-z0-9-]{0,7}[a-z0-9])?(\.[a-z][a-z0-9]{0,6}){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda ip: f"[{ip}]"),
)
_pname = st.text(alphabet="abcxyz-", min_size=1, max_size=6)
_pvalue = st.one_of(st.none(), st.text(alphabet="abc019-_.:", min_size=1, max_size=6))


@given(
    scheme=st.sampled_from(["sip", "sips"]),
    user=st.one_of(st.none(), _user),
    host=_host,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    params=st.dictionaries(_pname, _pvalue, max_size=3),
    display=st.one_of(st.none(), st.text(alphabet='ab c"\\', max_size=8)),
    tag=st.one_of(st.none(), st.text(alphabet="abc0123", min_size=1, max_size=8)),
)
def test_uri_and_name_addr_round_trip(scheme, user, host, port, params, display, tag):
    text = f"{scheme}:" + (f"{user}@" if user else "") + host
    text += f":{port}" if port is not None else ""
    text += "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
    uri = parse_uri(text)
    assert (uri.user, uri.host, uri.port, uri.params) == (user, host, port, params)
    assert str(uri) == text
    quoted = None
    if display is not None:
        quoted = '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'
    na = parse_name_addr((f"{quoted} " if quoted else "") + f"<{text}>" + (
        f";tag={tag}" if tag else ""))
    assert na.display == quoted and str(na.uri) == text and na.tag == tag
    assert parse_name_addr(str(na)) == na
    if display is not None:
        assert unquote_display(na.display) == display


@pytest.mark.parametrize(
    "a,b",
    [  # RFC 3261 19.1.4 examples of equivalent URIs
        ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"),
        ("sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
         "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"),
        ("sip:alice@atlanta.com?subject=project%20x&priority=urgent",
         "sip:alice@atlanta.com?priority=urgent&subject=project%20x"),
    ],
)  # fmt: skip
def test_equivalent_uris(a, b):
    assert uri_equal(a, b) and uri_equal(b, a)


@pytest.mark.parametrize(
    "a,b",
    [  # RFC 3261 19.1.4 examples of URIs that differ
        ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
        ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
        ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
        ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
        ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
        ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ],
)  # fmt: skip
def test_different_uris(a, b):
    assert not uri_equal(a, b) and not uri_equal(b, a)


def test_reason_text_keeps_utf8_and_tab_and_replaces_what_rfc3261_forbids():
    # RFC 3261 25.1: Reason-Phrase is UTF-8 text, SP and HTAB. In reason_text (what is shown
    # and stored) a Latin-1 byte, NUL, another control or DEL becomes U+FFFD; reason keeps
    # the bytes for an exact round trip.
    tail = (b"\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
            b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    cases = {b"Busy\x00Here\x01": "Busy\ufffdHere\ufffd", b"Ocupado \xf1": "Ocupado \ufffd",
             "Não encontrado".encode(): "Não encontrado", b"Busy\there": "Busy\there",
             b"Gone\x7f": "Gone\ufffd"}
    for raw, shown in cases.items():
        response = parse_message(b"SIP/2.0 486 " + raw + tail)
        assert (response.status, response.reason_text) == (486, shown)
        assert response.serialize() == b"SIP/2.0 486 " + raw + tail
