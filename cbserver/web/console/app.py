"""The console's web app: login, logout, the layout and the rules every screen follows.

``Console(admin)`` serves ``/ui/`` on the admin endpoint (``AdminApp`` mounts it) with the
same ``Catalog``/``Accounts``/``Payments``/``Generator`` services as the admin JSON API,
never SQL of its own. Every page needs a session (``cbserver.operators``); without one a GET
is redirected to the login form and anything else is refused 401. Every POST must carry the
session's CSRF token (403 otherwise, nothing changed) and, except the login and the logout,
an administrator's session: a read-only operator is refused 403 and is never shown the
buttons. Pages are Jinja2 templates (autoescaped) under ``templates/``; they work without
JavaScript (links and forms that POST), htmx only enhances them.

Screens are added by ``screens_catalog``, ``screens_accounts``, ``screens_calls`` and
``screens_nodes`` through ``Console.page``.
Each handler gets the ``Session``: ``session.operator`` is the name the audit log will record
for a change (``Console.actor``).
"""

from __future__ import annotations

import functools
import secrets
from pathlib import Path
from urllib.parse import quote

from klein import Klein
from twisted.internet import defer
from twisted.web.pages import notFound

from cbserver.billing.validation import NotFound, ValidationError
from cbserver.db.operators_store import PostgresOperatorStore
from cbserver.errors import DatabaseUnavailable
from cbserver.logs import Logger
from cbserver.operators import ROLE_TITLES, LoginFailed, LoginLimited, Operators
from cbserver.web.console import (
    screens_accounts,
    screens_apps,
    screens_audit,
    screens_calls,
    screens_catalog,
    screens_nodes,
)
from cbserver.web.console.forms import PREFIX, Refused, form_fields, url
from cbserver.web.responses import log_unexpected
from cbserver.web.templating import render

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
MAX_FORM = 4 << 20  # the largest form body read (a rates CSV included)

# The menu in the operator's manual's order; None: a screen still to come (shown disabled).
MENU = (
    ("Infrastructure", (("applications", "Voice applications", "/applications"),)),
    ("Service catalog", (("destinations", "Destinations", "/destinations"),
                         ("tariffs", "Tariffs", "/tariffs"),
                         ("products", "Products", "/products"))),
    ("Sales", (("customers", "Customers", "/customers"),
               ("accounts", "Accounts", "/accounts"),
               ("generator", "Account generator", "/generator"),
               ("batches", "Batches", "/batches"))),
    ("Calls", (("xdrs", "xDRs", "/xdrs"), ("live", "Live callbacks", "/callbacks/live"),
               ("past", "Past callbacks", "/callbacks/past"), ("nodes", "Nodes", "/nodes"))),
    ("Reports", (("reports", "Reports", "/reports"),)),
    ("Administration", (("audit", "Audit log", "/audit"),)),
)
STATIC_FILES = {
    "console.css": b"text/css; charset=utf-8",
    "console.js": b"text/javascript; charset=utf-8",
    "reports.js": b"text/javascript; charset=utf-8",
    "vendor/htmx/htmx.min.js": b"text/javascript; charset=utf-8",
    "vendor/chartjs/chart.umd.js": b"text/javascript; charset=utf-8",
}
# No inline script or style, no other origin, no framing (the console changes money).
CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


class Console:
    """The operator's console over the admin app's services."""

    log = Logger()

    def __init__(self, admin, *, secure: bool = True, operators: Operators | None = None,
                 make_actor=None):
        self.admin = admin
        self.make_actor = make_actor or _ui_actor
        self.catalog, self.accounts = admin.catalog, admin.accounts
        self.payments, self.generator = admin.payments, admin.generator
        self.applications = getattr(admin, "applications", None)
        web = getattr(getattr(admin, "cfg", None), "web", None)
        self.operators = operators or Operators(
            PostgresOperatorStore(admin.db),
            idle_timeout=getattr(web, "console_idle_timeout", 900.0),
            attempts=getattr(web, "console_login_attempts", 5),
            period=getattr(web, "console_lockout", 900.0))
        self.secure = secure
        # The __Host- prefix (RFC 6265bis 4.1.3.2) pins the cookie to this host, path / and
        # Secure: a sibling sub-domain cannot plant or overwrite it. A plain tcp: endpoint
        # (tests, a proxy that ends TLS) cannot use it, nor Secure.
        pre = b"__Host-" if secure else b""
        self.session_cookie = pre + b"cbs_console"
        self.login_cookie = pre + b"cbs_login"
        self.app = Klein()
        self._routes()
        screens_catalog.add_routes(self)
        screens_accounts.add_routes(self)
        screens_calls.add_routes(self)
        screens_nodes.add_routes(self)
        screens_apps.add_routes(self)
        screens_audit.add_routes(self)
        self.app.handle_errors(self.errors)

    def resource(self):
        """The Twisted resource of the console (mounted at ``/ui/``)."""
        return self.app.resource()

    @staticmethod
    def actor(session) -> str:
        """The name a change is made by, for the audit log: the logged-in operator's."""
        return session.operator

    def audit_actor(self, request, session):
        """The audit log's actor of a change this operator makes from ``request``."""
        client = getattr(request.getClientAddress(), "host", "") or ""
        return self.make_actor(session.operator, client)

    def service(self, name: str, request, session):
        """The admin app's ``name`` service ("catalog", "accounts", "payments", "generator",
        "applications"),
        bound to the operator for the audit log when the service can be (``as_actor``, from the
        audit log's branch): every change the console makes goes through here."""
        svc = getattr(self, name)
        as_actor = getattr(svc, "as_actor", None)
        if as_actor is None or session is None:
            return svc
        client = getattr(request.getClientAddress(), "host", "") or ""
        return as_actor(self.make_actor(session.operator, client))

    # -- plumbing ----------------------------------------------------------------------------

    def _routes(self) -> None:
        """Login, logout, home and the static files."""
        route = self.app.route
        route("/", methods=["GET"], endpoint="home")(self.page()(self.home))
        route("/login", methods=["GET"], endpoint="login_form")(self.login_form)
        route("/login", methods=["POST"], endpoint="login")(self.login)
        route("/logout", methods=["POST"], endpoint="logout")(self.page(change=False)(self.logout))
        route("/static/<path:name>", methods=["GET", "HEAD"], endpoint="static")(self.static)

    def page(self, change: bool | None = None):
        """Decorate a screen handler ``fn(request, session, **route_args)`` (a coroutine).

        The session is required; a POST must carry its CSRF token; ``change`` (by default:
        any POST) needs an administrator. Typed errors become pages: ``NotFound`` 404,
        ``Refused`` its status, ``DatabaseUnavailable`` 503.
        """

        def wrap(fn):
            @functools.wraps(fn)
            def handler(request, **kwargs):
                async def run():
                    session = await self.operators.session(self._cookie(request, self.session_cookie))
                    posting = request.method == b"POST"
                    if session is None:
                        if posting or request.method not in (b"GET", b"HEAD"):
                            raise Refused(401, "You are not logged in (or your session has "
                                               "ended): log in again.")
                        return self._redirect(request, url("/login", next=request.uri.decode(
                            "utf-8", "replace")))
                    self._headers(request)
                    if posting:
                        fields = form_fields(request)
                        if not session.csrf_ok(fields.get("csrf")):
                            raise Refused(403, "This form has expired or did not come from the "
                                               "console; go back, reload it and try again.")
                        if (posting if change is None else change) and not session.can_change:
                            raise Refused(403, "Your role is read-only: you may look, not change.")
                    return await fn(request, session, **kwargs)

                return defer.ensureDeferred(run())

            return handler

        return wrap

    @staticmethod
    def _cookie(request, name: bytes) -> str | None:
        """A cookie's value as text, or None."""
        raw = request.getCookie(name)
        return raw.decode("ascii", "replace") if raw else None

    @staticmethod
    def _headers(request) -> None:
        """Headers of every console answer: no caching, no framing, no sniffing, the CSP."""
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"same-origin")
        request.setHeader(b"content-security-policy", CSP)

    def _redirect(self, request, location: str) -> bytes:
        """303 See Other to a console URL (after a POST, the browser GETs it)."""
        self._headers(request)
        request.setResponseCode(303)
        request.setHeader(b"location", location.encode("utf-8"))
        return b""

    def render(self, request, session, template: str, status: int = 200, **context) -> bytes:
        """A console page from ``template`` with the layout's context."""
        self._headers(request)
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return render(TEMPLATES, template, session=session, menu=MENU, url=url, quote=quote,
                      role_titles=ROLE_TITLES, can_change=bool(session and session.can_change),
                      csrf=session.csrf_token if session else "", **context)

    def message(self, request, session, status: int, title: str, text: str) -> bytes:
        """A page with one message (refusals, not found...)."""
        return self.render(request, session, "message.html", status, title=title, text=text,
                           active="")

    def errors(self, request, failure):
        """The console's error boundary: typed errors as pages, anything else a 500 page."""
        exc = failure.value
        if isinstance(exc, Refused):
            return self.message(request, None, exc.status, "Refused", exc.message)
        if isinstance(exc, NotFound):
            return self.message(request, None, 404, "Not found", str(exc))
        if isinstance(exc, ValidationError):  # a bad key in the URL (/ui/rates/abc)
            return self.message(request, None, 400, "Bad request", str(exc))
        if isinstance(exc, DatabaseUnavailable):
            return self.message(request, None, 503, "Database unavailable",
                                "The database does not answer; try again in a moment.")
        if getattr(exc, "code", None) in (404, 405):  # routing's own (werkzeug)
            return self.message(request, None, exc.code, "Not found", "No such page.")
        request_id = log_unexpected(request, failure, "the console")
        return self.message(request, None, 500, "Something went wrong",
                            f"Something went wrong on our side (request {request_id}).")

    # -- pages -------------------------------------------------------------------------------

    async def home(self, request, session):
        """The start page: the menu, and who is logged in."""
        return self.render(request, session, "home.html", active="")

    def _login_page(self, request, status=200, error="", name="", next_url=""):
        """The login form with a fresh double-submit token in its cookie."""
        token = secrets.token_urlsafe(24)
        request.addCookie(self.login_cookie, token.encode(), path=b"/", secure=self.secure,
                          httpOnly=True, sameSite=b"strict")
        return self.render(request, None, "login.html", status, login_token=token, error=error,
                           name=name, next=next_url, active="")

    def login_form(self, request):
        """The login form."""
        nxt = (request.args.get(b"next") or [b""])[0].decode("utf-8", "replace")
        return self._login_page(request, next_url=nxt)

    @staticmethod
    def _safe_next(nxt: str) -> str:
        """Where to go after the login: a console path only (never another site)."""
        if nxt.startswith(PREFIX + "/") and not nxt.startswith("//") and "\\" not in nxt:
            return nxt
        return url("/")

    def login(self, request):
        """Check name and password; a new session (and a new id) on success."""

        async def run():
            self._headers(request)
            try:
                fields = form_fields(request)
            except ValidationError:
                fields = {}
            name, nxt = fields.get("name", "")[:64], fields.get("next", "")
            # Login CSRF: the form's token must equal its cookie (double submit, __Host-).
            cookie = self._cookie(request, self.login_cookie) or ""
            given = fields.get("csrf", "")
            if not cookie or not secrets.compare_digest(cookie.encode(), given.encode()):
                return self._login_page(request, 403, "This form has expired; please try again.",
                                        name, nxt)
            client = getattr(request.getClientAddress(), "host", "") or ""
            try:
                session_id, session = await self.operators.login(
                    name, fields.get("password", ""), client,
                    self._cookie(request, self.session_cookie) or "")
            except LoginLimited:
                request.setHeader(b"retry-after", str(int(self.operators.period)).encode())
                self.log.warn("console login refused: too many failures name={name} client={client}",
                              name=name, client=client)
                return self._login_page(request, 429, "Too many failed logins: wait a few "
                                                      "minutes before trying again.", name, nxt)
            except LoginFailed:
                self.log.info("console login failed name={name} client={client}",
                              name=name, client=client)
                return self._login_page(request, 401, "Wrong name or password.", name, nxt)
            request.addCookie(self.session_cookie, session_id.encode(), path=b"/",
                              secure=self.secure, httpOnly=True, sameSite=b"strict")
            request.addCookie(self.login_cookie, b"", path=b"/", secure=self.secure,
                              httpOnly=True, sameSite=b"strict", max_age="0")
            self.log.info("console login operator={operator} role={role} client={client}",
                          operator=session.operator, role=session.role, client=client)
            return self._redirect(request, self._safe_next(nxt))

        return defer.ensureDeferred(run())

    async def logout(self, request, session):
        """End the session and forget the cookie."""
        await self.operators.logout(session)
        request.addCookie(self.session_cookie, b"", path=b"/", secure=self.secure,
                          httpOnly=True, sameSite=b"strict", max_age="0")
        return self._redirect(request, url("/login"))

    def static(self, request, name):
        """The console's own stylesheet and script, and the vendored libraries."""
        if name not in STATIC_FILES:
            return notFound()
        request.setHeader(b"content-type", STATIC_FILES[name])
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return _static_file(name)


def _ui_actor(operator: str, client: str):
    """The audit log's actor for an operator in the console (source ``ui``).

    Only called for services that have ``as_actor``, i.e. once the audit log
    (``cbserver.billing.audit``) is part of the build.
    """
    from cbserver.billing.audit import Actor  # noqa: PLC0415 - exists with the audit log only

    return Actor(operator, "ui", client)


@functools.lru_cache(maxsize=8)
def _static_file(name: str) -> bytes:
    """A static file of the console (read once)."""
    return (STATIC / name).read_bytes()
