"""The public JSON API: start a callback, read its status, the OpenAPI document.

``CallbackApi(web)`` answers over the ``CallbackWeb`` it is given (its gateway, its instances,
how it reads a request's client, Hosted token and allow-list), so the page and the API share
one way in and one error mapping (``cbserver.web.api``). ``resource(app_cfg, base)`` is a
small Klein app for one mount point, routed below ``<base>/api`` (``cbserver.web.app`` mounts
it there): ``POST /v1/callbacks``, ``GET /v1/callbacks/<id>`` and ``GET /v1/openapi.json``;
``app_cfg`` None is the shared mount, where the body names the instance.

Its one error boundary (``errors``) answers every failure in the JSON envelope
``{"error": {"code", "message", "field"}}``: refusals and database trouble as
``error_response`` maps them, a path or method it does not route 404 ``not_found``, anything
else 500 ``internal_error`` (logged; never a traceback, never an HTML page).
"""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import quote

from twisted.internet import defer
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from cbserver.web.api import InvalidInput, error_response, parse_json_body
from cbserver.web.kleincycle import CycleFreeKlein as Klein
from cbserver.web.responses import json_response

HERE = Path(__file__).resolve().parent
# The path of ``POST`` below the API's mount (cbserver.web.postfront routes it directly).
CALLBACKS_POST = "/v1/callbacks"
NO_SUCH_RESOURCE = {"error": {"code": "not_found", "message": "No such API resource or method.",
                              "field": None}}


@functools.lru_cache(maxsize=1)
def _openapi_document() -> bytes:
    """The OpenAPI description shipped beside this module (read once, when first asked for)."""
    return (HERE / "openapi.json").read_bytes()


class CallbackApi:
    """The JSON API of every ``[[application]]`` instance."""

    def __init__(self, web):
        self.web = web
        self.gateway = web.gateway

    def resource(self, app_cfg=None, base: str = ""):
        """The API mounted at ``<base>/api``: for ``app_cfg`` (None: the body names it)."""
        app = Klein()

        def post(request):
            """``POST /api/v1/callbacks``."""
            return self.post(request, app_cfg)

        def get(request, cb_id):
            """``GET /api/v1/callbacks/<id>``."""
            return self.get(request, cb_id, app_cfg)

        app.route(CALLBACKS_POST, methods=["POST"], endpoint="post")(post)
        app.route("/v1/callbacks/<cb_id>", methods=["GET"], endpoint="get")(get)
        app.route("/v1/openapi.json", methods=["GET"], endpoint="openapi")(self.openapi)
        app.handle_errors(self.errors)
        return app.resource()

    # -- the one error boundary -----------------------------------------------------------

    @staticmethod
    def errors(request, failure):
        """Every failure of an API request, as the JSON error envelope."""
        exc = failure.value
        if isinstance(exc, HTTPException) and (exc.code or 500) < 400:
            return failure  # a routing redirect: Klein answers it
        if isinstance(exc, NotFound | MethodNotAllowed):
            # Not 405 for a known path: API clients have always been told 404 here.
            return json_response(request, 404, NO_SUCH_RESOURCE)
        status, body, headers = error_response(failure)  # logs what it does not expect
        for k, v in headers.items():
            request.setHeader(k, v)
        return json_response(request, status, body)

    # -- routes -----------------------------------------------------------------------------

    def _instance(self, body: dict):
        """The instance a shared-path API request names (may be omitted with one instance)."""
        apps = self.web.apps
        name = body.get("application")
        if name is None and len(apps) == 1:
            return next(iter(apps.values()))
        for app_cfg in apps.values():
            if name in (app_cfg.name, app_cfg.url_path):
                return app_cfg
        raise InvalidInput({"application": "Name the callback instance: one of "
                                           + ", ".join(sorted(apps)) + "."})

    @defer.inlineCallbacks
    def post(self, request, app_cfg=None):
        """``POST /api/v1/callbacks``: 202 ``{"id", "status"}``; a failure goes to ``errors``."""
        client = self.web.client(request)
        mode = ""
        try:
            body = parse_json_body(request)
            mode = body.get("mode") if isinstance(body.get("mode"), str) else ""
            app_cfg = app_cfg or self._instance(body)
        except InvalidInput as e:
            if app_cfg is None:  # no instance yet: the gateway never saw it, count it here
                self.gateway.refused(None, mode, client, e)
            raise
        token = self.web.token(request)
        hosted_ok = self.web.hosted_ok(request, app_cfg, with_cookie=False)
        fields = {k: body.get(k) for k in ("account", "password", "phone", "destination")}
        cb_id = yield self.gateway.start(app_cfg, mode, fields, client, token, hosted_ok)
        status = yield self.gateway.initial_status(cb_id)
        request.setHeader(b"location", f"/api/v1/callbacks/{quote(cb_id, safe='')}".encode())
        return json_response(request, 202, {"id": cb_id, "status": status})

    @defer.inlineCallbacks
    def get(self, request, cb_id, app_cfg=None):
        """``GET /api/v1/callbacks/{id}``: the status dict; a failure goes to ``errors``."""
        status = yield self.gateway.lookup(app_cfg, cb_id)
        return json_response(request, 200, status)

    @staticmethod
    def openapi(request):
        """The OpenAPI 3 description of the JSON API."""
        request.setHeader(b"content-type", b"application/json")
        return _openapi_document()
