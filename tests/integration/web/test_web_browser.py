"""A real browser fills each mode's form and watches the callback reach "connected".

The server is ``CallbackWeb`` on the real reactor over HTTPS with the real PostgreSQL limit
store and a scripted callback service (``serve_scripted``); the browser is headless Chromium.
With JavaScript the progress updates in place (no reload); without it the form posts, the
browser lands on the status page and that page refreshes itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import browser as browser_mod
from tests.support.browser import Browser

ROOT = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not browser_mod.available(), reason="chromium not installed")]


@pytest.fixture(scope="module")
def server(tmp_path_factory, pg_cluster, pg_template):
    """The scripted HTTPS server on a free port; yields its base URL."""
    import uuid

    import psycopg2

    name = f"cbs_t_{uuid.uuid4().hex[:12]}"
    conn = psycopg2.connect(pg_cluster.dsn("postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    state = tmp_path_factory.mktemp("web-state")
    proc = subprocess.Popen([sys.executable, "-m", "tests.integration.web.serve_scripted",
                             pg_cluster.dsn(name), str(state)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY "), f"server did not start: {line} {proc.stdout.read()}"
        yield f"https://127.0.0.1:{line.split()[1]}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


@pytest.fixture(scope="module")
def chrome():
    with Browser() as b:
        yield b


@pytest.fixture(scope="module")
def chrome_nojs():
    with Browser(javascript=False) as b:
        yield b


MODES = {
    "extended": ("Extended", {"account": "cb1001", "password": "right-pw", "phone": "+55 11 5555 0100",
                              "destination": "1 212 555 0123"}, "Connect Us Now!"),
    "simple": ("Simple", {"account": "cb1001", "phone": "+55 11 5555 0101"}, "Call Me Now!"),
    "hosted": ("Hosted", {"phone": "+55 11 5555 0102"}, "Call Me Now!"),
}


def status_of(b: Browser) -> str:
    return b.find("#status").get_attribute("data-status")


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_reaches_connected_live_without_reloading(server, chrome, mode):
    tab, fields, button = MODES[mode]
    chrome.open(f"{server}/cb")
    assert "Example Telecom callback" in chrome.text("header")
    chrome.click_text(tab, ".tabs a")
    chrome.wait_for(lambda: chrome.find(".tabs a[aria-current='page']").text == tab, what="tab")
    assert chrome.find("legend").text == f"{tab} WEB callback"
    chrome.fill(fields)
    chrome.js("window.__noReload = 'still here';")
    chrome.click_text(button, "button")
    chrome.wait_for(lambda: status_of(chrome) == "connected", what="connected")
    assert chrome.js("return window.__noReload;") == "still here"
    assert "/cb/status/" in chrome.url  # the address points at the status page for a reload
    assert chrome.text("#status-text") == "Connected: you are talking."
    assert chrome.find("form.callback").get_attribute("hidden") is not None
    assert chrome.find(".tabs").get_attribute("hidden") is not None
    assert chrome.text("main h1") == "Callback status"
    chrome.wait_for(lambda: status_of(chrome) == "ended", what="ended")
    assert "0.12 USD" in chrome.text("#o-cost")
    assert chrome.js("return window.__noReload;") == "still here"


def test_garbage_shows_per_field_errors_in_place(server, chrome):
    chrome.open(f"{server}/cb?mode=extended")
    chrome.fill({"account": "cb1001", "password": "right-pw", "phone": "call me", "destination": "x"})
    chrome.js("window.__noReload = 1;")
    chrome.click_text("Connect Us Now!", "button")
    chrome.wait_for(lambda: chrome.find("#summary").is_displayed(), what="error summary")
    assert "Enter a phone number" in chrome.text("#summary")
    assert chrome.find("#f-phone").get_attribute("aria-invalid") == "true"
    assert chrome.js("return document.activeElement.id;") == "summary"
    assert chrome.js("return window.__noReload;") == 1


def test_wrong_password_is_explained_on_the_page(server, chrome):
    chrome.open(f"{server}/cb?mode=extended")
    chrome.fill({"account": "cb1001", "password": "wrong", "phone": "15550100",
                 "destination": "15550101"})
    chrome.click_text("Connect Us Now!", "button")
    chrome.wait_for(lambda: chrome.find("#summary").is_displayed(), what="error summary")
    assert "unknown account or wrong password" in chrome.text("#summary")


def test_without_javascript_the_status_page_refreshes_itself_until_connected(server, chrome_nojs):
    b = chrome_nojs
    b.open(f"{server}/cb?mode=simple")
    b.fill({"account": "cb1001", "phone": "15550100"})
    b.click_text("Call Me Now!", "button")
    b.wait_for(lambda: "/cb/status/" in b.url, what="status page")
    assert 'http-equiv="refresh"' in b.driver.page_source
    b.wait_for(lambda: 'data-status="connected"' in b.driver.page_source, timeout=30,
               what="connected after refreshes")
    b.wait_for(lambda: 'data-status="ended"' in b.driver.page_source, timeout=30, what="ended")
    assert "0.12 USD" in b.text("#o-cost")
    assert 'http-equiv="refresh"' not in b.driver.page_source  # final: no more refreshing


def test_page_fits_a_phone_screen(server, chrome):
    chrome.open(f"{server}/cb")
    overflow = chrome.js("return document.documentElement.scrollWidth - window.innerWidth;")
    assert overflow <= 0
    width = chrome.js("return document.querySelector('button').getBoundingClientRect().width;")
    assert width > 300  # full-width button on a narrow screen


def test_keyboard_reaches_every_field_with_a_visible_focus(server, chrome):
    chrome.open(f"{server}/cb?mode=extended")
    from selenium.webdriver.common.keys import Keys

    seen = []
    body = chrome.find("body")
    body.send_keys(Keys.TAB)
    for _ in range(12):
        el = chrome.driver.switch_to.active_element
        seen.append(el.get_attribute("id") or el.get_attribute("name") or el.tag_name)
        if el.get_attribute("id") == "f-account":
            outline = chrome.js("return getComputedStyle(arguments[0]).outlineStyle;", el)
            assert outline != "none"
        el.send_keys(Keys.TAB)
    for fid in ("f-account", "f-password", "f-phone", "f-destination"):
        assert fid in seen


def test_every_input_has_its_label_as_accessible_name(server, chrome):
    for mode in MODES:
        chrome.open(f"{server}/cb?mode={mode}")
        for el in chrome.find_all("form.callback input:not([type=hidden])"):
            label = chrome.find(f"label[for='{el.get_attribute('id')}']").text
            assert el.accessible_name == label
        assert chrome.find("form.callback button").accessible_name == MODES[mode][2]
        assert chrome.find("#status-text").get_attribute("aria-live") == "polite"


def test_without_javascript_garbage_comes_back_with_errors_and_values(server, chrome_nojs):
    b = chrome_nojs
    b.open(f"{server}/cb?mode=extended")
    b.fill({"account": "cb1001", "password": "right-pw", "phone": "12", "destination": "abc"})
    b.click_text("Connect Us Now!", "button")
    b.wait_for(lambda: b.find_all("#summary h2"), what="error summary")
    assert "/cb/status/" not in b.url
    assert b.find("#f-account").get_attribute("value") == "cb1001"
    assert b.find("#f-password").get_attribute("value") == ""  # never sent back
    assert b.find("#f-phone").get_attribute("aria-invalid") == "true"
    assert "Enter a phone number" in b.text("#summary")
