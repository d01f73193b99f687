"""The boundary between the web layer and the callback service.

The web layer (page and JSON API) validates input, applies abuse limits and then asks an
``ICallbackService`` to start a callback; it reads the progress back by id. Refusals are
``CallbackRefused`` with a stable machine code, mapped to an HTTP status only in the web
layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zope.interface import Attribute, Interface

MODES = ("simple", "extended", "hosted")

# Status values a callback goes through, in order; "ended" and "refused" are final.
STATUSES = ("calling_you", "answered", "calling_destination", "connected", "ended", "refused")
FINAL_STATUSES = ("ended", "refused")

# Stable refusal codes -> HTTP status, shared by the page and the JSON API.
REFUSAL_HTTP_STATUS = {
    "invalid_input": 400,
    "bad_credentials": 401,
    "no_balance": 402,
    "forbidden": 403,
    "destination_not_allowed": 403,
    "hosted_not_allowed": 403,
    "inactive_account": 403,
    "not_found": 404,
    "rate_limited": 429,
    "not_ready": 503,
    "busy": 503,
    "draining": 503,
}


@dataclass(frozen=True)
class CallbackRequest:
    """One request for a callback, as the web layer validated it."""

    application: str  # the instance's name
    mode: str  # one of MODES
    phone: str  # the number to call back, normalised to digits
    account: str | None = None
    password: str | None = field(default=None, repr=False)  # never logged
    destination: str | None = None
    client_address: str = ""
    client_token: str | None = field(default=None, repr=False)
    # The id the callback gets; the web layer chooses it first so that the account's
    # concurrency slot is bound to it in the same round trip that takes the slot.
    callback_id: str | None = None


@dataclass(frozen=True)
class CallbackSnapshot:
    """A callback's status at one moment, as the status writer stores it (immutable).

    ``state`` is the ``get_status`` dict below, built for this snapshot alone.
    """

    id: str
    application: str
    mode: str
    account_id: str | None
    phone: str  # the number called back
    destination: str | None  # legB's number, None while unknown
    status: str  # one of STATUSES
    state: dict


class CallbackRefused(Exception):
    """The callback is not started; ``code`` is one of REFUSAL_HTTP_STATUS's keys."""

    def __init__(self, code: str, message: str, field_name: str | None = None):
        if code not in REFUSAL_HTTP_STATUS:
            raise ValueError(f"unknown refusal code {code!r}")
        self.code = code
        self.message = message
        self.field = field_name
        super().__init__(f"{code}: {message}")

    @property
    def http_status(self) -> int:
        """The HTTP status for this refusal."""
        return REFUSAL_HTTP_STATUS[self.code]


class ICallbackService(Interface):
    """What the web layer may ask of the callback service."""

    active = Attribute("The number of callbacks in progress on this node.")

    def new_callback_id():
        """A fresh id for a callback about to be requested (``CallbackRequest.callback_id``)."""

    def request_callback(request):
        """Start a callback for a ``CallbackRequest``.

        Returns a Deferred firing with the new callback's id (a string), or failing with
        ``CallbackRefused`` (authorization, balance, hosted not allowed, not ready...).
        """

    def get_status(callback_id):
        """A Deferred firing with the status dict of a callback, or None if unknown.

        The dict: ``{"id", "application", "mode", "status" (one of STATUSES), "legs":
        {"A": {"state", "sip_status", "reason"}, "B": {...}}, "cause": {"code",
        "sip_status", "reason"} or None, "charges": {"A", "B", "total", "currency"} or None,
        "created_at", "updated_at"}`` (times ISO-8601 UTC, amounts decimal strings).
        """
