"""The admin JSON API: every catalog object over HTTP, behind a bearer token.

``AdminApp(db, clock, token, csv_dir)`` holds a ``Klein()`` app whose routes only parse the
request and call the same ``Catalog``/``Accounts``/``Generator`` services as the CLI; the one
function ``_error_response`` turns their typed errors into HTTP codes: ``ValidationError`` 400,
``NotFound`` 404, ``ConflictError`` 409, a missing or wrong token 401 (compared in constant
time; an empty configured token refuses everyone), an unusable database 503. ``AdminApp.errors``
is the app's one error boundary (Klein's ``handle_errors``): it applies that mapping to every
failure, routing's included (an unknown path 404, a wrong method 405 with ``Allow``), and
answers anything else 500 with a request id, never a traceback. Errors are
``{"error": {"code", "field", "message"}}``, never an HTML page. Lists take ``limit``/``offset``
and filters as query parameters. The OpenAPI 3 document is served at ``/openapi.json``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import functools
import hmac
import json

from klein import Klein
from twisted.internet import defer
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from cbserver.billing import readiness
from cbserver.billing.accounts import Accounts
from cbserver.billing.applications import Applications
from cbserver.billing.audit import Audited, api_actor
from cbserver.billing.catalog import Catalog, RowErrors
from cbserver.billing.generator import Generator
from cbserver.billing.payments import Payments
from cbserver.billing.validation import ConflictError, NotFound, ValidationError, jsonable, parse_decimal
from cbserver.db.stores import PostgresCatalogStore, PostgresReadinessStore
from cbserver.errors import DatabaseUnavailable
from cbserver.logs import Logger
from cbserver.mail import Mailer
from cbserver.web import (
    admin_accounts,
    admin_applications,
    admin_audit,
    admin_calls,
    admin_nodes,
    admin_rating,
)
from cbserver.web.admin_accounts import MAX_FINISHED_JOBS  # noqa: F401 - re-exported
from cbserver.web.admin_openapi import openapi_document
from cbserver.web.admin_rating import MAX_CSV_BODY, _csv_body  # noqa: F401 - re-exported
from cbserver.web.responses import log_unexpected
from cbserver.web.untrusted import UntrustedInput, check_text, load_json

MAX_BODY = 1 << 20

class Unauthorized(Exception):
    """No valid bearer token."""


def _send(request, status: int, body) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"cache-control", b"no-store")
    if body is None:
        return b""
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(jsonable(body), sort_keys=True).encode("utf-8") + b"\n"


def _error_response(request, exc: Exception) -> bytes | None:
    """The one place typed errors become HTTP status codes (None: not a typed error)."""
    if isinstance(exc, Unauthorized):
        request.setHeader(b"www-authenticate", b'Bearer realm="cbserver-admin"')
        status, code, field, message = 401, "unauthorized", None, "a valid bearer token is required"
    elif isinstance(exc, RowErrors):
        body = {"error": {"code": "invalid", "field": exc.field, "message": str(exc),
                          "problems": [{"line": ln, "field": f, "message": m} for ln, f, m in exc.problems]}}
        return _send(request, 400, body)
    elif isinstance(exc, ValidationError):
        status, code, field, message = 400, "invalid", exc.field, exc.reason
    elif isinstance(exc, NotFound):
        status, code, field, message = 404, "not_found", None, exc.reason
    elif isinstance(exc, ConflictError):
        status, code, field, message = 409, "conflict", exc.field, exc.reason
    elif isinstance(exc, DatabaseUnavailable):
        status, code, field, message = 503, "unavailable", None, f"database unavailable: {exc}"
    elif isinstance(exc, MethodNotAllowed):
        # RFC 9110 15.5.6: a 405 lists the methods the resource has.
        request.setHeader(b"allow", ", ".join(sorted(exc.valid_methods or ())).encode("ascii"))
        status, code, field = 405, "method_not_allowed", None
        message = f"{request.method.decode('ascii', 'replace')} is not allowed here"
    elif isinstance(exc, HTTPException):  # routing: no such path (404), or a malformed request
        status, code, field = exc.code or 400, "not_found" if exc.code == 404 else "invalid", None
        message = "no such resource" if exc.code == 404 else (exc.description or exc.name)
    else:
        return None
    return _send(request, status, {"error": {"code": code, "field": field, "message": message}})


def _args(request) -> dict:
    return {k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace") for k, v in request.args.items()}


def _check_request(request, route_args: dict) -> None:
    """``ValidationError`` (400) for a NUL in the path's parts or in a query argument: no
    text value may hold one (PostgreSQL refuses it), so it is the client's mistake."""
    try:
        check_text("path", *(v for v in route_args.values() if isinstance(v, str)))
        check_text("query", *(x for k, vs in request.args.items() for x in (k, *vs)))
    except UntrustedInput as e:
        raise ValidationError(e.field, e.reason) from None


def api(status: int = 200, body: bool = False):
    """Decorate a route: check the token, parse the JSON body, run the coroutine.

    Errors are left to ``AdminApp.errors``, the app's one error boundary. Every change asked
    for (any method but GET) gets an audit line with its final status once answered.
    """

    def wrap(fn):
        @functools.wraps(fn)
        def route(self, request, **kwargs):
            if request.method != b"GET":
                request.notifyFinish().addBoth(self.audit, request)

            async def run():
                self.authorize(request)
                _check_request(request, kwargs)
                args = [self._body(request)] if body else []
                return _send(request, status, await fn(self.acting(request), request, *args, **kwargs))

            return defer.ensureDeferred(run())

        return route

    return wrap


class AdminApp:
    """Routes of the admin endpoint (``[web] admin_endpoint``)."""

    app = Klein()
    log = Logger()

    def __init__(self, db, clock, token: str, csv_dir, cfg=None):
        self.db = db
        self.clock = clock
        self.cfg = cfg  # the server's Config: its instances are what /v1/readiness checks
        self.token = token or ""
        self.catalog = Catalog(PostgresCatalogStore(db), clock)
        self.accounts = Accounts(PostgresCatalogStore(db), clock)
        self.payments = Payments(PostgresCatalogStore(db), clock)
        self.generator = Generator(PostgresCatalogStore(db), clock, csv_dir,
                                   Mailer(cfg.notifications, clock) if cfg is not None else None)
        self.applications = Applications(PostgresCatalogStore(db), clock)
        self.jobs: dict[str, dict] = {}

    def resource(self):
        """The Twisted web resource for this app."""
        return self.app.resource()

    @app.handle_errors
    def errors(self, request, failure):
        """The one error boundary: every error, routing's 404 and 405 too, as the JSON envelope.

        Typed errors get their own status; anything else is a bug: 500 with a request id the
        log line carries too, never the exception's text.
        """
        exc = failure.value
        if isinstance(exc, HTTPException) and (exc.code or 500) < 400:
            return failure  # a routing redirect: Klein answers it
        answer = _error_response(request, exc)
        if answer is not None:
            return answer
        request_id = log_unexpected(request, failure, "the admin API")
        return _send(request, 500, {"error": {
            "code": "internal_error", "field": None,
            "message": f"internal error; the server log has the details under request_id={request_id}"}})

    def audit(self, _result, request) -> None:
        """The audit line of a change asked for: method, path, final status, client."""
        self.log.info("admin {method} {path} status={status} client={client}",
                      method=request.method.decode("ascii", "replace"),
                      path=request.path.decode("utf-8", "replace"), status=request.code,
                      client=getattr(request.getClientAddress(), "host", "") or "-")

    def acting(self, request) -> AdminApp:
        """This app with its services bound to the request's actor, for the audit log: the
        bearer token's identity (``api-token``), from the API, at the client's address."""
        bound = copy.copy(self)
        actor = api_actor(request)
        for name in ("catalog", "accounts", "payments", "generator", "applications"):
            service = getattr(self, name, None)
            if isinstance(service, Audited):
                setattr(bound, name, service.as_actor(actor))
        return bound

    def authorize(self, request) -> None:
        """Raise ``Unauthorized`` unless the request carries the configured bearer token."""
        header = request.getHeader(b"authorization") or b""
        scheme, _, given = header.partition(b" ")
        ok = bool(self.token) and scheme.lower() == b"bearer" and hmac.compare_digest(
            given.strip(), self.token.encode("utf-8"))
        if not ok:
            raise Unauthorized()

    def _body(self, request):
        raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(raw) > MAX_BODY:
            raise ValidationError("body", f"larger than {MAX_BODY} bytes")
        try:
            return load_json(raw or b"{}", parse_float=parse_decimal)
        except UntrustedInput as e:
            if e.syntax:
                raise ValidationError("body", f"not a JSON object: {e.reason}") from None
            raise ValidationError("body", e.reason) from None

    def _page(self, request):
        args = _args(request)
        return args, args.pop("limit", 50), args.pop("offset", 0)

    @app.route("/ui/", branch=True)
    def console(self, request):
        """The operator's console (``cbserver.web.console``): HTML pages behind a login."""
        if getattr(self, "_console", None) is None:
            from cbserver.web.console.app import Console  # noqa: PLC0415 - built on first use

            web = getattr(self.cfg, "web", None)
            self._console = Console(self, secure=not str(getattr(web, "admin_endpoint", "")
                                                          ).startswith("tcp:")).resource()
        return self._console

    @app.route("/openapi.json", methods=["GET"])
    def openapi(self, request):
        """The OpenAPI 3 description of this API (no token needed)."""
        return _send(request, 200, openapi_document())

    # -- products, customers ----------------------------------------------------------------

    @app.route("/v1/products", methods=["GET"])
    @api()
    async def list_products(self, request):
        """List products (filters: name, currency)."""
        return await self.catalog.list_products(*self._page(request))

    @app.route("/v1/products", methods=["POST"])
    @api(201, body=True)
    async def create_product(self, request, data):
        """Create a product with its services and rating list."""
        return await self.catalog.create_product(data)

    @app.route("/v1/products/<key>", methods=["GET"])
    @api()
    async def get_product(self, request, key):
        """One product."""
        return await self.catalog.get_product(key)

    @app.route("/v1/products/<key>", methods=["PATCH"])
    @api(body=True)
    async def update_product(self, request, data, key):
        """Change a product (services and rating_list replace the old ones when given)."""
        return await self.catalog.update_product(key, data)

    @app.route("/v1/products/<key>", methods=["DELETE"])
    @api(204)
    async def delete_product(self, request, key):
        """Delete a product no account uses."""
        await self.catalog.delete_product(key)

    @app.route("/v1/customers", methods=["GET"])
    @api()
    async def list_customers(self, request):
        """List customers (filters: name, currency)."""
        return await self.accounts.list_customers(*self._page(request))

    @app.route("/v1/customers", methods=["POST"])
    @api(201, body=True)
    async def create_customer(self, request, data):
        """Create a customer."""
        return await self.accounts.create_customer(data)

    @app.route("/v1/customers/<key>", methods=["GET"])
    @api()
    async def get_customer(self, request, key):
        """One customer."""
        return await self.accounts.get_customer(key)

    @app.route("/v1/customers/<key>", methods=["PATCH"])
    @api(body=True)
    async def update_customer(self, request, data, key):
        """Change a customer (never its currency: 409)."""
        return await self.accounts.update_customer(key, data)

    @app.route("/v1/customers/<key>", methods=["DELETE"])
    @api(204)
    async def delete_customer(self, request, key):
        """Delete a customer that owns nothing."""
        await self.accounts.delete_customer(key)

    @app.route("/v1/customers/<key>/payments", methods=["GET"])
    @api()
    async def list_customer_payments(self, request, key):
        """List a customer's payments and refunds, newest first."""
        _filters, limit, offset = self._page(request)
        return await self.payments.list_customer_payments(key, limit, offset)

    @app.route("/v1/customers/<key>/payments", methods=["POST"])
    @api(201, body=True)
    async def pay_customer(self, request, data, key):
        """Record a payment (or refund) of a customer; the row carries the new balance."""
        return await self.payments.recharge_customer(key, data, made_by="admin-api")

    @app.route("/v1/readiness", methods=["GET"])
    @api()
    async def get_readiness(self, request):
        """What in the catalog would refuse this node's callbacks (``cbserver check``'s findings)."""
        if self.cfg is None:
            raise NotFound("readiness", "this admin endpoint serves no callback instances")
        at = dt.datetime.fromtimestamp(self.clock.seconds(), dt.UTC)
        cfg = dataclasses.replace(self.cfg, application=await self.applications.effective(
            self.cfg.application))  # the catalog's voice applications, and the config's
        findings = await readiness.check_readiness(PostgresReadinessStore(self.db), cfg, at)
        return {"node": self.cfg.server.node, "checked_at": at,
                "ready": not any(f.severity == readiness.ERROR for f in findings),
                "findings": [f.to_json() for f in findings]}


# Routes kept in modules of their own (small files): the audit log, voice applications,
# destinations, tariffs and rates, batches, accounts and the generator's jobs.
admin_audit.install(AdminApp, api)
admin_applications.install(AdminApp, api)
admin_rating.install(AdminApp, api)
admin_accounts.install(AdminApp, api)
# The nodes of the cluster (list, drain, undrain): their own module, mounted here.
admin_nodes.install(AdminApp, api)
# The calls routes (xDRs, callbacks, nodes, reports) live in their own module.
admin_calls.mount(AdminApp, api, _send, _check_request, _args)
