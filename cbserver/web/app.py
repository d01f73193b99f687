"""The public web endpoint: health now; the callback pages and JSON API build on it.

``WebApp`` is a class holding a ``Klein()`` app with its collaborators passed in (the
database, the clock, extra health sources), so tests drive it with treq's ``StubTreq``.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from klein import Klein
from twisted.internet import defer

from cbserver.db.pool import DatabaseUnavailable, IDatabase
from cbserver.logs import Logger


def json_response(request, status: int, body: dict) -> bytes:
    """Set the status and JSON content type and return the encoded body."""
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"


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
