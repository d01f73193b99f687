"""Refuse callback requests ``busy`` in front of the site, while the node is at its caps.

Under overload most requests are refused (``Admission.check_load``: the node's own caps and
the start-delay gate), and a refusal's latency is what the client waits for the reactor.
On the full path a refused ``POST .../api/v1/callbacks`` went through the Klein routing of
the site, the API's mount, werkzeug's URL map, the JSON parse and the gateway's input checks
before the gate said no; its answer then waited in the connection's buffer for the
reactor's next turn. ``BusyFront`` sits before all that: for a callback POST it asks the
same gate first and, when the node is busy, answers at once the very response the API gives
(``error_response`` of ``busy``: 503, JSON envelope, ``Retry-After: 2``), counted and logged
as the gateway counts and logs a refusal, and pushes it to the socket now
(``cbserver.web.flush``). No database work, no body parse.

A flood is not a flood of log lines (issue 14's rule for network-fed error paths): the first
``LOG_LINES`` busy refusals of each ``LOG_INTERVAL`` seconds get the gateway's ``callback
refused`` line and the site's access-log line; the rest are counted (the metrics count every
one) and summed up in one ``suppressed`` line when the interval ends. Two log lines per
refusal — each written and flushed on its own — were a third of a refusal's CPU on the core
the accepted callbacks need (docs/bench-callbacks.md, "Session 10").

Anything else, and every callback POST while the node takes callbacks (or while it is not
ready or draining: those refusals keep their own codes), goes to the site unchanged. A
malformed POST that arrives while the node is busy is told ``busy`` (retry later) rather than
what is wrong with it: the check of its body is work a node past its capacity does not owe;
the retry gets that answer.
"""

from __future__ import annotations

from twisted.web.server import NOT_DONE_YET

from cbserver.callback.api import CallbackRefused
from cbserver.logs import Logger, RateLimitedLog
from cbserver.web.api import error_response
from cbserver.web.flush import flush_now, tcp_transport
from cbserver.web.live import LiveSite
from cbserver.web.responses import json_response

CALLBACKS = "/api/v1/callbacks"
#: Busy refusals logged line by line per interval; the rest are summed up (module doc).
LOG_LINES = 5
LOG_INTERVAL = 10.0
_log = Logger(namespace="cbserver.web.api.CallbackGateway")  # the gateway's own lines


class BusyFront(LiveSite):
    """The public site's root: early ``busy`` refusals of callback POSTs, else the live site.

    ``web`` is the ``CallbackWeb`` (its gateway's ``Admission`` decides, its ``client`` names
    the client for the log, its instances give the API's mount paths).
    """

    def __init__(self, web):
        super().__init__(web)
        self._paths_of = None  # the config the path table was built from
        self._paths: dict[bytes, object] = {}
        self._log = RateLimitedLog(_log, lines=LOG_LINES, interval=LOG_INTERVAL,
                                   clock=getattr(web, "clock", None))

    def render(self, request):
        """Refuse a callback POST now if the node is busy; otherwise render the live site."""
        if request.method == b"POST":
            app_cfg, mine = self._callback_post(request.path)
            if mine:
                refusal = self._refusal()
                if refusal is not None:
                    return self._refuse(request, app_cfg, refusal)
        return super().render(request)

    def _callback_post(self, path: bytes):
        """``(instance or None, True)`` when ``path`` is a mount of ``POST /v1/callbacks``."""
        config = self.web.config
        if config is not self._paths_of:
            # Rebuilt when the instances change (``CallbackWeb.set_applications``).
            paths: dict[bytes, object] = {CALLBACKS.encode(): None}
            for app_cfg in config.application:
                base = self.web.base(app_cfg)
                if base:
                    paths[(base + CALLBACKS).encode("utf-8")] = app_cfg
            self._paths, self._paths_of = paths, config
        if path not in self._paths:
            return None, False
        return self._paths[path], True

    def _refusal(self) -> CallbackRefused | None:
        """The ``busy`` refusal the admission would give now, or None (let the site answer)."""
        gateway = self.web.gateway
        admission = gateway.admission
        if not gateway.ready() or getattr(admission.service, "draining", False):
            return None  # not_ready / draining: the full path answers with their codes
        try:
            admission.check_load()
        except CallbackRefused as e:
            # Answered here, never raised again: without its traceback the refusal holds no
            # frame, so it leaves no reference cycle (traceback -> this frame -> the caller's
            # frames -> the request, its channel's decoder, its headers -> this exception) of
            # some 60 objects per refused request for the garbage collector.
            return e.with_traceback(None)
        return None

    def _refuse(self, request, app_cfg, refusal: CallbackRefused):
        """Answer ``refusal`` as the API would, count and log it, and send it now."""
        if app_cfg is None and self.web.hosts:
            app_cfg = self.web.host_instance(request)
        # Counted and logged as the gateway does a refusal of an unparsed request, unless this
        # interval's lines are used up (then the access log skips it too).
        if not self.web.gateway.refused(app_cfg, "", self.web.client(request), refusal,
                                        limited=self._log):
            request.unlogged = True  # cbserver.web.flush.QuietSite
        status, body, headers = error_response(refusal)
        for name, value in headers.items():
            request.setHeader(name, value)
        data = json_response(request, status, body)
        request.setHeader(b"content-length", str(len(data)).encode("ascii"))
        request.write(data)
        tcp = tcp_transport(request)  # finishing lets go of the channel
        request.finish()
        flush_now(tcp)
        return NOT_DONE_YET
