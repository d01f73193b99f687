"""A flood of busy refusals is counted one by one but not logged line by line.

``BusyFront`` writes the gateway's ``callback refused`` line for the first ``LOG_LINES``
refusals of each ``LOG_INTERVAL`` and a ``suppressed`` summary for the rest; the metrics
count every refusal; the refusals past the lines are marked for ``QuietSite``, whose access
log skips them. The real public site through treq's in-memory agent, on a ``task.Clock``.
"""

from __future__ import annotations

import dataclasses
import json

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from cbserver.config import LimitsConfig, example_path, parse_config
from cbserver.web.busyfront import LOG_INTERVAL, LOG_LINES
from cbserver.web.callback_pages import build_callback_web
from cbserver.web.flush import QuietSite
from cbserver.web.metrics import Metrics
from tests.unit.web.test_busyfront_no_garbage import Db, FullService

BODY = json.dumps({"mode": "simple", "account": "cb1", "phone": "15550100"}).encode()


def refuse(client: StubTreq, n: int) -> None:
    """``n`` callback POSTs, each answered 503 busy."""
    for _ in range(n):
        d = client.post("http://127.0.0.1/api/v1/callbacks", data=BODY,
                        headers={"Content-Type": "application/json"})
        client.flush()
        assert d.result.code == 503


def lines(events, text: str) -> list[dict]:
    return [e for e in events if str(e.get("log_format", "")).startswith(text)]


def test_a_flood_of_busy_refusals_is_counted_whole_and_logged_in_a_summary(logged):
    base = parse_config(example_path().read_text())
    cfg = dataclasses.replace(base, limits=LimitsConfig(node_max_active=1))
    clock = Clock()
    metrics = Metrics(spool_depth=lambda: 0)
    web = build_callback_web(cfg, Db(), FullService(clock), clock, metrics)
    client = StubTreq(web.resource())
    refuse(client, LOG_LINES + 7)
    refused = lines(logged, "callback refused")
    assert len(refused) == LOG_LINES
    assert refused[0]["code"] == "busy" and refused[0]["client"] == "127.0.0.1"
    assert refused[0]["log_namespace"] == "cbserver.web.api.CallbackGateway"
    assert f'code="busy",mode="unknown"}} {LOG_LINES + 7}.0' in metrics.render().decode()
    assert not lines(logged, "suppressed")
    clock.advance(LOG_INTERVAL)
    [summary] = lines(logged, "suppressed")
    assert summary["count"] == 7 and summary["rate_key"] == "busy"
    refuse(client, 1)  # a new interval: logged again
    assert len(lines(logged, "callback refused")) == LOG_LINES + 1


class Lines:
    """An access log file: the lines written to it."""

    def __init__(self):
        self.lines = []

    def write(self, line):
        self.lines.append(line)


def test_quiet_site_skips_the_access_line_of_a_request_marked_unlogged():
    site = QuietSite(Resource())
    site._logDateTime = "07/Dec/2026:21:00:00 +0000"
    site._logFile = Lines()
    for unlogged in (False, True, False):
        request = DummyRequest([b"api"])
        request.code, request.sentLength, request.clientproto = 503, 0, b"HTTP/1.1"
        if unlogged:
            request.unlogged = True
        site.log(request)
    assert len(site._logFile.lines) == 2
