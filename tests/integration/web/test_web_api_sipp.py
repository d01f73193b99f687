"""The JSON API and the no-script status page against the real callback service and sipp.

Same world as the browser test (the whole service tree in this process, sipp as the trunk);
the requests are real HTTP through ``treq``.
"""

from __future__ import annotations

import re

import psycopg2
import pytest
import pytest_twisted
import treq

from cbserver.billing.currencies import format_amount
from tests.support.api import get_json, poll_status, post_callback
from tests.support.world import DEMO_PASSWORD, World, ensure

pytestmark = pytest.mark.integration

EXTENDED = {"mode": "extended", "account": "cb1818000001", "password": DEMO_PASSWORD,
            "phone": "+55 11 98765-4321", "destination": "18185550123"}


@pytest.fixture
def world(tmp_path, pg_dsn):
    w = World(tmp_path, pg_dsn, hold_ms=3000, digits="18185550123")
    pytest_twisted.blockon(ensure(w.start()))
    w.base = w.base_url
    w.callback_web = w.server.callback_web
    yield w
    pytest_twisted.blockon(ensure(w.stop()))


@pytest_twisted.ensureDeferred
async def test_api_callback_goes_through_every_status_and_reports_charges(world):
    code, body, resp = await post_callback(world, EXTENDED)
    assert code == 202 and body["status"] in ("calling_you", "answered")
    cb_id = body["id"]
    assert resp.headers.getRawHeaders("location") == [f"/api/v1/callbacks/{cb_id}"]
    final, seen = await poll_status(world, cb_id, "ended")
    assert "connected" in seen
    assert seen.index("calling_you") < seen.index("connected") < seen.index("ended")
    assert final["charges"]["currency"] == "USD" and final["cause"]["code"]
    assert final["legs"]["A"]["sip_status"] == 200 and final["legs"]["B"]["sip_status"] == 200
    x = world.xdrs(cb_id)
    assert set(x) == {"A", "B"}
    # The no-script status page shows the same end.
    page = await (await treq.get(f"{world.base}/web-callback/status/{cb_id}")).text()
    assert 'data-status="ended"' in page and "http-equiv" not in page
    # ...with the amount in the currency's usual precision (the API keeps 5 places).
    shown = format_amount(final["charges"]["total"], final["charges"]["currency"])
    assert f"{shown} USD" in page and final["charges"]["total"] not in page


@pytest_twisted.ensureDeferred
async def test_refusals_of_the_real_service_keep_their_codes(world):
    code, body, _ = await post_callback(world, {**EXTENDED, "password": "wrong"})
    assert (code, body["error"]["code"]) == (401, "bad_credentials")
    code, body, _ = await post_callback(world, {**EXTENDED, "account": "cb0000000000"})
    assert (code, body["error"]["code"]) == (401, "bad_credentials")
    code, body, _ = await post_callback(world, {**EXTENDED, "destination": "999123"})
    assert code == 403 and body["error"]["code"] == "forbidden"
    code, body, _ = await post_callback(world, {**EXTENDED, "destination": "12ab"})
    assert code == 400 and body["error"]["field"] == "destination"
    code, body = await get_json(world, "/api/v1/callbacks/0123456789abcdef")
    assert (code, body["error"]["code"]) == (404, "not_found")


@pytest_twisted.ensureDeferred
async def test_health_and_metrics_are_served_beside_the_page(world):
    code, body = await get_json(world, "/healthz")
    assert code == 200 and body["status"] == "ok"
    text = await (await treq.get(world.base + "/metrics")).text()
    assert "cbserver_xdr_spool_depth" in text and "cbserver_active_callbacks" in text
    page = await (await treq.get(world.base + "/web-callback")).text()
    assert re.search(r"<title>[^<]*Web callback</title>", page)
    with psycopg2.connect(world.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT secret FROM web_secrets WHERE name = 'csrf'")
        assert bytes(cur.fetchone()[0]) == world.callback_web.csrf.secret
