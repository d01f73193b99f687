"""The callback page without JavaScript: modes, CSRF, per-field errors, refusals, status page."""

from __future__ import annotations

import re

import pytest
from twisted.logger import globalLogPublisher

from cbserver.config import LimitsConfig
from tests.support.metrics import sample
from tests.unit.web.harness import TOKEN, Harness, app_config, visible_text

EXTENDED = {"account": "cb1001", "password": "right-pw", "phone": "+55 (11) 5555-0100",
            "destination": "1-212-555-0123"}


@pytest.fixture
def h():
    harness = Harness()
    yield harness
    harness.finish()


def test_page_shows_the_instance_name_three_tabs_and_the_extended_form(h):
    r = h.get("/web-callback")
    assert r.code == 200
    assert r.header("content-type") == "text/html; charset=utf-8"
    text = visible_text(r.text)
    assert "Web callback" in text and "Extended WEB callback" in text
    assert re.findall(r'href="/web-callback\?mode=(\w+)"', r.text) == ["extended", "simple", "hosted"]
    assert 'aria-current="page">Extended<' in r.text
    for name in ("account", "password", "phone", "destination"):
        assert f'<label for="f-{name}">' in r.text and f'id="f-{name}" name="{name}"' in r.text
    assert "<fieldset><legend>Extended WEB callback</legend>" in r.text
    assert ">Connect Us Now!</button>" in r.text
    assert 'method="post" action="/web-callback"' in r.text
    assert 'aria-live="polite"' in r.text


def test_page_sets_a_strict_secure_httponly_csrf_cookie_and_security_headers(h):
    r = h.get("/web-callback")
    cookie = r.header("set-cookie")
    assert cookie.startswith("cb_csrf=")
    for attr in ("Secure", "HttpOnly", "SameSite=strict", "Path=/"):
        assert attr in cookie
    csp = r.header("content-security-policy")
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.header("cache-control") == "no-store"
    assert r.header("referrer-policy") == "no-referrer"


def test_simple_tab_asks_only_account_and_number(h):
    r = h.get("/web-callback?mode=simple")
    assert 'name="account"' in r.text and 'name="phone"' in r.text
    assert 'name="password"' not in r.text and 'name="destination"' not in r.text
    assert ">Call Me Now!</button>" in r.text
    assert "18005550100" in visible_text(r.text)


def test_hosted_tab_asks_only_the_number(h):
    r = h.get("/web-callback?mode=hosted")
    assert re.findall(r'<input id="f-(\w+)"', r.text) == ["phone"]
    assert ">Call Me Now!</button>" in r.text


def test_unknown_mode_in_the_link_falls_back_to_extended(h):
    r = h.get("/web-callback?mode=bogus")
    assert '<input type="hidden" name="mode" value="extended">' in r.text


@pytest.mark.parametrize("mode,fields,expect", [
    ("extended", EXTENDED, {"account": "cb1001", "password": "right-pw", "phone": "551155550100",
                            "destination": "12125550123"}),
    ("simple", {"account": "cb1001", "phone": "555 0100 99"},
     {"account": "cb1001", "password": None, "phone": "555010099", "destination": None}),
    ("hosted", {"phone": "+44 20 7946 0000"},
     {"account": None, "password": None, "phone": "442079460000", "destination": None}),
])
def test_each_mode_posts_then_redirects_303_to_its_status_page(h, mode, fields, expect):
    r = h.submit(mode, **fields)
    assert r.code == 303
    assert r.header("location") == "/web-callback/status/cb-0001"
    (req,) = h.service.requests
    assert req.mode == mode and req.application == "Web callback"
    assert {k: getattr(req, k) for k in expect} == expect
    assert req.client_address == "127.0.0.1"
    status = h.get(r.header("location"))
    assert status.code == 200
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in status.text
    assert 'data-status="calling_you"' in status.text
    assert "Calling you now" in visible_text(status.text)


def test_status_page_follows_the_callback_and_stops_refreshing_when_it_ends(h):
    loc = h.submit("extended", **EXTENDED).header("location")
    h.clock.pump([1, 1, 1])  # answered, calling the destination, connected
    page = h.get(loc)
    assert 'data-status="connected"' in page.text
    assert 'class="now" aria-current="step">Connected' in page.text
    assert page.text.count('class="done"') == 3
    h.clock.pump([1, 1, 1])
    page = h.get(loc)
    assert 'data-status="ended"' in page.text and 'data-final="1"' in page.text
    assert "http-equiv" not in page.text
    text = visible_text(page.text)
    assert "the call ended normally" in text
    assert "0.12 USD (call to you: 0.02, call out: 0.10)" in text


def test_unknown_callback_status_page_is_404(h):
    r = h.get("/web-callback/status/nope")
    assert r.code == 404 and "Callback not found" in r.text
    assert h.get("/web-callback/status/bad%20id!").code == 404


def test_post_without_csrf_token_is_refused_403_and_starts_nothing(h):
    h.get("/web-callback")
    r = h.post_form("/web-callback", {"mode": "extended", **EXTENDED})
    assert r.code == 403
    assert "did not come from this page" in visible_text(r.text)
    assert h.service.requests == []
    assert sample(h.metrics, "cbserver_callback_refusals_total", mode="extended", code="forbidden") == 1


def test_csrf_token_of_another_browser_is_refused(h):
    token = h.page_and_token()[1]
    h.new_browser()
    h.get("/web-callback")  # a new browser: new cookie
    r = h.post_form("/web-callback", {"csrf": token, "mode": "extended", **EXTENDED})
    assert r.code == 403 and h.service.requests == []


def test_csrf_token_without_its_cookie_is_refused(h):
    token = h.page_and_token()[1]
    h.new_browser()
    r = h.post_form("/web-callback", {"csrf": token, "mode": "extended", **EXTENDED})
    assert r.code == 403 and h.service.requests == []


def test_garbage_form_shows_the_page_again_with_per_field_errors_400(h):
    r = h.submit("extended", account="bad account!", password="", phone="12ab", destination="")
    assert r.code == 400
    assert h.service.requests == []
    text = visible_text(r.text)
    assert "There is a problem" in text
    assert "An account ID is 1 to 64 letters" in text
    assert "Password is required." in text and "Number to dial is required." in text
    assert "Enter a phone number of 3 to 20 digits" in text
    for name in ("account", "password", "phone", "destination"):
        assert f'aria-invalid="true" aria-describedby="f-{name}-err"' in r.text
        assert f'href="#f-{name}"' in r.text
    assert 'value="bad account!"' in r.text  # typed values kept...
    assert 'name="csrf" value="' in r.text  # ...with a fresh token to try again


def test_password_is_never_echoed_back(h):
    r = h.submit("extended", account="cb1001", password="hunter2-secret", phone="1", destination="")
    assert r.code == 400 and "hunter2-secret" not in r.text


def test_credentials_in_the_query_string_are_ignored(h):
    token = h.page_and_token()[1]
    r = h.post_form("/web-callback?password=right-pw&account=cb1001",
                    {"csrf": token, "mode": "extended", "phone": "15550100", "destination": "15550101"})
    assert r.code == 400 and h.service.requests == []


@pytest.mark.parametrize("fields,code,words", [
    ({**EXTENDED, "password": "wrong"}, 401, "unknown account or wrong password"),
    ({**EXTENDED, "account": "cb1002", "password": "pw2"}, 402, "not enough balance"),
    ({**EXTENDED, "account": "cb1003", "password": "pw3"}, 403, "not active"),
])
def test_service_refusals_show_the_reason_on_the_page(h, fields, code, words):
    r = h.submit("extended", **fields)
    assert r.code == code
    assert words in visible_text(r.text)
    assert 'value="cb10' in r.text  # the account stays filled in


def test_database_down_answers_503_and_starts_nothing(h):
    h.ready = False
    r = h.submit("simple", account="cb1001", phone="15550100")
    assert r.code == 503 and h.service.requests == []
    assert "not ready" in visible_text(r.text)


def test_rate_limited_page_is_429_with_retry_after():
    h = Harness(limits=LimitsConfig(per_phone=1, window=60))
    assert h.submit("simple", account="cb1001", phone="15550100").code == 303
    h.clock.advance(20)
    r = h.submit("simple", account="cb1001", phone="15550100")
    assert r.code == 429
    assert r.header("retry-after") == "100"  # until both hits have slid out of the window
    assert "Too many callbacks to this number" in visible_text(r.text)
    h.finish()


def test_script_submission_gets_202_json_with_the_status_urls(h):
    token = h.page_and_token()[1]
    r = h.post_form("/web-callback", {"csrf": token, "mode": "simple", "account": "cb1001",
                                      "phone": "15550100"}, headers={"Accept": ["application/json"]})
    assert r.code == 202
    assert r.json() == {"id": "cb-0001", "status": "calling_you",
                        "status_url": "/web-callback/status/cb-0001",
                        "api_url": "/api/v1/callbacks/cb-0001"}


def test_script_submission_errors_are_json_with_every_field(h):
    token = h.page_and_token()[1]
    r = h.post_form("/web-callback", {"csrf": token, "mode": "extended", "phone": "x"},
                    headers={"Accept": ["application/json"]})
    assert r.code == 400
    err = r.json()["error"]
    assert err["code"] == "invalid_input"
    assert set(err["fields"]) == {"account", "password", "phone", "destination"}


def test_static_assets_are_served_from_the_package_and_nothing_else(h):
    css = h.get("/static/page.css")
    assert css.code == 200 and css.header("content-type").startswith("text/css")
    js = h.get("/static/page.js")
    assert js.code == 200 and b"aria" not in js.body[:0] and b"fetch(" in js.body
    assert h.get("/static/../callback_pages.py").code == 404
    assert h.get("/static/layout.html").code == 404


def test_no_third_party_assets_on_the_page(h):
    page = h.get("/web-callback").text
    urls = re.findall(r'(?:src|href)="([^"#?]*)', page)
    urls = [u for u in urls if u]
    assert urls and all(u.startswith("/") and not u.startswith("//") for u in urls)


def test_credentials_never_reach_the_log(h):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        h.submit("extended", **{**EXTENDED, "password": "pw-in-log-check"})
        h.submit("extended", **{**EXTENDED, "password": "right-pw"})
        token = h.page_and_token()[1]
        h.post_form("/web-callback/hosted-access", {"csrf": token, "token": TOKEN + "x"})
    finally:
        globalLogPublisher.removeObserver(events.append)
    dump = repr(events)
    assert "callback refused" in dump and "callback requested" in dump
    assert "pw-in-log-check" not in dump and "right-pw" not in dump and TOKEN not in dump


def test_two_instances_have_their_own_pages_and_tokens():
    a = app_config("Brazil helpdesk", path="/br")
    b = app_config("Office", path="/office", second_number="")
    h = Harness(apps=[a, b])
    assert "Brazil helpdesk" in h.get("/br").text
    office = h.get("/office")
    assert "Office" in office.text and "?mode=simple" not in office.text
    token_a = h.page_and_token("/br")[1]
    r = h.post_form("/office", {"csrf": token_a, "mode": "extended", **EXTENDED})
    assert r.code == 403  # a token is bound to its page
    loc = h.submit("extended", path="/br", **EXTENDED).header("location")
    assert loc == "/br/status/cb-0001"
    assert h.get("/office/status/cb-0001").code == 404
    assert h.get("/br/status/cb-0001").code == 200
    r = h.submit("simple", path="/office", account="cb1001", phone="15550100")
    assert r.code == 400 and "Simple callback is not offered here" in visible_text(r.text)
    h.finish()


def test_plain_http_endpoint_gets_cookies_without_the_secure_flag():
    h = Harness(secure_cookies=False)
    cookie = h.get("/web-callback").header("set-cookie")
    assert "Secure" not in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    h.finish()


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_colour_pairs_of_the_stylesheet_meet_wcag_aa(h):
    css = h.get("/static/page.css").text
    var = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6})", css))
    pairs = [("ink", "bg"), ("muted", "bg"), ("brand", "bg"), ("brand-ink", "brand"), ("err", "bg"),
             ("ok", "bg"), ("brand", "panel"), ("muted", "panel"), ("ink", "panel"), ("ok", "panel")]
    for fg, bg in pairs:
        assert contrast(var[fg], var[bg]) >= 4.5, (fg, bg, contrast(var[fg], var[bg]))


def test_nodes_sharing_the_secret_accept_each_others_forms():
    from cbserver.web.csrf import SharedSecretService
    from tests.unit.web.fakes import MemoryLimitStore

    shared = MemoryLimitStore()
    a, b, lone = Harness(), Harness(), Harness()
    for node in (a, b):
        SharedSecretService(node.web.csrf, shared).startService()
    assert a.web.csrf.secret == b.web.csrf.secret != lone.web.csrf.secret
    page = a.get("/web-callback")  # served by node a...
    form = {"csrf": page.csrf(), "mode": "simple", "account": "cb1001", "phone": "15550100"}
    cookies = {"cb_csrf": page.cookies["cb_csrf"]}
    assert b.post_form("/web-callback", form, cookies=cookies).code == 303  # ...posted to b
    assert lone.post_form("/web-callback", form, cookies=cookies).code == 403
    for node in (a, b, lone):
        node.finish()
