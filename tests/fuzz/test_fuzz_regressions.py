"""Inputs that fuzzing found crashing a parser, each refused now with the parser's typed error.

The same inputs are kept in the targets' corpus (``tests/data/fuzz/<target>/regress-*``), so
the corpus replay in ``test_fuzz.py`` checks them through the whole target as well.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from cbserver.billing import validation as v
from cbserver.billing.catalog import RATE
from cbserver.billing.provision import load
from cbserver.billing.validation import ValidationError
from cbserver.commands.rates import parse_csv

HEADER = b"prefix,first_interval,next_interval,first_price,next_price\n"


@pytest.mark.parametrize("value", ["1e999999999", "-1E+999999999", Decimal("1E+999999999")])
def test_a_price_with_a_huge_exponent_is_too_large_not_decimal_overflow(value):
    # Was decimal.Overflow from abs() in the decimal context (rates CSV and admin API bodies).
    with pytest.raises(ValidationError, match="too large"):
        v.decimal(minimum=None)("first_price", value)


def test_the_size_limit_is_unchanged():
    parse = v.decimal()
    assert parse("price", "999999999999999.9999") == Decimal("999999999999999.9999")
    assert parse("price", "0E+999999999") == 0
    with pytest.raises(ValidationError, match="too large"):
        parse("price", "1000000000000000")


def test_a_rates_csv_row_with_a_huge_exponent_is_a_row_error():
    rows, problems = parse_csv(HEADER + b"4,1,1,1e999999999,1\n")
    assert problems == []
    with pytest.raises(ValidationError) as e:
        v.clean(RATE, rows[0][1])
    assert e.value.field == "first_price"


@pytest.mark.parametrize("doc", [
    b"x = " + b"[" * 1200 + b"]" * 1200 + b"\n",  # was RecursionError from tomllib
    b"x = " + b"{a=" * 700 + b"1" + b"}" * 700 + b"\n",
])
def test_a_provisioning_file_nested_too_deeply_is_refused(tmp_path, doc):
    path = tmp_path / "p.toml"
    path.write_bytes(doc)
    with pytest.raises(ValidationError, match="nested too deeply") as e:
        load(path)
    assert e.value.field == "file"


def test_a_password_file_name_with_a_nul_is_refused(tmp_path):
    # Was ValueError("embedded null byte") from the file system call.
    path = tmp_path / "p.toml"
    path.write_bytes(b'[[account]]\nid = "1001"\npassword_file = "a\\u0000b"\n')
    with pytest.raises(ValidationError) as e:
        load(path)
    assert e.value.field == "account[0].password_file"


def test_a_password_file_that_is_not_utf8_is_refused(tmp_path):
    # Was UnicodeDecodeError.
    (tmp_path / "secret").write_bytes(b"\xff\xfe")
    path = tmp_path / "p.toml"
    path.write_bytes(b'[[account]]\nid = "1001"\npassword_file = "secret"\n')
    with pytest.raises(ValidationError) as e:
        load(path)
    assert e.value.field == "account[0].password_file"


# ---- SIP and SDP: numbers int() cannot read ---------------------------------------------------
# str.isdigit() and a digits check let through "²" and runs of more than 4300 digits, which
# int() refuses with a bare ValueError; a datagram carrying one escaped the typed errors.

LONG = "9" * 4400
SDP_HEAD = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


def _invite(extra: str = "", cseq: str = "1") -> bytes:
    return (f"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKx\r\n"
            f"From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: x\r\n"
            f"CSeq: {cseq} INVITE\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n").encode()


def test_a_cseq_of_thousands_of_digits_is_too_large():
    from cbserver.sip.headers import parse_cseq
    from cbserver.sip.uri import SipParseError

    with pytest.raises(SipParseError, match="too large"):
        parse_cseq(f"{LONG} INVITE")
    assert parse_cseq("0000000000001 INVITE") == (1, "INVITE")  # leading zeros still read


@pytest.mark.parametrize("data", [_invite(cseq=LONG), _invite(f"Expires: {LONG}\r\n")])
def test_a_request_with_a_huge_number_gets_400(data):
    from cbserver.sip.validate import RESPOND, check_message

    verdict = check_message(data)
    assert verdict.action == RESPOND and verdict.response.status == 400


@pytest.mark.parametrize("media", [
    f"m=audio {LONG} RTP/AVP 0\r\n", f"m=audio 4000/{LONG} RTP/AVP 0\r\n",
])
def test_an_m_line_with_a_huge_port_is_an_sdp_error(media):
    from cbserver.sip.sdp import SdpError, parse_sdp

    with pytest.raises(SdpError, match="bad port"):
        parse_sdp(SDP_HEAD + media)


def test_a_huge_ptime_or_clock_rate_is_ignored():
    from cbserver.sip.sdp import negotiate

    choice = negotiate((SDP_HEAD + f"m=audio 4000 RTP/AVP 0 8\r\na=rtpmap:8 PCMA/{LONG}\r\n"
                        f"a=ptime:{LONG}\r\n").encode())
    assert (choice.codec, choice.payload_type, choice.ptime) == ("PCMU", 0, 20)


@pytest.mark.parametrize("value", ["\u00b2", "\u00b2;refresher=uac", LONG, "0"])
def test_a_session_expires_that_is_not_a_delta_reads_as_none(value):
    from cbserver.sip.call_dialog import _parse_session_expires

    assert _parse_session_expires(value) is None
    assert _parse_session_expires("0000090;refresher=uas") == (90, "uas")


# ---- number literals beyond Decimal's range -----------------------------------------------------
# Found by atheris on the admin API: json.loads(parse_float=Decimal) let decimal.InvalidOperation
# out of "2E44444444444444444444" (500); tomllib does the same for a provisioning file.

def test_parse_decimal_turns_an_exponent_out_of_range_into_value_error():
    with pytest.raises(ValueError, match="out of range"):
        v.parse_decimal("2E44444444444444444444")
    assert v.parse_decimal("0.05") == Decimal("0.05")


def test_an_admin_body_with_a_number_out_of_range_is_a_body_error():
    import io

    from cbserver.web.admin import AdminApp

    class Request:
        content = io.BytesIO(b'{"prefix":"4","first_price":2E44444444444444444444}')

    with pytest.raises(ValidationError) as e:
        AdminApp._body(None, Request())
    assert e.value.field == "body"


def test_a_provisioning_file_with_a_number_out_of_range_is_refused(tmp_path):
    path = tmp_path / "p.toml"
    path.write_bytes(b'[[tariff]]\nname = "t"\ncurrency = "EUR"\nx = 2E44444444444444444444\n')
    with pytest.raises(ValidationError, match="out of range") as e:
        load(path)
    assert e.value.field == "file"
