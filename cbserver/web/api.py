"""What the page and the JSON API share: input checks, the way in, the one error mapping.

``validate`` turns the fields a mode needs into a ``CallbackRequest`` (numbers normalised to
the digits the rates are keyed on; a leading ``+`` may be typed) or fails with
``InvalidInput`` naming every bad field.
``CallbackGateway`` is the web layer's only way into ``ICallbackService``: Hosted allow-list,
input checks, readiness, rate limits, the concurrency slot, then the service; every refusal is
logged (without credentials) and counted. ``error_response`` maps any failure of a request to
``(HTTP status, JSON error body, headers)``; both the page and the API use it, so a refusal
has the same code everywhere.
"""

from __future__ import annotations

import re

from twisted.internet import defer
from twisted.python.failure import Failure

from cbserver.callback.admission import Admission, RateLimited
from cbserver.callback.api import MODES, CallbackRefused, CallbackRequest
from cbserver.errors import DatabaseUnavailable
from cbserver.logs import Logger
from cbserver.phone import normalise_phone
from cbserver.web.untrusted import UntrustedInput, load_json

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
_ACCOUNT = re.compile(r"[A-Za-z0-9_.@+\-]{1,64}")
_CALLBACK_ID = re.compile(r"[A-Za-z0-9_.\-]{1,80}")


class InvalidInput(CallbackRefused):
    """One or more fields are missing or malformed; ``errors`` maps field -> message."""

    def __init__(self, errors: dict[str, str]):
        first = next(iter(errors))
        super().__init__("invalid_input", errors[first], first)
        self.errors = dict(errors)


def normalise_number(text: str) -> str:
    """The digits of a number (international format, as rates are keyed on them).

    A leading ``+`` may be typed and is dropped, as are spaces, dashes, dots, slashes and
    brackets; 3 to 20 digits must remain (``cbserver.phone.normalise_phone``, which the
    config's ``second_number`` and the voice applications share).
    """
    return normalise_phone(text)


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
        body = load_json(raw)
    except UntrustedInput as e:
        # Deep nesting and NUL characters are refused like any body that is not JSON.
        message = ("The request body is not valid JSON." if e.syntax
                   else f"The request body is not acceptable: {e.reason}.")
        raise InvalidInput({"body": message}) from None
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
        elif exc.code == "rate_limited":  # the service's own cap: no window to tell
            headers[b"retry-after"] = b"30"
        elif exc.code == "not_ready":
            headers[b"retry-after"] = b"5"
        elif exc.code in ("busy", "draining"):
            headers[b"retry-after"] = b"2"
    elif isinstance(exc, DatabaseUnavailable):
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


class CallbackGateway:
    """Starts callbacks and reads their status for the page and the API."""

    log = Logger()

    def __init__(self, service, limiter, gauge, metrics, ready, limits=None):
        self.service = service
        self.admission = Admission(service, limiter, gauge, ready, limits)
        self.metrics = metrics

    @property
    def limiter(self):
        """The admission's rate limiter (the Hosted token check counts against it too)."""
        return self.admission.limiter

    @property
    def ready(self):
        """The admission's readiness test (a callable: does the node take callbacks now?)."""
        return self.admission.ready

    @property
    def starting(self) -> int:
        """Requests between validation and the service's answer (see ``Admission``)."""
        return self.admission.starting

    def refused(self, app_cfg, mode: str, client: str, exc: CallbackRefused,
                callback_id: str | None = None, limited=None) -> bool:
        """Log and count a refusal (never the credentials); ``callback_id`` once one was drawn.

        ``limited``: a ``RateLimitedLog`` that writes the line only while its interval has
        lines left (a flood's busy refusals, ``cbserver.web.busyfront``); the refusal is
        counted either way. True when the line was written.
        """
        kind = exc.kind if isinstance(exc, RateLimited) else None
        self.metrics.request_refused(mode if mode in MODES else "unknown", exc.code, kind)
        line = ("callback refused application={app} mode={mode} client={client} code={code} "
                "limit={kind} field={field} callback_id={callback_id}")
        fields = dict(app=app_cfg.name if app_cfg else "-", mode=mode, client=client,
                      code=exc.code, kind=kind or "-", field=exc.field or "-",
                      callback_id=callback_id or "-")
        if limited is not None:
            return limited.info(exc.code, line, **fields)
        self.log.info(line, **fields)
        return True

    @defer.inlineCallbacks
    def start(self, app_cfg, mode: str, fields: dict, client: str, token: str | None,
               hosted_ok: bool):
        """Check and start one callback; fire with its id or fail with ``CallbackRefused``.

        The request is parsed and its mode checked against the client's address here; whether
        the node takes it now is ``Admission``'s decision.
        """
        try:
            if mode == "hosted" and not hosted_ok:
                if token:
                    # A wrong X-Callback-Token is a guess: it counts against the client, as on
                    # the form's hosted-access path, so guessing ends in 429 (issue 14, item 5).
                    yield self.limiter.check_client(client)
                raise CallbackRefused("hosted_not_allowed",
                                      "Hosted callback is not available from your address.",
                                      "mode")
            req = validate(app_cfg, mode, fields, client, token)
            cb_id = yield self.admission.start(req)
        except CallbackRefused as e:
            self.refused(app_cfg, mode, client, e, getattr(e, "callback_id", None))
            raise
        self.metrics.callback_requested(mode)
        self.log.info("callback requested callback_id={callback_id} application={app} mode={mode} "
                      "client={client}", callback_id=cb_id, app=app_cfg.name, mode=mode, client=client)
        return cb_id

    @defer.inlineCallbacks
    def initial_status(self, cb_id):
        """The status right after starting (``calling_you`` if the service has none yet)."""
        try:
            status = yield self.service.get_status(cb_id)
        except Exception as e:  # noqa: BLE001 - the callback is started; the page will poll
            self.log.warn("status not available yet callback_id={callback_id}: {err}", callback_id=cb_id,
                          err=e)
            status = None
        return (status or {}).get("status", "calling_you")

    def lookup(self, app_cfg, cb_id):
        """The status dict of a callback of this instance (any instance if None), or 404."""
        if not valid_callback_id(cb_id):
            return defer.fail(CallbackRefused("not_found", "No callback has this id."))
        # No readiness check: a draining server still reports the calls it is ending; a
        # database error while looking up is answered 503 by error_response.

        def found(status):
            if status is None or (app_cfg is not None and status.get("application") != app_cfg.name):
                raise CallbackRefused("not_found", "No callback has this id.")
            return status

        return defer.maybeDeferred(self.service.get_status, cb_id).addCallback(found)
