"""The operator's console in headless Chromium, following the setup guide's order.

The real ``twistd cbserver`` (operators made by the CLI) and a browser that logs in, creates a
destination, tariff A with a rate (and imports a rates CSV with a bad line, exports the
rates as CSV), the product with a WEBCALLBACK rating entry, the customer, an account
(recharged), generates a batch (the progress bar polled in place by htmx, the CSV
downloaded and read), activates the batch; then a read-only operator sees the same pages
without buttons and is refused a change.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import psycopg2
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from tests.conftest import _scratch_database
from tests.support import browser as browser_mod
from tests.support.browser import Browser
from tests.support.console import ADMIN_PASSWORD, READER_PASSWORD, ConsoleServer, stop

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not browser_mod.available(), reason="chromium not installed")]

QUANTITY = 300


@pytest.fixture
def server(pg_cluster, pg_template, tmp_path):
    """The server over a database of its own."""
    dbs = _scratch_database(pg_cluster, "cbs_t_", pg_template)
    srv = None
    try:
        # Over HTTPS with the self-signed certificate, as an operator opens it (the __Host-
        # cookie needs it); see test_web_alpn_twistd.py for the handshake browsers need.
        srv = ConsoleServer(tmp_path, next(dbs))
        yield srv
    finally:
        stop(srv)
        next(dbs, None)


def fill(b: Browser, fields: dict[str, str], form: str = "form.form") -> None:
    """Type into (or choose in) the named fields of ``form``."""
    for name, value in fields.items():
        el = b.find(f"{form} [name='{name}']")
        if el.tag_name == "select":
            Select(el).select_by_visible_text(value)
        elif el.get_attribute("type") == "checkbox":
            if el.is_selected() != bool(value):
                el.click()
        else:
            el.clear()
            el.send_keys(value)


def submit(b: Browser, form: str = "form.form") -> None:
    """Submit ``form`` with its button and wait for the next page."""
    old = b.find("body")
    b.find(f"{form} button[type='submit']").click()
    b.wait_for(lambda: _stale(old), what="the next page")


def _stale(el) -> bool:
    """Whether ``el`` belongs to a page that has gone."""
    try:
        el.tag_name  # noqa: B018 - touching it raises once the page changed
        return False
    except Exception:  # noqa: BLE001 - selenium's StaleElementReferenceException
        return True


def fetch(b: Browser, path: str, method: str = "GET", body: str | None = None) -> list:
    """``[status, content-type, text]`` of a same-origin request made by the page."""
    return b.driver.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "var opts = {method: arguments[1], credentials: 'same-origin'};"
        "if (arguments[2] !== null) { opts.body = arguments[2];"
        "  opts.headers = {'Content-Type': 'application/x-www-form-urlencoded'}; }"
        "fetch(arguments[0], opts).then(function (r) { return r.text().then(function (t) {"
        "  done([r.status, r.headers.get('content-type'), t]); }); })"
        ".catch(function (e) { done(['error', '', String(e)]); });", path, method, body)


def login(b: Browser, base: str, name: str, password: str) -> None:
    """Open the console (sent to the login form) and log in."""
    b.open(base + "/ui/")
    b.wait_for(lambda: "/ui/login" in b.url, what="the login form")
    fill(b, {"name": name, "password": password})
    submit(b)
    b.wait_for(lambda: b.find("h1").text == "The operator's console", what="the home page")


def menu(b: Browser, label: str) -> None:
    """Follow a menu entry."""
    old = b.find("body")
    b.find("nav.menu").find_element(
        By.LINK_TEXT, label).click()
    b.wait_for(lambda: _stale(old), what=label)


def test_the_setup_guide_in_the_console(server, tmp_path):
    base = server.base
    with Browser() as b:
        b.driver.set_script_timeout(30)
        login(b, base, "alice", ADMIN_PASSWORD)
        entries = [e.text for e in b.find_all("nav.menu li")]
        assert entries.index("Destinations") < entries.index("Tariffs") < entries.index(
            "Products") < entries.index("Customers") < entries.index("Accounts") < entries.index(
            "Account generator") < entries.index("Batches")
        assert entries[0] == "Voice applications" and "Audit log" in entries

        # Destinations.
        menu(b, "Destinations")
        b.click_text("New destination")
        fill(b, {"prefix": "1818", "country": "USA", "description": "USA <mobile>"})
        submit(b)
        assert "Destination 1818" in b.text("h1")
        b.open(base + "/ui/destinations/new")  # a bad prefix: the error beside the field
        fill(b, {"prefix": "18x"})
        submit(b)
        assert b.find("#f-prefix").get_attribute("aria-invalid") == "true"
        assert b.find("#f-prefix-err").text

        # Tariff A and its rate.
        menu(b, "Tariffs")
        b.click_text("New tariff")
        fill(b, {"name": "Tariff A", "currency": "USD"})
        submit(b)
        assert b.text("h1").startswith("Tariff ")
        tariff_url = b.url
        fill(b, {"prefix": "1818", "first_interval": "60", "next_interval": "60",
                 "first_price": "0.10", "next_price": "0.05"}, "#rate-form")
        submit(b, "#rate-form")
        assert "1818 flat 0.10/60s, 0.05/60s" in b.text("#rates table")
        # CSV import: a good row and a row for a prefix missing from the register.
        data = tmp_path / "rates.csv"
        data.write_text("prefix,first_interval,next_interval,first_price,next_price\n"
                        "1818,30,6,0.2,0.02\n7777,60,60,0.1,0.1\n")
        b.find("#import-form input[type='file']").send_keys(str(data))
        submit(b, "#import-form")
        problems = b.text("#import-problems")
        assert "Nothing was imported" in problems and "3" in problems and "7777" in problems
        status, ctype, text = fetch(b, tariff_url.replace(base, "") + "/rates.csv")
        assert status == 200 and ctype.startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [(r["prefix"], Decimal(r["first_price"])) for r in rows] == [("1818", Decimal("0.1"))]
        # The exported file, changed and imported again: a new version of the rate.
        rows[0]["first_price"], rows[0]["effective_from"] = "0.12", "2030-01-01T00:00:00+00:00"
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        data.write_text(out.getvalue())
        b.find("#import-form input[type='file']").send_keys(str(data))
        submit(b, "#import-form")
        assert "1 rate(s) read: 1 created, 0 updated, 0 unchanged" in b.text("#rates")
        assert "0.12/60s" in b.text("#rates table") and not b.find_all("#import-problems")

        # The product with its WEBCALLBACK rating entry.
        menu(b, "Products")
        b.click_text("New product")
        fill(b, {"name": "Callback Services", "currency": "USD", "rl-0-node": "node1",
                 "rl-0-tariff": "Tariff A (USD)", "rl-0-access_code": "WEBCALLBACK"})
        submit(b)
        assert b.text("h1").startswith("Product ")
        assert Select(b.find("[name='rl-0-access_code']")).first_selected_option.text == "WEBCALLBACK"

        # The customer, an account and its recharge.
        menu(b, "Customers")
        b.click_text("New customer")
        fill(b, {"name": "Retail <b>one</b>", "currency": "USD"})
        submit(b)
        assert "Customer" in b.text("h1")
        menu(b, "Accounts")
        b.click_text("New account")
        fill(b, {"id": "cb1818999999", "customer": "Retail <b>one</b>",
                 "product": "Callback Services", "opening_balance": "10",
                 "password": "s3cret-pass"})
        submit(b)
        assert Decimal(b.text("#balance")) == 10
        fill(b, {"amount": "5", "note": "first top-up"}, "#pay-form")
        submit(b, "#pay-form")
        assert Decimal(b.text("#balance")) == 15
        assert "console:alice" in b.text("#payments")
        # A call in progress holds money on the balance: the account's page shows it.
        with psycopg2.connect(server.dsn) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO balance_reservations (session_id, leg, account_id, owner_key,"
                        " amount, currency, instance_id, expires_at) VALUES ('cb-live-1', 'A',"
                        " 'cb1818999999', 'account:cb1818999999', 1.25, 'USD', gen_random_uuid(),"
                        " now() + interval '1 hour')")
        conn.close()
        b.open(b.url.split("#")[0])
        assert b.text("#held") == "Held by calls in progress: 1.25000 USD"
        assert "cb-live-1" in b.text("#holds")

        # The account generator: progress polled in place, then the CSV.
        menu(b, "Account generator")
        fill(b, {"customer": "Retail <b>one</b>", "product": "Callback Services",
                 "quantity": str(QUANTITY), "length": "10", "prefix": "cb", "batch": "B1",
                 "manual_activation": "true"}, "#generator-form")
        submit(b, "#generator-form")
        b.js("window.__samePage = 'yes';")
        states = set()

        def finished():
            states.add(b.find("#job").get_attribute("data-state"))
            return b.find_all("#job-csv")

        b.wait_for(finished, timeout=120, interval=0.05, what="the batch")
        assert "failed" not in states and "running" in states, states  # the bar was seen
        assert b.js("return window.__samePage;") == "yes"  # htmx swapped it, no reload
        assert b.find_all("#job progress")
        status, ctype, text = fetch(b, b.find("#job-csv").get_attribute("href"))
        assert status == 200 and ctype.startswith("text/csv")
        cards = list(csv.reader(io.StringIO(text)))
        ids = [r[0] for r in cards[1:]]
        assert len(ids) == QUANTITY and all(i.startswith("cb") and len(i) == 12 for i in ids)

        # Batches: activate the generated (inactive) accounts.
        b.find("#job a[href*='/ui/batches/']").click()
        b.wait_for(lambda: "Batch" in b.text("h1"), what="the batch")
        submit(b, "form[action$='/activate']")
        assert f"activated={QUANTITY}" in b.url

        # A read-only operator: the same pages, no buttons, every change refused.
        with Browser() as r:
            r.driver.set_script_timeout(30)
            login(r, base, "rita", READER_PASSWORD)
            r.open(base + "/ui/destinations/1818")
            assert r.find("#f-country").get_attribute("readonly") is not None
            assert not r.find_all("form.form button[type='submit']")
            assert not r.find_all("form.danger")
            token = r.find("input[name='csrf']").get_attribute("value")
            status, _ctype, text = fetch(r, "/ui/destinations/1818", "POST",
                                         f"csrf={token}&country=Nowhere")
            assert status == 403 and "read-only" in text
            r.open(base + "/ui/tariffs")
            assert "Tariff A" in r.text("table") and not r.find_all("a.button")
        b.open(base + "/ui/destinations/1818")
        assert b.find("#f-country").get_attribute("value") == "USA"
        # The customer's name was shown as text, never as markup.
        b.open(base + "/ui/customers")
        assert "Retail <b>one</b>" in b.text("table") and not b.find_all("table b")


def test_the_console_without_javascript(server):
    """Forms POST and the generator's page reloads itself until the batch is made."""
    base = server.base
    with Browser(javascript=False) as b:
        login(b, base, "alice", ADMIN_PASSWORD)
        b.open(base + "/ui/destinations/new")
        fill(b, {"prefix": "5511", "country": "Brazil"})
        submit(b)
        assert "Destination 5511" in b.text("h1")
        for path, fields in (("/ui/tariffs/new", {"name": "T", "currency": "USD"}),
                             ("/ui/customers/new", {"name": "C", "currency": "USD"})):
            b.open(base + path)
            fill(b, fields)
            submit(b)
        b.open(base + "/ui/products/new")
        fill(b, {"name": "P", "currency": "USD", "rl-0-node": "node1",
                 "rl-0-tariff": "T (USD)", "rl-0-access_code": "WEBCALLBACK"})
        submit(b)
        b.open(base + "/ui/generator")
        fill(b, {"customer": "C", "product": "P", "quantity": "2000", "length": "10",
                 "prefix": "cb", "batch": "NoJS"}, "#generator-form")
        submit(b, "#generator-form")
        first = b.find("#job").get_attribute("data-state")
        loads = b.js("return performance.timeOrigin;")
        b.wait_for(lambda: b.find_all("#job-csv"), timeout=180, interval=0.2, what="the batch")
        # 2000 accounts take longer than the redirect to the job's page: it was running, and
        # the page reloaded itself (a new document) until the batch was made.
        assert first == "running"
        assert b.js("return performance.timeOrigin;") != loads
        assert "2000 account(s)" in b.text("#job")
