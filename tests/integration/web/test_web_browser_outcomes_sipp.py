"""Failed callbacks in a real browser, one per mode, with sipp as the trunk.

The page (headless Chromium, driven from a thread so the reactor keeps running) fills each
mode's form with numbers the carrier refuses, and follows the live status without a reload
until it reads "ended"; the step that failed is marked (not every step ticked), the reason
and the cost it shows must be those of the JSON API's status (the cost in the currency's
usual precision), and the cost that of both legs' xDRs and of the balance change. The outcomes:
extended legB busy (legA charged by the CALLBACK_FAIL tariff), simple legA busy (nothing
placed after legA, nothing charged), hosted legB busy (the caller identified by ANI keys a
busy destination as RFC 4733 DTMF).
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from cbserver.billing.currencies import format_amount
from cbserver.callback.causes import describe
from tests.integration.web.test_web_browser_sipp import submit
from tests.integration.web.test_web_outcomes_sipp import (
    HOLD_MS,
    HOSTED_HOLD_MS,
    start_bounded,
    stop_bounded,
)
from tests.support import browser as browser_mod
from tests.support.api import get_json
from tests.support.browser import Browser
from tests.support.world import DEMO_PASSWORD, World

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not browser_mod.available(), reason="chromium not installed")]

# Chromium's start, the form and the wait for "ended" (60 s at most), all together.
BROWSER_TIMEOUT = 150.0

# mode -> (form fields, carrier keypad digits, hold ms, account charged, cause, SIP status,
# legB number). The tab and button come from the answered-case test's MODES.
FAILURES = {
    "extended": ({"account": "cb1818000001", "password": DEMO_PASSWORD,
                  "phone": "+55 11 98765-4321", "destination": "486 555 0123"},
                 "18185550123", HOLD_MS, "cb1818000001", "legb_busy", 486, "4865550123"),
    "simple": ({"account": "cb1818000001", "phone": "486 555 1234"},
               "18185550123", HOLD_MS, "cb1818000001", "lega_busy", 486, "18005550100"),
    # The hosted caller is identified by ANI (s/^/cb/) and keys a busy number; the IVR takes
    # about 11 s after the answer, so the carrier holds legA past it.
    "hosted": ({"phone": "+55 99 1234 5678"}, "4865550123", HOSTED_HOLD_MS, "cb559912345678",
               "legb_busy", 486, "4865550123"),
}


@pytest.fixture
def failure_world(request, tmp_path, pg_dsn):
    """The world one mode's failure needs (its keypad digits and hold time)."""
    mode = request.param
    _fields, digits, hold_ms, *_ = FAILURES[mode]
    w = World(tmp_path, pg_dsn, hold_ms=hold_ms, digits=digits)
    start_bounded(w)
    yield mode, w
    stop_bounded(w)


def drive_to_end(url: str, mode: str) -> dict:
    """In a thread: fill the form, submit, wait (bounded) for "ended"; return what the page shows."""
    with Browser() as b:
        submit(b, url, mode, FAILURES[mode][0])
        b.wait_for(lambda: b.find("#status").get_attribute("data-status") == "ended",
                   timeout=60, what="ended")
        steps = b.js("return Array.from(document.querySelectorAll('.steps li'))"
                     ".map(function (li) { return li.dataset.step + '=' + li.className; });")
        return {"text": b.text("#status-text"), "reason": b.text("#o-reason"), "steps": steps,
                "cost": b.text("#o-cost"), "no_reload": b.js("return window.__noReload;"),
                "url": b.url}


@pytest.mark.parametrize("failure_world", list(FAILURES), indirect=True)
@pytest_twisted.ensureDeferred
async def test_browser_shows_the_failure_reason_and_its_cost(failure_world):
    mode, world = failure_world
    _fields, _digits, _hold, account, cause, sip, legb = FAILURES[mode]
    before = world.balance(account)
    # The browser's own waits are bounded; this bounds Chromium's start and page loads too.
    seen = await threads.deferToThread(drive_to_end, f"{world.base_url}/web-callback",
                                       mode).addTimeout(BROWSER_TIMEOUT, reactor)
    assert seen["no_reload"] == "yes" and seen["text"] == "The callback could not be completed."
    failed_at = "calling_destination" if cause == "legb_busy" else "calling_you"
    assert f"{failed_at}=failed" in seen["steps"] and "connected=done" not in seen["steps"]
    cb_id = seen["url"].rsplit("/status/", 1)[1]

    # The page shows what the API says.
    code, status = await get_json(world, f"/api/v1/callbacks/{cb_id}")
    assert code == 200 and status["status"] == "ended" and status["mode"] == mode
    assert status["cause"]["code"] == cause and status["cause"]["sip_status"] == sip
    assert seen["reason"] == f"{describe(cause)} (SIP {sip})"
    ch = status["charges"]
    cur = ch["currency"]
    assert seen["cost"] == (f"{format_amount(ch['total'], cur)} {cur} (call to you: "
                            f"{format_amount(ch['A'], cur)}, call out: {format_amount(ch['B'], cur)})")

    # ...which is what the xDRs say and what the account paid.
    x = world.xdrs(cb_id)
    assert (ch["A"], ch["B"]) == (format(x["A"]["amount"], "f"), format(x["B"]["amount"], "f"))
    assert x["A"]["account_id"] == x["B"]["account_id"] == account
    assert x["B"]["cld"] == legb
    if cause == "legb_busy":
        # legA connected, legB never did: legA by the CALLBACK_FAIL tariff, legB free.
        assert x["B"]["sip_code"] == 486 and x["B"]["amount"] == 0
        assert x["A"]["access_code"] == "CALLBACK_FAIL" and x["A"]["amount"] > 0
    else:
        assert x["A"]["sip_code"] == 486 and x["A"]["amount"] == x["B"]["amount"] == 0
    assert before - world.balance(account) == x["A"]["amount"] + x["B"]["amount"]
