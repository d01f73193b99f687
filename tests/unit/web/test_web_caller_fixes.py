"""Issue 15's caller-facing fixes: the page at ``/``, the failed step, money as people read it."""

from __future__ import annotations

import re

import pytest

from cbserver.billing.currencies import format_amount
from cbserver.web import pages
from tests.unit.web.harness import Harness, app_config, visible_text

BUSY = {"id": "cb-1", "application": "Web callback", "mode": "extended", "status": "ended",
        "legs": {"A": {"state": "ended", "sip_status": 200, "reason": "BYE"},
                 "B": {"state": "failed", "sip_status": 486, "reason": "Busy Here"}},
        "cause": {"code": "destination_busy", "sip_status": 486, "reason": "busy",
                  "description": "the destination was busy"},
        "charges": {"A": "0.01234", "B": "0", "total": "0.01234", "currency": "USD"}}


def states(page: bytes) -> dict[str, str]:
    """data-step -> class of the status list of a rendered page."""
    return dict(re.findall(r'<li data-step="(\w+)" class="(\w+)"', page.decode()))


def test_the_root_serves_the_default_instance_page_without_hosts():
    h = Harness(apps=[app_config("Alpha callback", path="/a"), app_config("Beta", path="/b")])
    page = h.get("/")
    assert page.code == 200 and "<title>Extended callback · Alpha callback</title>" in page.text
    assert 'action="/"' in page.text  # its links lead back to the root routes
    r = h.post_form("/", {"csrf": page.csrf(), "mode": "simple", "account": "cb1001",
                          "phone": "15550100"})
    assert r.code == 303 and r.header("location") == "/status/cb-0001"
    assert h.service.requests[0].application == "Alpha callback"
    assert h.get("/status/cb-0001").code == 200
    assert h.get("/nothing-here").code == 404  # the rest of the root is unchanged
    h.finish()


def test_a_busy_destination_shows_the_failed_step_and_why():
    page = pages.status_page(app_config(), "/web-callback", BUSY, "/api/x")
    assert states(page) == {"calling_you": "done", "answered": "done",
                            "calling_destination": "failed", "connected": "todo",
                            "ended": "done"}
    text = visible_text(page.decode())
    assert "Calling the destination : Busy Here (SIP 486)" in text  # a span after the label
    assert "could not be completed" in text and "the destination was busy" in text


def test_an_unanswered_caller_fails_at_the_first_step():
    st = dict(BUSY, legs={"A": {"state": "failed", "sip_status": 480, "reason": "No answer"},
                          "B": {"state": "idle", "sip_status": None, "reason": ""}})
    got = states(pages.status_page(app_config(), "/", st, "/api/x"))
    assert got["calling_you"] == "failed" and got["answered"] == "todo"
    assert got["connected"] == "todo"


def test_a_normal_end_ticks_every_step():
    st = dict(BUSY, legs={"A": {"state": "ended"}, "B": {"state": "ended"}},
              cause={"code": "normal", "description": "the call ended normally"})
    assert set(states(pages.status_page(app_config(), "/", st, "/x")).values()) == {"done"}


def test_amounts_shown_to_callers_use_the_currency_precision():
    page = visible_text(pages.status_page(app_config(), "/", BUSY, "/x").decode())
    assert "0.01 USD (call to you: 0.01, call out: 0.00)" in page
    assert "0.01234" not in page


@pytest.mark.parametrize("value,code,shown", [
    ("0.12000", "USD", "0.12"), ("0.125", "USD", "0.13"), ("12.5", "JPY", "13"),
    ("1.23456", "KWD", "1.235"), ("-0.005", "EUR", "-0.01"), ("7", "USD", "7.00"),
    ("abc", "USD", "abc"), ("1.5", "XXX", "1.5"), (None, "USD", ""), ("1.5", None, "1.5"),
])
def test_format_amount(value, code, shown):
    assert format_amount(value, code) == shown


def test_a_name_with_markup_is_escaped_on_the_page():
    h = Harness(apps=[app_config('<script>alert(1)</script>', path="/x")])
    page = h.get("/x")
    assert "<script>alert(1)" not in page.text and "&lt;script&gt;alert(1)" in page.text
    h.finish()
