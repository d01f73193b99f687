"""The callback pages (HTML): each instance's form, its status page, Hosted access, assets.

``CallbackWeb`` holds the collaborators the pages and the JSON API share (the gateway into
the callback service, with its rate limiter and concurrency gauge, the CSRF guard, the host
table, the trusted proxies) and the pages' own ``Klein()`` app. Every path that starts a
callback goes through ``CallbackGateway.start`` (``cbserver.web.api``); failures are turned
into answers by ``cbserver.web.api.error_response``, here as HTML pages with the status of the
error. The JSON API is ``cbserver.web.callback_api``; ``cbserver.web.app`` mounts both (and
``/metrics`` and the health app) as the site: ``resource()`` is that site.

Routes, for each ``[[application]]`` with path P (``/web-callback`` by default):
``GET P`` the form, ``POST P`` start (303 to the status page, or 202 JSON for the page's
script), ``GET P/status/<id>``, ``POST P/hosted-access`` (remember a Hosted token in a
cookie); shared: ``GET /static/<file>``; the default instance (``default_instance``) is
also served at the root (``GET /``, ``POST /``, ``/status/<id>``, ``/hosted-access``);
anything else goes to the ``fallback`` resource (the health app). An instance with
``hosts`` also has its routes without the P prefix for requests whose host name it lists
(``host_app``). Handlers get the ``base`` they were reached under (P, or "" by host) and
write their links relative to it.

The app's error boundary (``errors``) answers a failure no handler turned into a page with a
plain HTML 500 page (logged with a request id, never a traceback).
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from pathlib import Path
from urllib.parse import parse_qsl, quote

from twisted.internet import defer
from twisted.web.pages import notFound
from werkzeug.exceptions import HTTPException

from cbserver.callback.api import CallbackRefused
from cbserver.logs import Logger
from cbserver.web import pages
from cbserver.web.api import CallbackGateway, InvalidInput, error_response
from cbserver.web.app import site_resource
from cbserver.web.busyfront import BusyFront
from cbserver.web.csrf import CsrfGuard, SharedSecretService
from cbserver.web.hosts import HostTable, request_host
from cbserver.web.kleincycle import CycleFreeKlein as Klein
from cbserver.web.limits import (
    address_allowed,
    client_address,
    hosted_tokens,
    token_allowed,
    trusted_networks,
)
from cbserver.web.responses import html_response, json_response, log_unexpected

HERE = Path(__file__).resolve().parent
STATIC_TYPES = {"page.css": b"text/css; charset=utf-8",
                "page.js": b"text/javascript; charset=utf-8"}
TOKEN_HEADER = b"x-callback-token"
HOSTED_COOKIE = b"cb_hosted"
ERROR_PAGE = ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
              "<title>Something went wrong</title></head><body><h1>Something went wrong</h1>"
              "<p>Something went wrong on our side; please try again in a moment "
              "(request {request_id}).</p></body></html>")


def _bind(method, *first, **fixed):
    """``method`` with leading arguments fixed, as a named function (Klein needs ``__name__``)."""

    def handler(request, *args, **kwargs):
        return method(*first, request, *args, **fixed, **kwargs)

    handler.__name__ = handler.__qualname__ = method.__name__
    handler.__doc__ = method.__doc__
    return handler


@functools.lru_cache(maxsize=8)
def _package_file(name: str) -> bytes:
    """A file shipped beside this module (read once)."""
    return (HERE / name).read_bytes()


class CallbackWeb:
    """The callback pages of every ``[[application]]`` instance, and what the API shares."""

    log = Logger()

    def __init__(self, config, service, limiter, gauge, clock, metrics, *, ready=None,
                 csrf_secret: bytes | None = None, secure_cookies: bool = True, fallback=None,
                 trusted_proxies=()):
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.gateway = CallbackGateway(service, limiter, gauge, metrics, ready or (lambda: True),
                                       config.limits)
        self.csrf = CsrfGuard(csrf_secret, secure=secure_cookies)
        self.fallback = fallback
        self.trusted_proxies = trusted_networks(trusted_proxies)  # parsed once, used per request
        self.metrics_networks = [ipaddress.ip_network(n, strict=False)
                                 for n in config.web.metrics_allowed_clients]
        self.apps = {a.name: a for a in config.application}
        self.hosts = HostTable(config.application)
        self.app = Klein()
        self._add_routes()
        self._site = None

    def resource(self):
        """The whole site over this web: the JSON API, these pages, ``/metrics``, the fallback.

        ``cbserver.web.app.site_resource`` mounts them (mount the result as the site's root);
        a ``LiveSite`` in front follows ``set_applications`` (a ``BusyFront``: it also
        refuses callback POSTs ``busy`` before any routing while the node is at its caps).
        """
        return BusyFront(self)

    def site(self):
        """The site of the current applications (built on first use after a change)."""
        if self._site is None:
            self._site = site_resource(self)
        return self._site

    def set_applications(self, applications) -> None:
        """Serve ``applications`` (``ApplicationConfig``s) from the next request on: their
        paths and host names route, a removed one's page answers 404 (a catalog change)."""
        before = (self.config, self.apps, self.hosts, self.app, self._site)
        try:
            self.config = dataclasses.replace(self.config, application=tuple(applications))
            self.apps = {a.name: a for a in self.config.application}
            self.hosts = HostTable(self.config.application)
            self.app = Klein()
            self._add_routes()
            self._site = None
            self.site()  # built now, so that a failure leaves the previous site serving
        except Exception:
            self.config, self.apps, self.hosts, self.app, self._site = before
            raise

    def default_instance(self):
        """The instance served at ``/`` of the path-routed site: the one whose path is ``/``,
        else the first application (the oldest in the catalog; None without any)."""
        for app_cfg in self.config.application:
            if not self.base(app_cfg):
                return app_cfg
        return self.config.application[0] if self.config.application else None

    def host_instance(self, request):
        """The instance whose ``hosts`` name the request's host, or None (route by path)."""
        return self.hosts.lookup(request_host(request, self.trusted_proxies))

    # -- routing -------------------------------------------------------------------------

    def _add_routes(self) -> None:
        """Register the shared routes and each instance's routes under its path."""
        self.app.route("/static/<name>", methods=["GET", "HEAD"], endpoint="static")(self.static)
        for i, app_cfg in enumerate(self.config.application):
            self._add_instance_routes(self.app, app_cfg, self.base(app_cfg), f"_{i}")
        default = self.default_instance()
        if default is not None and self.base(default):
            # The manual's address is https://<host>:8901/: the default instance's page is
            # served at the root too (links relative to "", as for a host name).
            self._add_instance_routes(self.app, default, "", "_root")
        self.app.route("/", branch=True, endpoint="fallback")(self.other)
        self.app.handle_errors(self.errors)

    def _add_instance_routes(self, app: Klein, app_cfg, base: str, suffix: str) -> None:
        """One instance's page, status and Hosted-access routes under ``base``.

        ``base`` is the instance's path, or "" when its host name chose it; the handlers
        get it too, so that the links they write lead back to the same routes.
        """
        route = app.route
        route(base or "/", methods=["GET", "HEAD"], endpoint=f"page{suffix}")(
            _bind(self.page_get, app_cfg, base))
        route(base or "/", methods=["POST"], endpoint=f"page_post{suffix}")(
            _bind(self.page_post, app_cfg, base))
        route(f"{base}/status/<cb_id>", methods=["GET", "HEAD"], endpoint=f"status{suffix}")(
            _bind(self.status_get, app_cfg, base))
        route(f"{base}/hosted-access", methods=["POST"], endpoint=f"hosted{suffix}")(
            _bind(self.hosted_access, app_cfg, base))

    def host_app(self, app_cfg, by_path) -> Klein:
        """The pages of an instance chosen by host name: its own at the root, then by path.

        Anything it does not route itself (``/static``, ``/metrics``, ``/healthz``, the
        instance paths...) falls through to ``by_path``, the resource of the path-routed
        site, so a host name adds routes and takes none away.
        """
        app = Klein()
        self._add_instance_routes(app, app_cfg, "", "")

        def by_path_routes(request):
            """Whatever the host's own routes do not match: routing by path."""
            return by_path

        app.route("/", branch=True, endpoint="by_path")(by_path_routes)
        app.handle_errors(self.errors)
        return app

    def other(self, request):
        """Anything else: the fallback resource (``/healthz``...) or 404."""
        return self.fallback if self.fallback is not None else notFound()

    @staticmethod
    def errors(request, failure):
        """The pages' one error boundary: a failure no handler answered is a plain 500 page."""
        if isinstance(failure.value, HTTPException):
            return failure  # routing's own answers (redirects): Klein renders them
        request_id = log_unexpected(request, failure, "the callback pages")
        return html_response(request, 500, ERROR_PAGE.format(request_id=request_id).encode("utf-8"))

    # -- helpers -------------------------------------------------------------------------

    def client(self, request) -> str:
        """The client's IP address: the peer, or what a trusted proxy says it forwarded for."""
        peer = getattr(request.getClientAddress(), "host", "") or ""
        if not self.trusted_proxies:
            return peer
        raw = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []
        return client_address(peer, [h.decode("latin-1") for h in raw], self.trusted_proxies)

    @staticmethod
    def _form(request) -> dict[str, str]:
        """The url-encoded POST body (the query string is never read for credentials)."""
        raw = request.content.read(16 * 1024) if request.content is not None else b""
        try:
            return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise InvalidInput({"body": "The form is not UTF-8."}) from None

    @staticmethod
    def token(request) -> str | None:
        """The Hosted token of the ``X-Callback-Token`` header, if any."""
        raw = request.getHeader(TOKEN_HEADER)
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw

    def hosted_ok(self, request, app_cfg, with_cookie: bool) -> bool:
        """Whether this client may use Hosted: network, token header, or the token cookie."""
        if address_allowed(app_cfg, self.client(request)):
            return True
        if token_allowed(app_cfg, self.token(request)):
            return True
        if with_cookie:
            proof = (request.getCookie(HOSTED_COOKIE) or b"").decode("ascii", "replace")
            return self.csrf.hosted_proof_valid(app_cfg.url_path, proof, hosted_tokens(app_cfg))
        return False

    def _modes(self, request, app_cfg) -> list[str]:
        """The modes this client is offered on the page."""
        modes = ["extended"]
        if app_cfg.second_number:
            modes.append("simple")
        if self.hosted_ok(request, app_cfg, with_cookie=True):
            modes.append("hosted")
        return modes

    @staticmethod
    def base(app_cfg) -> str:
        """The instance's path without a trailing slash ("" for the root).

        Path-routed handlers get this as their ``base``; host-routed ones get "".
        """
        return "" if app_cfg.url_path == "/" else app_cfg.url_path

    # -- the page ------------------------------------------------------------------------

    def page_get(self, app_cfg, base, request):
        """The form, in the mode the ``mode`` query argument picks (tabs are links)."""
        modes = self._modes(request, app_cfg)
        wanted = (request.args.get(b"mode") or [b""])[0].decode("ascii", "replace")
        mode = wanted if wanted in modes else modes[0]
        nonce = self.csrf.ensure_cookie(request)
        offer = bool(hosted_tokens(app_cfg)) and "hosted" not in modes
        body = pages.form_page(app_cfg, base or "/", modes, mode,
                               self.csrf.token(nonce, app_cfg.url_path), offer_token=offer)
        return html_response(request, 200, body)

    @defer.inlineCallbacks
    def page_post(self, app_cfg, base, request):
        """Start a callback from the form: 303 to its status page (202 JSON for the script)."""
        wants_json = b"application/json" in (request.getHeader(b"accept") or b"")
        client = self.client(request)
        mode = ""
        fields: dict = {}
        try:
            fields = self._form(request)
            mode = fields.get("mode", "")
            if not self.csrf.verify(request, app_cfg.url_path, fields.get("csrf")):
                exc = CallbackRefused("forbidden", "This form has expired or did not come from "
                                                   "this page; please try again.", "csrf")
                self.gateway.refused(app_cfg, mode, client, exc)
                raise exc
            cb_id = yield self.gateway.start(app_cfg, mode, fields, client, self.token(request),
                                      self.hosted_ok(request, app_cfg, with_cookie=True))
        except Exception as e:  # noqa: BLE001 - every failure becomes an answer here
            return self._page_refusal(request, app_cfg, base, mode, fields, e, wants_json)
        status_url = f"{base}/status/{quote(cb_id, safe='')}"
        if wants_json:
            status = yield self.gateway.initial_status(cb_id)
            return json_response(request, 202, {"id": cb_id, "status": status,
                                                "status_url": status_url,
                                                "api_url": f"/api/v1/callbacks/{quote(cb_id)}"})
        request.setResponseCode(303)
        request.setHeader(b"location", status_url.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return b""

    def _page_refusal(self, request, app_cfg, base, mode, fields, exc, wants_json):
        """The form again with the errors (or the JSON error for the script)."""
        status, body, headers = error_response(exc)
        for k, v in headers.items():
            request.setHeader(k, v)
        if wants_json:
            return json_response(request, status, body)
        modes = self._modes(request, app_cfg)
        shown = mode if mode in modes else modes[0]
        errors = exc.errors if isinstance(exc, InvalidInput) else {}
        message = None if isinstance(exc, InvalidInput) else body["error"]["message"]
        values = {k: v for k, v in fields.items() if k != "password"}
        nonce = self.csrf.ensure_cookie(request)
        page = pages.form_page(app_cfg, base or "/", modes, shown,
                               self.csrf.token(nonce, app_cfg.url_path), values, errors, message,
                               offer_token=bool(hosted_tokens(app_cfg)) and "hosted" not in modes)
        return html_response(request, status, page)

    @defer.inlineCallbacks
    def status_get(self, app_cfg, base, request, cb_id):
        """The status page (refreshes itself without JavaScript until final)."""
        try:
            status = yield self.gateway.lookup(app_cfg, cb_id)
        except Exception as e:  # noqa: BLE001 - mapped to a page below
            code, body, headers = error_response(e)
            for k, v in headers.items():
                request.setHeader(k, v)
            title = "Callback not found" if code == 404 else "Status not available"
            return html_response(request, code, pages.message_page(app_cfg, base or "/", title,
                                                                body["error"]["message"]))
        api_url = f"{base}/api/v1/callbacks/{quote(cb_id, safe='')}"
        return html_response(request, 200, pages.status_page(app_cfg, base or "/", status, api_url))

    @defer.inlineCallbacks
    def hosted_access(self, app_cfg, base, request):
        """Remember a valid Hosted token in a signed cookie, then show the Hosted form."""
        client = self.client(request)
        try:
            fields = self._form(request)
            if not self.csrf.verify(request, app_cfg.url_path, fields.get("csrf")):
                raise CallbackRefused("forbidden", "This form has expired or did not come from "
                                                   "this page; please try again.", "csrf")
            yield self.gateway.limiter.check_client(client)  # token guesses count too
            token = fields.get("token", "")
            if not token_allowed(app_cfg, token):
                raise CallbackRefused("hosted_not_allowed", "That Hosted access token is not "
                                                            "valid here.", "token")
        except Exception as e:  # noqa: BLE001 - every failure becomes an answer here
            if isinstance(e, CallbackRefused):
                self.gateway.refused(app_cfg, "hosted", client, e)
            return self._page_refusal(request, app_cfg, base, "", {}, e, False)
        request.addCookie(HOSTED_COOKIE, self.csrf.hosted_proof(app_cfg.url_path, token).encode(),
                          path=(base or "/").encode(), secure=self.csrf.secure, httpOnly=True,
                          sameSite=b"strict")
        self.log.info("hosted access granted by token application={app} client={client}",
                      app=app_cfg.name, client=client)
        request.setResponseCode(303)
        # Not "{base}?mode=hosted": with base "" that is relative to /hosted-access.
        request.setHeader(b"location", f"{base or '/'}?mode=hosted".encode())
        return b""

    # -- assets --------------------------------------------------------------------------

    def static(self, request, name):
        """The page's stylesheet and script (nothing else is served)."""
        if name not in STATIC_TYPES:
            return notFound()
        request.setHeader(b"content-type", STATIC_TYPES[name])
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return _package_file(f"static/{name}")


def build_callback_web(cfg, db, callback_service, clock, metrics, *, fallback=None,
                       accepting=lambda: True, csrf_secret: bytes | None = None,
                       trusted_proxies=()):
    """A ``CallbackWeb`` over the PostgreSQL limit store of ``db`` (the usual wiring).

    ``accepting`` is consulted with ``db.ready`` before any callback is started (e.g. false
    while the server drains or before the call-handling services are up); plain ``tcp:``
    endpoints get cookies without the ``Secure`` flag. ``web.secret_service`` is a
    ``SharedSecretService`` to start once the database is ready.
    """
    from cbserver.db.limits_store import PostgresLimitStore
    from cbserver.web.limits import ConcurrencyGauge, RateLimiter

    store = PostgresLimitStore(db)
    web = CallbackWeb(cfg, callback_service, RateLimiter(store, cfg.limits, clock),
                      ConcurrencyGauge(store, cfg.limits), clock, metrics,
                      ready=lambda: bool(db.ready) and bool(accepting()),
                      csrf_secret=csrf_secret, fallback=fallback, trusted_proxies=trusted_proxies,
                      secure_cookies=not cfg.web.endpoint.startswith("tcp:"))
    web.secret_service = SharedSecretService(web.csrf, store)
    return web
