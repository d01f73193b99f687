"""Input checking shared by the page and the JSON API, and the one error-mapping function.

``validate`` turns the fields a mode needs into a ``CallbackRequest`` (numbers normalised to
digits with an optional leading ``+``) or fails with ``InvalidInput`` naming every bad field.
``error_response`` maps any failure of a request to ``(HTTP status, JSON error body,
headers)``; both the page and the API use it, so a refusal has the same code everywhere.
"""

from __future__ import annotations

import json
import re

import psycopg2
from twisted.logger import Logger
from twisted.python.failure import Failure

from cbserver.callback.api import MODES, CallbackRefused, CallbackRequest
from cbserver.db.pool import DatabaseUnavailable
from cbserver.web.limits import RateLimited

log = Logger()

# The fields each mode takes, in the order the page shows them.
MODE_FIELDS = {
    "extended": ("account", "password", "phone", "destination"),
    "simple": ("account", "phone"),
    "hosted": ("phone",),
}
FIELD_LABELS = {
    "account": "Account ID",
    "password": "Password",
    "phone": "Your phone number (we call you back here)",
    "destination": "Number to dial",
    "mode": "Callback type",
    "application": "Callback instance",
    "token": "Hosted access token",
}
MAX_BODY = 16 * 1024
_NUMBER_JUNK = re.compile(r"[\s\-.()/]")
_NUMBER = re.compile(r"\+?[0-9]{3,20}")
_ACCOUNT = re.compile(r"[A-Za-z0-9_.@+\-]{1,64}")
_CALLBACK_ID = re.compile(r"[A-Za-z0-9_.\-]{1,80}")


class InvalidInput(CallbackRefused):
    """One or more fields are missing or malformed; ``errors`` maps field -> message."""

    def __init__(self, errors: dict[str, str]):
        first = next(iter(errors))
        super().__init__("invalid_input", errors[first], first)
        self.errors = dict(errors)


def normalise_number(text: str) -> str:
    """Digits with an optional leading ``+``; spaces, dashes, dots, slashes, brackets dropped."""
    cleaned = _NUMBER_JUNK.sub("", text or "")
    if not _NUMBER.fullmatch(cleaned):
        raise ValueError("Enter a phone number of 3 to 20 digits, optionally starting with +.")
    return cleaned


def valid_callback_id(text: str) -> bool:
    """Whether ``text`` can be a callback id (anything else is 404 without a lookup)."""
    return bool(_CALLBACK_ID.fullmatch(text or ""))


def validate(app_cfg, mode: str, fields: dict, client_address: str,
             client_token: str | None = None) -> CallbackRequest:
    """The ``CallbackRequest`` for ``fields`` in ``mode``, or ``InvalidInput``."""
    if mode not in MODES:
        raise InvalidInput({"mode": f"Choose one of: {', '.join(MODES)}."})
    if mode == "simple" and not app_cfg.second_number:
        raise InvalidInput({"mode": "Simple callback is not offered here."})
    errors: dict[str, str] = {}
    values: dict[str, str] = {}
    for name in MODE_FIELDS[mode]:
        raw = fields.get(name)
        if raw is not None and not isinstance(raw, str):
            errors[name] = "Must be text."
            continue
        raw = (raw or "").strip() if name != "password" else (raw or "")
        if not raw:
            errors[name] = f"{FIELD_LABELS[name].split(' (')[0]} is required."
            continue
        if name in ("phone", "destination"):
            try:
                values[name] = normalise_number(raw)
            except ValueError as e:
                errors[name] = str(e)
        elif name == "account" and not _ACCOUNT.fullmatch(raw):
            errors[name] = "An account ID is 1 to 64 letters, digits or . _ - + @."
        elif name == "password" and (len(raw) > 128 or any(ord(c) < 32 for c in raw)):
            errors[name] = "The password is too long or holds control characters."
        else:
            values[name] = raw
    if errors:
        raise InvalidInput(errors)
    return CallbackRequest(application=app_cfg.name, mode=mode, phone=values["phone"],
                           account=values.get("account"), password=values.get("password"),
                           destination=values.get("destination"),
                           client_address=client_address, client_token=client_token)


def parse_json_body(request) -> dict:
    """The request's JSON object body, or ``InvalidInput`` (wrong type, too big, not JSON)."""
    ctype = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if ctype != b"application/json":
        raise InvalidInput({"body": "Send the request as application/json."})
    raw = request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise InvalidInput({"body": "The request body is too large."})
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput({"body": "The request body is not valid JSON."}) from None
    if not isinstance(body, dict):
        raise InvalidInput({"body": "The request body must be a JSON object."})
    return body


def error_response(failure_or_exc) -> tuple[int, dict, dict[bytes, bytes]]:
    """Map a failure to ``(HTTP status, {"error": {...}}, extra headers)`` (the one mapping)."""
    exc = getattr(failure_or_exc, "value", failure_or_exc)
    headers: dict[bytes, bytes] = {}
    if isinstance(exc, CallbackRefused):
        status, code, message, field = exc.http_status, exc.code, exc.message, exc.field
        if isinstance(exc, RateLimited):
            headers[b"retry-after"] = str(exc.retry_after).encode("ascii")
    elif isinstance(exc, (DatabaseUnavailable, psycopg2.OperationalError, psycopg2.InterfaceError)):
        status, code, field = 503, "not_ready", None
        message = "The service is not ready; please try again shortly."
        headers[b"retry-after"] = b"5"
    else:
        failure = failure_or_exc if isinstance(failure_or_exc, Failure) else Failure(exc)
        log.failure("unexpected error in a web request", failure=failure)
        status, code, message, field = 500, "internal_error", "Something went wrong on our side.", None
    error = {"code": code, "message": message, "field": field}
    if isinstance(exc, InvalidInput):
        error["fields"] = exc.errors
    return status, {"error": error}, headers
