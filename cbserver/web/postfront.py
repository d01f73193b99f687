"""The callback POST routed without werkzeug, answered exactly as the Klein route answers it.

Every ``POST /api/v1/callbacks`` (and an instance's ``P/api/v1/callbacks``) went through two
Klein renders: the site's (werkzeug matches the ``/api`` mount) and the API's (werkzeug
matches ``/v1/callbacks``). Each bound a URL map, adapted the request, built the matcher's
recursive closure (a reference cycle of about 17 objects left for the collector), and chained
half a dozen Deferreds, for one path known in advance (issue 17 item 2, docs/bench-callbacks.md
"Session 10").

``CallbackPostFront`` sits in front of the site: a POST whose path is exactly one of those
mounts goes straight to ``CallbackApi.post`` and its error boundary ``CallbackApi.errors``, with
Klein's render logic reproduced step for step (``_PostRender``): the same status, headers and
body for every outcome, the endpoint cancelled when the client goes away, a failure of the
error boundary itself answered by ``request.processingFailed`` as Klein does. Which paths go
there is decided by asking the site's own werkzeug maps once, when the site is built, so the
fast path never routes a path differently from Klein. Anything else goes to the site as before:
another method or path, a percent-encoded or absolute-form path, and any request whose host
name Klein would refuse (not UTF-8: 400; not IDNA-encodable: werkzeug's ``BadHost``).
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, maybeDeferred
from twisted.python import log as legacy_log
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from werkzeug.exceptions import HTTPException

_HOSTS_REMEMBERED = 64


def post_paths(root, mounts: dict, paths: dict[str, object]) -> dict[bytes, object]:
    """Of ``paths`` (path -> instance), those ``root`` (a Klein app) routes to one of ``mounts``.

    ``mounts`` maps the endpoint names of the API mounts to the instance each serves (None:
    the shared mount); a path below a mount matches Klein's ``<name>_branch`` rule. A path
    goes in the table only if werkzeug matches it, for a POST, to the very mount whose
    instance the caller expects; and only if it reaches Twisted as the same bytes (no ``%``:
    Twisted unquotes path segments before Klein sees them).
    """
    adapter = root.url_map.bind("localhost")
    table: dict[bytes, object] = {}
    for path, app_cfg in paths.items():
        if "%" in path:
            continue
        try:
            endpoint, _ = adapter.match(path, method="POST")
        except HTTPException:
            continue
        endpoint = endpoint.removesuffix("_branch")
        if endpoint in mounts and mounts[endpoint] is app_cfg:
            table[path.encode("utf-8")] = app_cfg
    return table


class CallbackPostFront(Resource):
    """The site's root: callback POSTs straight to the API, everything else to ``site``.

    ``posts`` maps exact request paths to the instance their POST is for (None: the body
    names it); ``host_posts`` maps each instance served by host name (``HostDispatch``) to
    whether its ``/api/v1/callbacks`` is the API's POST; ``by_host`` is that dispatch's table
    (empty without ``hosts``).
    """

    isLeaf = True  # the Klein resources behind it route the whole path themselves

    def __init__(self, web, api, site, posts: dict[bytes, object], host_posts: dict,
                 host_path: bytes):
        super().__init__()
        self.web = web
        self.api = api
        self.site = site
        self.posts = posts
        self.host_posts = host_posts
        self.host_path = host_path
        self._hosts: dict[bytes, bool] = {}

    def render(self, request):
        """A callback POST: render it here; anything else: the site renders it."""
        if request.method == b"POST":
            found, app_cfg = self._route(request)
            if found and self._klein_binds(request):
                return _PostRender(self.api, request, app_cfg).start()
        return self.site.render(request)

    def _route(self, request) -> tuple[bool, object]:
        """``(True, instance)`` when the site would route this POST to the API's POST."""
        if self.host_posts:
            app_cfg = self.web.host_instance(request)
            if app_cfg in self.host_posts:  # HostDispatch hands it to that instance's root
                return (request.path == self.host_path and self.host_posts[app_cfg]), app_cfg
        posts = self.posts
        path = request.path
        if path in posts:
            return True, posts[path]
        return False, None

    def _klein_binds(self, request) -> bool:
        """Whether Klein would get as far as the route for this request's host name.

        Klein answers 400 when the host name is not UTF-8, and werkzeug raises ``BadHost``
        (a 500) when it cannot be IDNA-encoded: such requests keep those answers by going to
        the site. The verdict is remembered per host name (a few; a flood of names only
        costs the check).
        """
        name = request.getRequestHostname()
        known = self._hosts.get(name)
        if known is None:
            try:
                name.decode("utf-8").lower().partition(":")[0].encode("idna")
                known = True
            except UnicodeError:
                known = False
            if len(self._hosts) >= _HOSTS_REMEMBERED:
                self._hosts.clear()
            self._hosts[name] = known
        return known


class _PostRender:
    """One callback POST, rendered as ``KleinResource.render`` renders an endpoint.

    The endpoint's result is written and the request finished; its failure goes to the API's
    error boundary, and a failure of that to Klein's defaults. Once the request has finished
    (the client went away) failures are only logged, and a pending endpoint is cancelled.
    The object is referenced by the request's finish notifications and the endpoint's
    Deferred until both have fired: no cycle outlives the request.
    """

    def __init__(self, api, request, app_cfg):
        self.api = api
        self.request = request
        self.app_cfg = app_cfg
        self.finished = False
        self.d = None

    def start(self):
        """Run the endpoint; the answer is written when it is ready."""
        request = self.request
        # One finish notification for what Klein registers as two (its flag, then the
        # cancel on a lost connection): the same order, one Deferred less.
        request.notifyFinish().addCallbacks(self._finish, self._lost)
        self.d = d = maybeDeferred(self.api.post, request, self.app_cfg)
        d.addErrback(self._failed)
        d.addCallback(self._write)
        d.addErrback(legacy_log.err, _why="Unhandled Error writing response")
        return NOT_DONE_YET

    def _finish(self, _result) -> None:
        self.finished = True

    def _lost(self, _reason) -> None:
        """The connection went away before the answer: cancel the endpoint (Klein does)."""
        self.finished = True
        if self.d is not None:  # (not yet: lost while the endpoint ran, Klein cancels nothing)
            self.d.cancel()

    def _failed(self, failure):
        """The endpoint failed: its error boundary answers (every ``Exception``)."""
        if self.finished or not failure.check(Exception):
            return self._unhandled(failure)
        d = maybeDeferred(self.api.errors, self.request, failure)
        return d.addErrback(self._unhandled)

    def _unhandled(self, failure):
        """What Klein does with a failure no handler took."""
        if self.finished:
            if not failure.check(CancelledError):
                legacy_log.err(failure, "Unhandled Error Processing Request.")
            return None
        if failure.check(HTTPException):
            request, exc = self.request, failure.value
            request.setResponseCode(exc.code)
            response = exc.get_response({})
            for header, value in response.headers:
                request.setHeader(_utf8(header), _utf8(value))
            return _utf8(b"".join(response.iter_encoded()))
        self.request.processingFailed(failure)
        return None

    def _write(self, result) -> None:
        """Write the body (bytes or text) and finish, unless the request has finished."""
        if isinstance(result, str):
            result = result.encode("utf-8")
        if isinstance(result, bytes):
            self.request.write(result)
        if not self.finished:
            self.request.finish()


def _utf8(value) -> bytes:
    """``value`` as UTF-8 bytes (werkzeug's headers and bodies may be text)."""
    return value.encode("utf-8") if isinstance(value, str) else value
