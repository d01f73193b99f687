"""Screenshots of the console's screens for docs/admin-ui.md (run on demand).

``CBS_SCREENSHOTS=docs/img .venv/bin/pytest tests/integration/web/test_console_screenshots.py``
fills a fresh database through the console's own forms (as an operator would), then saves
one PNG per screen with headless Chromium at a desktop size. Without ``CBS_SCREENSHOTS`` the
module is skipped: the pictures change only when the pages do.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import pytest

from tests.conftest import _scratch_database
from tests.integration.web.test_console_browser import fill, login, submit
from tests.support import browser as browser_mod
from tests.support.browser import Browser
from tests.support.console import ADMIN_PASSWORD, Client, ConsoleServer, stop

OUT = os.environ.get("CBS_SCREENSHOTS", "")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not OUT, reason="set CBS_SCREENSHOTS=DIR to take them"),
              pytest.mark.skipif(not browser_mod.available(), reason="chromium not installed")]


def post(c: Client, path: str, fields: dict) -> None:
    """Submit a console form the way the browser does (its page's CSRF token first)."""
    form = c.get(path if not path.endswith(("/rates", "/payments")) else path.rsplit("/", 1)[0])
    r = c.post(path, {"csrf": form.csrf(), **fields})
    assert r.status == 303, (path, r.status, re.findall(r"<li><a href=\"#f-.*?</li>", r.text))


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file (from its IHDR chunk)."""
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_screenshots_of_each_screen(pg_cluster, pg_template, tmp_path):
    out = Path(OUT)
    out.mkdir(parents=True, exist_ok=True)
    dbs = _scratch_database(pg_cluster, "cbs_t_", pg_template)
    srv = None
    try:
        srv = ConsoleServer(tmp_path, next(dbs), tls=False)
        c = Client(srv.base)
        assert c.login("alice", ADMIN_PASSWORD).status == 303
        post(c, "/ui/applications/new", {
            "name": "Web callback BR", "callback_page_address": "https://cb.example.net:8901/br",
            "path": "/br",
            "second_number": "+1 800 555-0100", "access_code": "WEBCALLBACK",
            "internal_account": "cb-internal", "special_charge_if_legb_fails": "true",
            "account_id_translation_rule": "s/^/cb/", "language": "en",
            "hosted_allowed_clients": "127.0.0.0/8", "denied_destinations": "1900\n1976"})
        # (Application 1 is the example config's, added to the catalog at start-up.)
        post(c, "/ui/applications/2", {
            "callback_page_address": "https://cb.example.net:8901/br", "path": "/br",
            "second_number": "18005550199",
            "access_code": "WEBCALLBACK", "internal_account": "cb-internal",
            "special_charge_if_legb_fails": "true", "account_id_translation_rule": "s/^/cb/",
            "language": "en", "hosted_allowed_clients": "127.0.0.0/8",
            "denied_destinations": "1900\n1976\n870"})
        for prefix, country in (("1818", "USA"), ("5511", "Brazil"), ("44", "United Kingdom")):
            post(c, "/ui/destinations/new", {"prefix": prefix, "country": country})
        post(c, "/ui/tariffs/new", {"name": "Tariff A", "currency": "USD",
                                    "applied_to": "customer"})
        for prefix, price in (("1818", "0.10"), ("5511", "0.06")):
            post(c, "/ui/tariffs/1/rates", {"prefix": prefix, "rating_mode": "flat",
                                            "first_interval": "60", "next_interval": "60",
                                            "first_price": price, "next_price": price})
        post(c, "/ui/tariffs/new", {"name": "CALLBACK_FAIL", "currency": "USD",
                                    "applied_to": "customer"})
        post(c, "/ui/products/new", {"name": "Callback Services", "currency": "USD",
                                     "rl-0-node": "node1", "rl-0-tariff": "1",
                                     "rl-0-access_code": "WEBCALLBACK",
                                     "rl-1-node": "node1", "rl-1-tariff": "2",
                                     "rl-1-access_code": "CALLBACK_FAIL"})
        post(c, "/ui/customers/new", {"name": "Retail", "currency": "USD",
                                      "balance_control": "prepaid"})
        post(c, "/ui/accounts/new", {"id": "cb-internal", "customer": "Retail",
                                     "product": "Callback Services", "opening_balance": "0",
                                     "internal": "true", "account_type": "debit",
                                     "password": "Int3rnal-acc0unt!", "status": "active"})
        shots = {}
        with Browser() as b:
            b.driver.set_window_size(1280, 900)
            login(b, srv.base, "alice", ADMIN_PASSWORD)
            b.open(srv.base + "/ui/generator")
            fill(b, {"customer": "Retail", "product": "Callback Services", "quantity": "50",
                     "length": "10", "prefix": "cb", "batch": "Cards 1"}, "#generator-form")
            submit(b, "#generator-form")
            b.wait_for(lambda: b.find_all("#job-csv"), timeout=120, what="the batch")
            shots["generator-done"] = None
            for name, path in (("applications", "/ui/applications"),
                               ("application", "/ui/applications/2"),
                               ("audit", "/ui/audit?kind=application"),
                               ("destinations", "/ui/destinations"), ("tariff", "/ui/tariffs/1"),
                               ("product", "/ui/products/1"), ("customers", "/ui/customers"),
                               ("accounts", "/ui/accounts"), ("account", "/ui/accounts/cb-internal"),
                               ("generator", "/ui/generator"), ("batch", "/ui/batches/1")):
                shots[name] = path
            b.driver.save_screenshot(str(out / "console-generator-done.png"))
            for name, path in shots.items():
                if path:
                    b.open(srv.base + path)
                    assert b.text("h1") not in ("Something went wrong", "Not found"), path
                    b.driver.save_screenshot(str(out / f"console-{name}.png"))
        with Browser() as b:
            b.driver.set_window_size(1280, 900)
            b.open(srv.base + "/ui/")
            b.wait_for(lambda: "/ui/login" in b.url, what="the login form")
            b.driver.save_screenshot(str(out / "console-login.png"))
        for name in [*shots, "login"]:
            w, h = png_size(out / f"console-{name}.png")
            assert w >= 1000 and h >= 600, name
    finally:
        stop(srv)
        next(dbs, None)
