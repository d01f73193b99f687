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
import importlib
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace


@dataclass(frozen=True)
class Target:
    """One fuzz target: ``run(data)`` may raise only the ``allowed`` typed errors.

    ``modules`` are what ``run`` imports (the only code a fuzzer needs to instrument);
    ``allowed`` names each typed error as ``"module:Class"``, so that listing the targets
    imports nothing."""

    name: str
    run: Callable[[bytes], None]
    allowed: tuple[str, ...]
    modules: tuple[str, ...]
    what: str

    def errors(self) -> tuple[type[BaseException], ...]:
        """The allowed exception classes."""
        out = []
        for spec in self.allowed:
            module, _, cls = spec.partition(":")
            out.append(getattr(importlib.import_module(module), cls))
        return tuple(out)

    def load(self) -> tuple[type[BaseException], ...]:
        """Import the target's modules; return its allowed exception classes."""
        for module in self.modules:
            importlib.import_module(module)
        return self.errors()


def one_input(target: Target, data: bytes, allowed: tuple[type[BaseException], ...] | None = None) -> None:
    """Run ``target`` on ``data``, swallowing its typed errors; anything else propagates."""
    errors = allowed if allowed is not None else target.errors()
    try:
        target.run(data)
    except errors:
        pass


# ---- SIP -------------------------------------------------------------------------------------
# Each target imports what it drives inside its function, so that a fuzzing process imports
# (and instruments) only the code under test; after the first call the import is a dict lookup.

_METHODS = frozenset({"INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "PRACK"})


def _sip_message(data: bytes) -> None:
    """A UDP datagram and the same bytes on a TCP stream, through the UAS checks (RFC 3261 8.2)."""
    from cbserver.sip import headers, validate
    from cbserver.sip.message import StreamParser

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
            headers.parse_via(value).params.get("branch")
        headers.parse_cseq(h.get("CSeq"))
        msg.serialize()
    # The stream framing (RFC 3261 18.3) on the same bytes, split in two reads.
    parser = StreamParser()
    cut = len(data) // 2
    for chunk in (data[:cut], data[cut:]):
        parser.feed(chunk)


def _sip_headers(data: bytes) -> None:
    """One header value; the first byte picks which header parser reads the rest."""
    from cbserver.sip import headers
    from cbserver.sip.call_dialog import _parse_session_expires

    if not data:
        return
    text = data[1:].decode("utf-8", "replace")
    kind = data[0] % 7
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
    elif kind == 5:
        _parse_session_expires(text)  # RFC 4028 4: junk reads as no session timer (None)
    else:
        h = headers.Headers([("Via", text), ("Contact", text), ("Require", text)])
        h.get_all("Via"), h.get("Contact"), h.counts()  # noqa: B018


def _sip_uri(data: bytes) -> None:
    """A Request-URI or a URI inside a header (RFC 3261 19.1, RFC 3966)."""
    from cbserver.sip import uri

    text = data.decode("utf-8", "replace")
    parsed = uri.parse_uri(text)
    str(parsed)
    uri.uri_equal(parsed, text)


# ---- SDP and digest --------------------------------------------------------------------------

def _sdp(data: bytes) -> None:
    """An offer or answer body (RFC 4566, RFC 3264) as the UA reads and answers it."""
    from cbserver.sip import sdp

    parsed = sdp.parse_sdp(data)
    for m in parsed.media:
        m.port, m.formats  # noqa: B018
    sdp.negotiate(data)
    sdp.make_answer(data, "192.0.2.1", 40000, session_id=1, version=1)
    ours = sdp.make_offer("192.0.2.1", 40000, session_id=1, version=1)
    sdp.answer_reoffer(data, ours, ours)


def _digest(data: bytes) -> None:
    """``WWW-Authenticate``/``Proxy-Authenticate`` values from a carrier (RFC 7616 3.3)."""
    from cbserver.sip import auth

    values = data.decode("utf-8", "replace").split("\n")
    challenge = auth.pick_challenge(values)
    qop = "auth" if "auth" in challenge.qop else ("auth-int" if "auth-int" in challenge.qop else None)
    auth.digest_response(challenge, username="u", password="p", method="INVITE",
                         uri="sip:1@192.0.2.1", cnonce="c", qop=qop, body=data)


# ---- media -----------------------------------------------------------------------------------

def _rtp(data: bytes) -> None:
    """A datagram on an RTP port (RFC 3550 5.1)."""
    from cbserver.media import rtp

    rtp.unpack(data).payload  # noqa: B018


def _rtcp(data: bytes) -> None:
    """A datagram on an RTCP port (RFC 3550 6)."""
    from cbserver.media import rtcp

    rtcp.parse_compound(data)


def _dtmf(data: bytes) -> None:
    """RFC 4733 telephone-event payloads, and SIP INFO bodies carrying a digit."""
    from cbserver.media import dtmf

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
    from cbserver.web import api

    body = api.parse_json_body(_Request(data))
    mode = body.get("mode")
    token = body.get("token")
    api.validate(_APP, mode if isinstance(mode, str) else "extended", body, "127.0.0.1",
                 token if isinstance(token, str) else None)


def _schemas() -> dict:
    """Every object's field table, by the name of its provisioning section."""
    from cbserver.billing.accounts import ACCOUNT, BATCH, CUSTOMER
    from cbserver.billing.catalog import DESTINATION, PRODUCT, RATE, TARIFF
    from cbserver.billing.generator import GENERATOR
    from cbserver.billing.payments import PAYMENT

    return {"destination": DESTINATION, "tariff": TARIFF, "rate": RATE, "product": PRODUCT,
            "customer": CUSTOMER, "batch": BATCH, "account": ACCOUNT, "payment": PAYMENT,
            "generate": GENERATOR}


def _rate_row(data) -> None:
    """A rate's checks as ``Catalog._rate_row`` does them (effective_from defaults to now)."""
    from cbserver.billing import validation as v
    from cbserver.billing.catalog import RATE, check_rate

    row = v.clean(RATE, data)
    row.setdefault("effective_from", _NOW)
    check_rate(row)


def _admin_json(data: bytes) -> None:
    """An admin API body (``/v1/...`` POST and PATCH): JSON, then each object's field checks."""
    from cbserver.billing import validation as v
    from cbserver.web.admin import AdminApp

    # The admin app's body reader uses nothing of its instance.
    body = AdminApp._body(None, _Request(data))
    for name, schema in _schemas().items():
        for partial in (False, True):
            try:
                v.clean(schema, body, partial=partial)
            except v.ValidationError:
                continue
            if name == "rate" and not partial:
                _rate_row(body)


# ---- files an operator loads -----------------------------------------------------------------

def _provision(data: bytes) -> None:
    """A provisioning file (TOML): loading, then the per-section checks done before the database."""
    from cbserver.billing import validation as v
    from cbserver.billing.catalog import RATE, check_rate
    from cbserver.billing.provision import SECTIONS, load

    fd, path = tempfile.mkstemp(suffix=".toml", prefix="fuzz-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        doc = load(path)
    finally:
        os.unlink(path)
    schemas = _schemas()
    for section in SECTIONS:
        items = doc.get(section, [])
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            raise v.ValidationError(section, "must be an array of tables")
        for item in items:
            item = dict(item)
            rates = item.pop("rate", []) if section == "tariff" else []
            v.clean(schemas[section], item)
            for rate in rates if isinstance(rates, list) else [rates]:
                row = v.clean(RATE, rate)
                if "effective_from" not in row:
                    raise v.ValidationError("effective_from", "is required in a provisioning file")
                check_rate(row)


def _rates_csv(data: bytes) -> None:
    """A rates CSV (``cbserver rates import``): reading, then each row's checks (``import_rates``)."""
    from cbserver.commands.rates import parse_csv

    rows, _problems = parse_csv(data)
    for _line, row in rows:
        _rate_row(row)


_SIP_ERROR = ("cbserver.sip.uri:SipParseError",)
_CATALOG_ERROR = ("cbserver.billing.validation:ValidationError",)
_BILLING = ("cbserver.billing.accounts", "cbserver.billing.catalog", "cbserver.billing.generator",
            "cbserver.billing.payments")

TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("sip_message", _sip_message, _SIP_ERROR, ("cbserver.sip.validate",),
           "SIP datagrams and streams: validate.check_message, parse_message, StreamParser"),
    Target("sip_headers", _sip_headers, _SIP_ERROR, ("cbserver.sip.headers", "cbserver.sip.call_dialog"),
           "header values: parse_via, parse_name_addr, parse_cseq, parse_generic_params, Session-Expires"),
    Target("sip_uri", _sip_uri, _SIP_ERROR, ("cbserver.sip.uri",), "URIs: parse_uri, uri_equal"),
    Target("sdp", _sdp, ("cbserver.sip.sdp:SdpError",), ("cbserver.sip.sdp",),
           "SDP: parse_sdp, negotiate, make_answer, answer_reoffer"),
    Target("digest", _digest, ("cbserver.sip.auth:AuthError",), ("cbserver.sip.auth",),
           "digest challenges: pick_challenge, digest_response"),
    Target("rtp", _rtp, ("cbserver.media.rtp:RtpError",), ("cbserver.media.rtp",), "RTP: rtp.unpack"),
    Target("rtcp", _rtcp, ("cbserver.media.rtcp:RtcpError",), ("cbserver.media.rtcp",),
           "RTCP: rtcp.parse_compound"),
    Target("dtmf", _dtmf, ("cbserver.media.dtmf:DtmfError",), ("cbserver.media.dtmf",),
           "RFC 4733 events and INFO bodies: EventReceiver, parse_event, parse_info"),
    Target("callback_json", _callback_json, ("cbserver.web.api:InvalidInput",), ("cbserver.web.api",),
           "callback API body: parse_json_body, validate"),
    Target("admin_json", _admin_json, _CATALOG_ERROR, ("cbserver.web.admin", *_BILLING),
           "admin API body: AdminApp._body, validation.clean of every object, check_rate"),
    Target("provision", _provision, _CATALOG_ERROR, ("cbserver.billing.provision", *_BILLING),
           "provisioning file (TOML): provision.load, validation.clean, check_rate"),
    Target("rates_csv", _rates_csv, _CATALOG_ERROR, ("cbserver.commands.rates", *_BILLING),
           "rates CSV: rates.parse_csv, validation.clean, check_rate"),
)}
