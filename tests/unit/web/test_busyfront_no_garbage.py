"""A request refused ``busy`` by ``BusyFront`` leaves no reference cycle behind.

Under twice the sustained load most requests are refused; each refusal that left a cycle
(the refusal's traceback held the frames of the whole call, the request, its headers and
its channel's decoder: some 60 objects) handed the collector work in proportion to the
flood, on the core the accepted callbacks need (issue 17 item 4). The real public site
(``build_callback_web``, ``BusyFront`` in front) through treq's in-memory agent, a node at
``node_max_active``; the collector is paused and saves what it finds. Deterministic, not
timed.
"""

from __future__ import annotations

import dataclasses
import gc
import json

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.web.server import Request

from cbserver.callback.api import CallbackRefused
from cbserver.config import LimitsConfig, example_path, parse_config
from cbserver.web.callback_pages import build_callback_web
from cbserver.web.metrics import Metrics
from tests.support.collector import saving_collector

REQUESTS = 20


class Db:
    """A pool that is up (nothing may be asked of it: the node is busy)."""

    ready = True


class FullService:
    """A callback service at the node's cap; a start would be a failure of the test."""

    draining = False

    def __init__(self, clock):
        self.clock = clock
        self.active = 1

    def request_callback(self, req):
        raise AssertionError("a busy node started a callback")

    def get_status(self, cb_id):
        return defer.succeed(None)


def test_busy_refusals_leave_no_cyclic_garbage():
    base = parse_config(example_path().read_text())
    cfg = dataclasses.replace(base, limits=LimitsConfig(node_max_active=1))
    clock = Clock()
    web = build_callback_web(cfg, Db(), FullService(clock), clock, Metrics(spool_depth=lambda: 0))
    client = StubTreq(web.resource())
    body = json.dumps({"mode": "simple", "account": "cb1", "phone": "15550100"}).encode()
    with saving_collector():
        for _ in range(REQUESTS):
            d = client.post("http://127.0.0.1/api/v1/callbacks", data=body,
                            headers={"Content-Type": "application/json"})
            client.flush()
            response = d.result
            assert response.code == 503
            content = client.content(response)
            client.flush()
            assert json.loads(content.result)["error"]["code"] == "busy"
            del d, response, content
        client.flush()
        gc.collect()
        # (treq's in-memory client leaves its own agents and protocols: not the server's.)
        server_side = [o for o in gc.garbage if isinstance(o, (Request, CallbackRefused))
                       or type(o).__name__ in ("frame", "traceback")]
        assert not server_side, sorted({type(o).__name__ for o in server_side})
