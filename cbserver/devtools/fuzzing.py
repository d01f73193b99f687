"""Fuzz targets: every parser that reads input from outside, driven as the server drives it.

Each ``Target`` takes one byte string, feeds it through the same calls the server makes on a
datagram, header, packet, request body or file, and lets through only the parser's own typed
error (``allowed``). Any other exception is a crash: the input found a path where the server
would log a traceback, answer 500 or drop a connection instead of refusing the input cleanly
(issue 14, "A fuzzing harness"). ``bench/fuzz.py`` runs the targets under atheris
(coverage-guided, libFuzzer); ``tests/fuzz/`` runs a short, seeded run of each in the test
command. The corpus of each target is ``tests/data/fuzz/<name>/``.

Targets never touch the network, the database or the clock, so any input can be replayed.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

from cbserver.billing import validation as v
from cbserver.billing.accounts import ACCOUNT, BATCH, CUSTOMER
from cbserver.billing.catalog import DESTINATION, PRODUCT, RATE, TARIFF, check_rate
from cbserver.billing.generator import GENERATOR
from cbserver.billing.payments import PAYMENT
from cbserver.billing.provision import SECTIONS, load
from cbserver.billing.validation import ValidationError
from cbserver.commands.rates import parse_csv
from cbserver.media import dtmf, rtcp, rtp
from cbserver.sip import auth, headers, sdp, uri, validate
from cbserver.sip.message import StreamParser, parse_message
from cbserver.web import api as web_api


@dataclass(frozen=True)
class Target:
    """One fuzz target: ``run(data)`` may raise only ``allowed`` (the parser's typed errors)."""

    name: str
    run: Callable[[bytes], None]
    allowed: tuple[type[BaseException], ...]
    what: str


def one_input(target: Target, data: bytes) -> None:
    """Run ``target`` on ``data``, swallowing its typed errors; anything else propagates."""
    try:
        target.run(data)
    except target.allowed:
        pass


# ---- SIP -------------------------------------------------------------------------------------

_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "PRACK"})


def _sip_message(data: bytes) -> None:
    """A UDP datagram and the same bytes on a TCP stream, through the UAS checks (RFC 3261 8.2)."""
    verdict = validate.check_message(data, allowed_methods=_METHODS, supported=("timer", "100rel"))
    if verdict.response is not None:
        verdict.response.serialize()
    msg = verdict.message
    if verdict.action == validate.ACCEPT and msg is not None:
        # What the UA reads out of an accepted message after the checks.
        h = msg.headers
        for name in ("From", "To"):
            headers.parse_name_addr(h.get(name)).tag  # noqa: B018
        for value in h.get_all("Contact"):
            if value != "*":
                str(headers.parse_name_addr(value))
        for value in h.get_all("Via"):
            via = headers.parse_via(value)
            via.params.get("branch")
        headers.parse_cseq(h.get("CSeq"))
        msg.serialize()
    # The stream framing (RFC 3261 18.3) on the same bytes, split in two reads.
    parser = StreamParser()
    cut = len(data) // 2
    for chunk in (data[:cut], data[cut:]):
        parser.feed(chunk)


def _sip_headers(data: bytes) -> None:
    """One header value; the first byte picks which header parser reads the rest."""
    if not data:
        return
    text = data[1:].decode("utf-8", "replace")
    kind = data[0] % 6
    if kind == 0:
        via = headers.parse_via(text)
        str(via.host), via.port  # noqa: B018
    elif kind == 1:
        str(headers.parse_name_addr(text))
    elif kind == 2:
        headers.parse_cseq(text)
    elif kind == 3:
        headers.parse_generic_params(text)
    elif kind == 4:
        for item in headers.split_list(text):
            headers.unquote_display(item)
    else:
        h = headers.Headers([("Via", text), ("Contact", text), ("Require", text)])
        h.get_all("Via"), h.get("Contact"), h.counts()  # noqa: B018


def _sip_uri(data: bytes) -> None:
    """A Request-URI or a URI inside a header (RFC 3261 19.1, RFC 3966)."""
    text = data.decode("utf-8", "replace")
    parsed = uri.parse_uri(text)
    str(parsed)
    uri.uri_equal(parsed, text)


# ---- SDP and digest --------------------------------------------------------------------------

_OURS = sdp.make_offer("192.0.2.1", 40000)


def _sdp(data: bytes) -> None:
    """An offer or answer body (RFC 4566, RFC 3264) as the UA reads and answers it."""
    parsed = sdp.parse_sdp(data)
    for m in parsed.media:
        m.port, m.formats  # noqa: B018
    sdp.negotiate(data)
    sdp.make_answer(data, "192.0.2.1", 40000, session_id=1, version=1)
    sdp.answer_reoffer(data, _OURS, _OURS)


def _digest(data: bytes) -> None:
    """``WWW-Authenticate``/``Proxy-Authenticate`` values from a carrier (RFC 7616 3.3)."""
    values = data.decode("utf-8", "replace").split("\n")
    challenge = auth.pick_challenge(values)
    qop = "auth" if "auth" in challenge.qop else ("auth-int" if "auth-int" in challenge.qop else None)
    auth.digest_response(challenge, username="u", password="p", method="INVITE",
                         uri="sip:1@192.0.2.1", cnonce="c", qop=qop, body=data)


# ---- media -----------------------------------------------------------------------------------

def _rtp(data: bytes) -> None:
    """A datagram on an RTP port (RFC 3550 5.1)."""
    packet = rtp.unpack(data)
    packet.payload  # noqa: B018


def _rtcp(data: bytes) -> None:
    """A datagram on an RTCP port (RFC 3550 6)."""
    rtcp.parse_compound(data)


def _dtmf(data: bytes) -> None:
    """RFC 4733 telephone-event payloads, and SIP INFO bodies carrying a digit."""
    receiver = dtmf.EventReceiver()
    for i in range(0, len(data), 4):
        receiver.packet(i, i == 0, data[i:i + 4])
    if len(data) >= 4:
        dtmf.parse_event(data)
    ctype = "application/dtmf-relay" if data[:1] != b"d" else "application/dtmf"
    dtmf.parse_info(ctype, data)


# ---- HTTP bodies -----------------------------------------------------------------------------

class _Request:
    """The little of a Twisted request that body parsing reads."""

    def __init__(self, body: bytes):
        self.content = io.BytesIO(body)

    def getHeader(self, name: bytes) -> bytes | None:  # noqa: N802 (Twisted's name)
        return b"application/json" if name == b"content-type" else None


_NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_APP = SimpleNamespace(name="fuzz", second_number="4420", hosted_tokens=())


def _callback_json(data: bytes) -> None:
    """A ``POST /api/v1/callbacks`` body: the JSON object, then the per-mode field checks."""
    body = web_api.parse_json_body(_Request(data))
    mode = body.get("mode")
    web_api.validate(_APP, mode if isinstance(mode, str) else "extended", body, "127.0.0.1",
                     body.get("token") if isinstance(body.get("token"), str) else None)


_ADMIN_SCHEMAS = (DESTINATION, TARIFF, RATE, PRODUCT, CUSTOMER, BATCH, ACCOUNT, PAYMENT, GENERATOR)


def _admin_body(data: bytes) -> dict:
    from cbserver.web.admin import AdminApp

    # The admin app's body reader uses nothing of its instance.
    return AdminApp._body(None, _Request(data))


def _admin_json(data: bytes) -> None:
    """An admin API body (``/v1/...`` POST and PATCH): JSON, then each object's field checks."""
    body = _admin_body(data)
    for schema in _ADMIN_SCHEMAS:
        for partial in (False, True):
            try:
                row = v.clean(schema, body, partial=partial)
            except ValidationError:
                continue
            if schema is RATE and not partial:
                _rate_row(body)


def _rate_row(data) -> None:
    """A rate's checks as ``Catalog._rate_row`` does them (effective_from defaults to now)."""
    row = v.clean(RATE, data)
    row.setdefault("effective_from", _NOW)
    check_rate(row)


# ---- files an operator loads -----------------------------------------------------------------

def _provision(data: bytes) -> None:
    """A provisioning file (TOML): loading, then the per-section checks done before the database."""
    fd, path = tempfile.mkstemp(suffix=".toml", prefix="fuzz-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        doc = load(path)
    finally:
        os.unlink(path)
    schemas = {"destination": DESTINATION, "tariff": TARIFF, "product": PRODUCT,
               "customer": CUSTOMER, "account": ACCOUNT, "generate": GENERATOR}
    for section in SECTIONS:
        items = doc.get(section, [])
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            raise ValidationError(section, "must be an array of tables")
        for item in items:
            item = dict(item)
            rates = item.pop("rate", []) if section == "tariff" else []
            v.clean(schemas[section], item)
            for rate in rates if isinstance(rates, list) else [rates]:
                row = v.clean(RATE, rate)
                if "effective_from" not in row:
                    raise ValidationError("effective_from", "is required in a provisioning file")
                check_rate(row)


def _rates_csv(data: bytes) -> None:
    """A rates CSV (``cbserver rates import``): reading, then each row's checks (``import_rates``)."""
    rows, _problems = parse_csv(data)
    for _line, row in rows:
        _rate_row(row)


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("sip_message", _sip_message, (uri.SipParseError,),
           "SIP datagrams and streams: parse_message, StreamParser, validate.check_message"),
    Target("sip_headers", _sip_headers, (uri.SipParseError,),
           "header values: parse_via, parse_name_addr, parse_cseq, parse_generic_params"),
    Target("sip_uri", _sip_uri, (uri.SipParseError,), "URIs: parse_uri, uri_equal"),
    Target("sdp", _sdp, (sdp.SdpError,), "SDP: parse_sdp, negotiate, make_answer, answer_reoffer"),
    Target("digest", _digest, (auth.AuthError,), "digest challenges: pick_challenge, digest_response"),
    Target("rtp", _rtp, (rtp.RtpError,), "RTP: rtp.unpack"),
    Target("rtcp", _rtcp, (rtcp.RtcpError,), "RTCP: rtcp.parse_compound"),
    Target("dtmf", _dtmf, (dtmf.DtmfError,), "RFC 4733 events and INFO bodies: EventReceiver, parse_info"),
    Target("callback_json", _callback_json, (web_api.InvalidInput,),
           "callback API body: parse_json_body, validate"),
    Target("admin_json", _admin_json, (ValidationError,), "admin API body: AdminApp._body, clean"),
    Target("provision", _provision, (ValidationError,), "provisioning TOML: provision.load, clean"),
    Target("rates_csv", _rates_csv, (ValidationError,), "rates CSV: parse_csv, clean, check_rate"),
)}
