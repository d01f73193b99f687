"""The admin API's calls (issue 15): /v1/xdrs, /v1/callbacks, /v1/nodes/processes,
/v1/reports/<name>.

``mount(AdminApp, ...)`` adds these routes to the admin app (``cbserver.web.admin`` calls it
once; this module does not import that one, so there is no cycle): same bearer token, same
error envelope and boundary. Each route only parses the request and asks the ``Console``
(``cbserver.callback.console``); bad parameters are a 400 naming the parameter
(``cbserver.callback.consolefilters``).

``GET /v1/xdrs`` answers JSON pages, or, with ``?format=csv`` or ``Accept: text/csv``, every
row the filter selects as CSV, streamed: the rows come from a server-side cursor a batch at
a time, each batch written as it arrives, and ``_Pacer``, registered as the request's
streaming producer (``IPushProducer``), stops the reading while the client's socket buffer
is full (Twisted calls ``pauseProducing``) and resumes it when it drains. A slow client
therefore holds back the database cursor, never fills the server's memory. At most
``MAX_EXPORTS`` exports run at once (each holds a database connection of its own); more is a
503. A failure after the first byte cannot become an error status any more: the connection
is aborted, so the client sees a truncated chunked body, never a short CSV that looks whole.
"""

from __future__ import annotations

import datetime as dt
import re

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from cbserver.billing.audit import api_actor
from cbserver.billing.validation import ValidationError
from cbserver.callback.console import Console
from cbserver.callback.consolefilters import (
    parse_callback_query,
    parse_report_range,
    parse_xdr_filter,
)
from cbserver.db.calls_store import PostgresCallsStore
from cbserver.logs import Logger
from cbserver.web.admin_nodes import node_expiry

log = Logger()

MAX_EXPORTS = 2
EXPORT_BATCH = 2000
_CALLBACK_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


class ClientGone(Exception):
    """The client closed the connection during an export."""


@implementer(IPushProducer)
class _Pacer:
    """Writes an export's chunks and tells the export when to wait (see the module docstring)."""

    def __init__(self, request, headers):
        self.request = request
        self.headers = headers
        self.started = False
        self.stopped = False
        self._paused: defer.Deferred | None = None

    def pauseProducing(self):
        """The transport's buffer is full: the next batch waits."""
        if self._paused is None:
            self._paused = defer.Deferred()

    def resumeProducing(self):
        """The buffer drained: go on."""
        d, self._paused = self._paused, None
        if d is not None:
            d.callback(None)

    def stopProducing(self):
        """The connection is gone: stop the export."""
        self.stopped = True
        d, self._paused = self._paused, None
        if d is not None:
            d.errback(ClientGone())

    def write(self, data: bytes):
        """Write one chunk; a Deferred while the client is behind."""
        if self.stopped:
            raise ClientGone()
        if not self.started:
            self.started = True
            for name, value in self.headers:
                self.request.setHeader(name, value)
        self.request.write(data)
        return self._paused


def _wants_csv(request, args: dict) -> bool:
    fmt = args.get("format")
    if fmt:
        return fmt == "csv"
    accept = (request.getHeader(b"accept") or b"").decode("latin-1").lower()
    return "text/csv" in accept and not accept.strip().startswith("application/json")


def _console(self) -> Console:
    """The app's calls ``Console``, made on first use (``self`` is the ``AdminApp``); the
    operator's web console asks the same one (``calls_console``)."""
    console = getattr(self, "_calls_console", None)
    if console is None:
        console = self._calls_console = Console(PostgresCallsStore(self.db),
                                                node_expiry(getattr(self, "cfg", None)))
        self._calls_exports = 0
    return console


class ExportsBusy(Exception):
    """``MAX_EXPORTS`` exports are running already."""


async def stream_xdrs_csv(app, request, f) -> bytes:
    """Stream every xDR of filter ``f`` as CSV to ``request`` (see the module docstring), for
    the admin API and the console alike; ``ExportsBusy`` before the first byte when
    ``MAX_EXPORTS`` are running (``app``: the ``AdminApp``)."""
    console = _console(app)
    if app._calls_exports >= MAX_EXPORTS:
        raise ExportsBusy()
    app._calls_exports += 1
    pacer = _Pacer(request, [
        (b"cache-control", b"no-store"), (b"content-type", b"text/csv; charset=utf-8"),
        (b"content-disposition", b'attachment; filename="xdrs.csv"')])
    request.registerProducer(pacer, True)
    request.notifyFinish().addErrback(lambda _: pacer.stopProducing())
    try:
        await console.export_xdrs(f, pacer.write, EXPORT_BATCH)
    except (ClientGone, defer.CancelledError):
        log.info("xDR export stopped: the client went away")
        return b""
    except Exception:
        if not pacer.started:
            raise  # the caller's error boundary answers it
        log.failure("xDR export failed after its first bytes; connection aborted")
        request.channel.transport.abortConnection()
        return b""
    finally:
        app._calls_exports -= 1
        request.unregisterProducer()
    return b""


calls_console = _console


def _callback_id(value: str) -> str:
    if not _CALLBACK_ID.match(value):
        raise ValidationError("id", "is not a callback id")
    return value


check_callback_id = _callback_id


def mount(app_cls, api, send, check_request, args_of) -> None:
    """Add the calls routes to ``app_cls.app`` (the admin app's ``Klein``); ``api``, ``send``,
    ``check_request`` and ``args_of`` are the admin module's helpers."""
    app = app_cls.app

    def csv_body(request, filename: str, text: str) -> bytes:
        request.setResponseCode(200)
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        request.setHeader(b"content-disposition", f'attachment; filename="{filename}"'.encode())
        return text.encode("utf-8")

    async def export(self, request, f) -> bytes:
        try:
            return await stream_xdrs_csv(self, request, f)
        except ExportsBusy:
            request.setHeader(b"retry-after", b"10")
            return send(request, 503, {"error": {
                "code": "busy", "field": None,
                "message": f"{MAX_EXPORTS} exports are running; try again soon"}})

    @app.route("/v1/xdrs", methods=["GET"])
    def calls_list_xdrs(self, request):
        """xDRs by filter: JSON pages, or the whole selection as streamed CSV."""

        async def run():
            self.authorize(request)
            check_request(request, {})
            args = args_of(request)
            f = parse_xdr_filter(args)
            if _wants_csv(request, args):
                return await export(self, request, f)
            return send(request, 200, await _console(self).xdrs(f))

        return defer.ensureDeferred(run())

    @app.route("/v1/callbacks", methods=["GET"])
    @api()
    async def calls_list_callbacks(self, request):
        """Live (``state=live``, the default) or past callbacks, newest first."""
        return await _console(self).callbacks(parse_callback_query(args_of(request)))

    @app.route("/v1/callbacks/<cb_id>", methods=["GET"])
    @api()
    async def calls_get_callback(self, request, cb_id):
        """One callback with its legs, cause, cost so far or charges, and xDRs."""
        return await _console(self).callback(_callback_id(cb_id))

    @app.route("/v1/callbacks/<cb_id>", methods=["DELETE"])
    @api(202)
    async def calls_hangup_callback(self, request, cb_id):
        """Ask the node running the callback to hang it up (cause ``operator_hangup``)."""
        client = getattr(request.getClientAddress(), "host", "") or "-"
        return await _console(self).hangup(_callback_id(cb_id), f"admin-api {client}",
                                           api_actor(request))

    # /v1/nodes (admin_nodes) lists node names with their drain state; this lists the
    # processes behind them, dead ones included (the last of each name), for the console.
    @app.route("/v1/nodes/processes", methods=["GET"])
    @api()
    async def calls_list_nodes(self, request):
        """Node processes: alive, calls running, started, last seen, stopped."""
        if args_of(request):
            raise ValidationError(sorted(args_of(request))[0], "unknown parameter")
        return await _console(self).nodes()

    @app.route("/v1/reports/<name>", methods=["GET"])
    def calls_report(self, request, name):
        """A report (daily, destinations, causes) as JSON or CSV."""

        async def run():
            self.authorize(request)
            check_request(request, {"name": name})
            args = args_of(request)
            console = _console(self)
            rng = parse_report_range(args, _now(self))
            report = await console.report(name, rng)
            if _wants_csv(request, args):
                return csv_body(request, f"{name}.csv", console.report_csv(report))
            return send(request, 200, report)

        return defer.ensureDeferred(run())


def _now(self):
    """The admin app's clock as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(self.clock.seconds(), dt.UTC)
