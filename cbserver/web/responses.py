"""How the public web answers: JSON bodies, HTML pages with their security headers, 500s.

Shared by the health app, the callback pages (``callback_pages``) and the JSON API
(``callback_api``), so that none of them imports another to answer a request.
"""

from __future__ import annotations

import json
import secrets

from cbserver.logs import Logger

log = Logger()

HTML_HEADERS = {
    b"content-type": b"text/html; charset=utf-8",
    b"cache-control": b"no-store",
    b"content-security-policy": b"default-src 'self'; script-src 'self'; style-src 'self'; "
                                b"img-src 'self'; connect-src 'self'; frame-ancestors 'none'; "
                                b"form-action 'self'; base-uri 'none'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
}


def json_response(request, status: int, body: dict) -> bytes:
    """Set the status and JSON content type and return the encoded body."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"


def html_response(request, status: int, body: bytes, headers: dict | None = None) -> bytes:
    """Send an HTML page with the security headers."""
    request.setResponseCode(status)
    for k, v in {**HTML_HEADERS, **(headers or {})}.items():
        request.setHeader(k, v)
    return body


def log_unexpected(request, failure, where: str) -> str:
    """Log a failure no handler expected, with a new request id; return that id.

    The id goes to the client too (``X-Request-Id``) so that a report can be matched with
    the log line; the failure's text never does.
    """
    request_id = secrets.token_hex(8)
    log.failure("unexpected error in {where}: {method} {path} request_id={request_id}",
                failure=failure, where=where, method=request.method.decode("ascii", "replace"),
                path=request.path.decode("utf-8", "replace"), request_id=request_id)
    request.setHeader(b"x-request-id", request_id.encode("ascii"))
    return request_id
