"""The page in a real browser against the real callback service, with sipp as the trunk.

``World`` runs the whole service tree in this process (PostgreSQL, SIP over UDP to a sipp
carrier, RTP, xDR writer); the pages and API are served on the server's own web
endpoint, exactly as ``cbserver.tap`` wires them. Headless Chromium, driven from a thread so the reactor
keeps running, fills each mode's form and watches the status reach "connected" without a
reload, then the end with its cost; both legs' xDRs are in PostgreSQL.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import threads

from cbserver.billing.currencies import format_amount
from tests.support import browser as browser_mod
from tests.support.browser import Browser
from tests.support.world import DEMO_PASSWORD, World, ensure

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not browser_mod.available(), reason="chromium not installed")]

MODES = {
    "extended": ("Extended", {"account": "cb1818000001", "password": DEMO_PASSWORD,
                              "phone": "+55 11 98765-4321", "destination": "1 818 555 0123"},
                 "Connect Us Now!", "cb1818000001"),
    "simple": ("Simple", {"account": "cb1818000001", "phone": "55 11 98765 4321"}, "Call Me Now!",
               "cb1818000001"),
    # Hosted: the number is an account by ANI (s/^/cb/); sipp keys the destination as DTMF.
    "hosted": ("Hosted", {"phone": "+55 99 1234 5678"}, "Call Me Now!", "cb559912345678"),
}


@pytest.fixture
def world(tmp_path, pg_dsn):
    w = World(tmp_path, pg_dsn, hold_ms=9000, digits="18185550123")
    pytest_twisted.blockon(ensure(w.start()))
    w.page_url = f"{w.base_url}/web-callback"
    yield w
    pytest_twisted.blockon(ensure(w.stop()))


def submit(b: Browser, url: str, mode: str, fields: dict) -> None:
    """Open the page, pick the mode's tab, fill ``fields`` and press the mode's button.

    A marker is set in the page first: a full page load would drop it, so reading it back
    later proves the status was followed live.
    """
    tab, _, button, _ = MODES[mode]
    b.open(url)
    b.click_text(tab, ".tabs a")
    b.wait_for(lambda: b.find(".tabs a[aria-current='page']").text == tab, what="tab")
    b.fill(fields)
    b.js("window.__noReload = 'yes';")
    b.click_text(button, "button")


def drive(url: str, mode: str) -> dict:
    """In a thread: fill the form, submit, follow the live status; return what was seen."""
    seen = {}
    with Browser() as b:
        submit(b, url, mode, MODES[mode][1])
        b.wait_for(lambda: b.find("#status").get_attribute("data-status") == "connected",
                   timeout=40, what="connected")
        seen["connected_text"] = b.text("#status-text")
        seen["no_reload"] = b.js("return window.__noReload;")
        seen["url"] = b.url
        b.wait_for(lambda: b.find("#status").get_attribute("data-status") == "ended",
                   timeout=40, what="ended")
        seen["cost"] = b.text("#o-cost")
        seen["reason"] = b.text("#o-reason")
        seen["still_no_reload"] = b.js("return window.__noReload;")
    return seen


@pytest.mark.parametrize("mode", list(MODES))
@pytest_twisted.ensureDeferred
async def test_browser_callback_reaches_connected_over_sipp_and_bills_both_legs(world, mode):
    account = MODES[mode][3]
    before = world.balance(account)
    seen = await threads.deferToThread(drive, world.page_url, mode)
    assert seen["connected_text"] == "Connected: you are talking."
    assert seen["no_reload"] == seen["still_no_reload"] == "yes"
    cb_id = seen["url"].rsplit("/status/", 1)[1]
    status = await world.wait_end(cb_id)
    assert status["mode"] == mode
    cur = status["charges"]["currency"]  # shown in the currency's usual precision
    assert seen["cost"].startswith(f"{format_amount(status['charges']['total'], cur)} {cur}")
    assert seen["reason"] not in ("", "–")
    x = world.xdrs(cb_id)
    assert set(x) == {"A", "B"} and x["B"]["cld"] == ("18005550100" if mode == "simple" else "18185550123")
    assert x["A"]["trigger_mode"] == mode
    if mode != "hosted":
        assert before - world.balance(account) == x["A"]["amount"] + x["B"]["amount"]
    metrics = world.server.metrics.render().decode()
    assert f'cbserver_callback_requests_total{{mode="{mode}"}} 1.0' in metrics
    assert f'cbserver_callbacks_started_total{{mode="{mode}"}} 1.0' in metrics
