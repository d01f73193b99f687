"""The public web endpoint: the health app, and the site that mounts every app on it.

``WebApp`` is a class holding a ``Klein()`` app with its collaborators passed in (the
database, the clock, extra health sources), so tests drive it with treq's ``StubTreq``.

``site_resource(web)`` is the endpoint's root over a ``CallbackWeb``: a Klein app that mounts
the JSON API (``cbserver.web.callback_api``) at ``/api`` and at each instance's ``P/api``,
answers ``/metrics``, and hands everything else to the callback pages
(``cbserver.web.callback_pages``), whose own fallback is the health app. Each mounted app has
its own error boundary: JSON errors below ``/api``, HTML pages elsewhere. When an instance
lists ``hosts``, a ``HostDispatch`` in front picks, by the request's host name, that
instance's own root (its API and pages without the P prefix, then everything by path).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.web.resource import Resource

from cbserver.db.pool import IDatabase
from cbserver.errors import DatabaseUnavailable
from cbserver.logs import Logger
from cbserver.web.callback_api import CALLBACKS_POST, CallbackApi
from cbserver.web.kleincycle import CycleFreeKlein as Klein
from cbserver.web.limits import in_networks
from cbserver.web.postfront import CallbackPostFront, post_paths
from cbserver.web.responses import json_response

log = Logger()


class WebApp:
    """Routes of the public endpoint (``[web] endpoint``)."""

    app = Klein()
    log = Logger()
    health_timeout = 2.0

    def __init__(self, db: IDatabase, clock, health_sources: dict[str, Callable[[], dict]] = None):
        self.db = db
        self.clock = clock
        self.health_sources = dict(health_sources or {})
        self.draining = False
        # The node's monitor (cbserver.callback.nodestate.NodeMonitor) behind /livez and
        # /readyz; None until the server sets it (then /readyz says "not started").
        self.node_state = None

    @app.route("/livez", methods=["GET", "HEAD"])
    def livez(self, request):
        """200 while the process answers: no database, no I/O (a balancer's liveness probe)."""
        body = self.node_state.livez() if self.node_state is not None else {"status": "ok"}
        return json_response(request, 200, body)

    @app.route("/readyz", methods=["GET", "HEAD"])
    def readyz(self, request):
        """200 when this node should be sent callbacks, else 503 with the reason (JSON).

        Answered from the monitor's last poll, never by a query of its own: a balancer (or a
        stranger) polling it at any rate costs the database nothing more, and a hung database
        cannot hold these requests (docs/web.md "Liveness and readiness").
        """
        if self.node_state is None:
            return json_response(request, 503, {"status": "unavailable", "reason": "starting",
                                                "checks": {}})
        ok, body = self.node_state.readyz()
        return json_response(request, 200 if ok else 503, body)

    @app.route("/healthz", methods=["GET", "HEAD"])
    @defer.inlineCallbacks
    def healthz(self, request):
        """200 with a JSON body when the database answers, 503 with the reason otherwise."""
        body: dict = {"database": self.db.health()}
        ok = self.db.ready
        if ok:
            d = self.db.runQuery("SELECT 1")
            d.addTimeout(self.health_timeout, self.clock)
            try:
                yield d
            except (DatabaseUnavailable, defer.TimeoutError) as e:
                ok = False
                body["database"] = {"status": "down", "reason": str(e) or "query timed out"}
            except Exception as e:  # noqa: BLE001 - any failure of the probe means unhealthy
                ok = False
                body["database"] = {"status": "down", "reason": f"{type(e).__name__}: {e}"}
        for name, source in self.health_sources.items():
            body[name] = source()
        if self.draining:
            ok = False
            body["draining"] = True
        body["status"] = "ok" if ok else "unavailable"
        return json_response(request, 200 if ok else 503, body)

    def resource(self):
        """The Twisted web resource for this app."""
        return self.app.resource()


# -- the site -----------------------------------------------------------------------------


class HostDispatch(Resource):
    """The site's root when an instance lists ``hosts``: the host name picks the app.

    A request whose host one instance lists goes to that instance's root (its API and pages
    at the root, then everything else by path); any other request goes to the path-routed
    root, so it is served exactly as without ``hosts``.
    """

    isLeaf = True  # the Klein resources behind it route the whole path themselves

    def __init__(self, web, by_host: dict, by_path):
        super().__init__()
        self.web = web
        self.by_host = by_host
        self.by_path = by_path

    def render(self, request):
        """Hand the request to the chosen app's resource."""
        app_cfg = self.web.host_instance(request)
        return self.by_host.get(app_cfg, self.by_path).render(request)


def _mount(app: Klein, prefix: str, resource, endpoint: str) -> None:
    """Serve ``prefix`` and everything below it with ``resource`` (which routes the rest)."""

    def mounted(request):
        """The mounted app, given the path below the prefix."""
        return resource

    mounted.__name__ = endpoint
    # strict_slashes off: "/api" itself goes to the API (its JSON 404), not to a redirect.
    app.route(prefix + "/", branch=True, endpoint=endpoint, strict_slashes=False)(mounted)


def metrics_page(web, request) -> bytes:
    """Prometheus text exposition of this process's metrics, for allowed clients only.

    The figures tell outsiders how busy the service is and why requests fail, so only
    ``[web] metrics_allowed_clients`` (loopback by default) may read them; a refused request
    is answered before anything is collected.
    """
    client = web.client(request)
    if not in_networks(client, web.metrics_networks):
        log.debug("metrics refused client={client}", client=client)
        request.setResponseCode(403)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return b"Forbidden: /metrics is not open to your address.\n"
    request.setHeader(b"content-type", web.metrics.content_type.encode("ascii"))
    request.setHeader(b"cache-control", b"no-store")
    return web.metrics.render()


def _path_root(web, api: CallbackApi) -> tuple[Klein, dict, dict]:
    """The path-routed root: ``/metrics``, the API at ``/api`` and ``P/api``, then the pages.

    Also returns the API mounts (endpoint name -> instance, None for the shared one) and the
    callback POST path of each (path -> instance), for ``CallbackPostFront``.
    """
    root = Klein()
    root.route("/metrics", methods=["GET"], endpoint="metrics")(
        lambda request: metrics_page(web, request))
    _mount(root, "/api", api.resource(), "api")
    mounts: dict = {"api": None}
    posts: dict = {"/api" + CALLBACKS_POST: None}
    for i, app_cfg in enumerate(web.config.application):
        base = web.base(app_cfg)
        if base:  # an instance at the root is served by the shared mount, as before
            _mount(root, f"{base}/api", api.resource(app_cfg, base), f"api_{i}")
            mounts[f"api_{i}"] = app_cfg
            posts[f"{base}/api" + CALLBACKS_POST] = app_cfg
    pages = web.app.resource()
    root.route("/", branch=True, endpoint="pages")(lambda request: pages)
    return root, mounts, posts


def _host_root(web, api: CallbackApi, app_cfg, by_path) -> Klein:
    """An instance's root for its host names: its API and pages at the root, then by path."""
    root = Klein()
    _mount(root, "/api", api.resource(app_cfg, ""), "api")
    pages = web.host_app(app_cfg, by_path).resource()
    root.route("/", branch=True, endpoint="pages")(lambda request: pages)
    return root


def site_resource(web):
    """The public endpoint's root resource over ``web`` (a ``CallbackWeb``).

    Without ``hosts`` on any instance the site is the path-routed Klein app alone; otherwise a
    ``HostDispatch`` in front of it picks an instance's own root by the request's host name.
    A ``CallbackPostFront`` in front of either answers the callback POST without werkzeug's
    routing (``cbserver.web.postfront``), exactly as the site would.
    """
    api = CallbackApi(web)
    path_root, mounts, posts = _path_root(web, api)
    by_path = path_root.resource()
    fast_posts = post_paths(path_root, mounts, posts)
    if not web.hosts:
        return CallbackPostFront(web, api, by_path, fast_posts, {}, b"")
    host_path = "/api" + CALLBACKS_POST
    by_host, host_posts = {}, {}
    for app_cfg in web.config.application:
        if app_cfg.hosts:
            root = _host_root(web, api, app_cfg, by_path)
            by_host[app_cfg] = root.resource()
            host_posts[app_cfg] = bool(post_paths(root, {"api": app_cfg}, {host_path: app_cfg}))
    site = HostDispatch(web, by_host, by_path)
    return CallbackPostFront(web, api, site, fast_posts, host_posts, host_path.encode())
