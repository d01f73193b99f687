"""A drained node (``cbserver node drain``) refuses new callbacks with 503 ``draining`` and a
Retry-After, on the JSON API and the page, before any database work; calls it already runs are
still reported."""

from __future__ import annotations

import pytest

from tests.unit.web.harness import Harness

EXTENDED = {"mode": "extended", "account": "cb1001", "password": "right-pw", "phone": "+1 555 0100",
            "destination": "442079460000"}


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.finish()


def test_drained_node_refuses_new_callbacks_and_still_reports_running_ones(h):
    cb_id = h.post_json("/api/v1/callbacks", EXTENDED).json()["id"]
    h.service.draining = True
    r = h.post_json("/api/v1/callbacks", EXTENDED)
    assert r.code == 503 and r.json()["error"]["code"] == "draining"
    assert r.header("retry-after") == "2"
    assert len(h.service.requests) == 1  # the refused one never reached the service
    assert h.get(f"/api/v1/callbacks/{cb_id}").code == 200
    h.service.draining = False
    assert h.post_json("/api/v1/callbacks", EXTENDED).code == 202


def test_the_status_page_names_the_node_and_escapes_it(h):
    from cbserver.web import pages

    status = {"id": "x", "status": "connected", "node": "<edge&1>", "charges": None, "cause": None}
    html = pages.status_page(h.config.application[0], "/web-callback", status, "/api").decode()
    assert "Server: &lt;edge&amp;1&gt;" in html and "<edge&1>" not in html
    cb_id = h.post_json("/api/v1/callbacks", EXTENDED).json()["id"]
    assert h.get(f"/api/v1/callbacks/{cb_id}").json()["node"] == "node1"
    assert "Server: node1" in h.get(f"/web-callback/status/{cb_id}").body.decode()
