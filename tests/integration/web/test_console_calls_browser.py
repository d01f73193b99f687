"""The console's calls screens in headless Chromium against a real ``twistd cbserver`` node
with a SIP trunk (a Python SIP peer that answers every INVITE and never hangs up), over a
database with generated xDRs (``tests.support.xdrgen``) besides.

The operator opens Live callbacks, a real callback is started through the public API and
appears in the list by itself (htmx polling), is hung up with the row's button: BYE reaches
the trunk on both legs, the callback ends with ``operator_hangup``; Past callbacks shows the
cause and links the callback's xDRs (the trunk's Call-IDs); the xDR filter finds them, pages
through the generated ones, and its CSV link carries the filter; the account's page lists
them; Reports draws its charts (Chart.js ran under the console's CSP) beside the tables;
Nodes shows the node with its process. A read-only operator, without JavaScript, sees no
Hang up or Drain, refreshes the live list with its link, pages xDRs and reads the reports.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.callback.test_crash_recovery_twistd import ACCOUNTS, PASSWORD, catalog
from tests.support import browser as browser_mod
from tests.support import xdrgen
from tests.support.browser import Browser
from tests.support.console import ADMIN_PASSWORD, READER_PASSWORD, add_operator
from tests.support.node import Node, http, running, wait_for
from tests.support.sippeer import SipPeer

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not browser_mod.available(), reason="chromium not installed")]


def login(b: Browser, base: str, name: str, password: str) -> None:
    """Log in through the form."""
    b.open(base + "/ui/")
    b.wait_for(lambda: "/ui/login" in b.url, what="the login form")
    for field, value in (("name", name), ("password", password)):
        el = b.find(f"form.form [name='{field}']")
        el.clear()
        el.send_keys(value)
    b.find("form.form button[type='submit']").click()
    b.wait_for(lambda: b.find("h1").text == "The operator's console", what="the home page")


def go(b: Browser, label: str, heading: str) -> None:
    """Follow a menu entry and wait for its page."""
    b.find("nav.menu").find_element("link text", label).click()
    b.wait_for(lambda: b.find("h1").text == heading, what=heading)


def xdr_ids(b: Browser, table: str = "#xdrs") -> list[str]:
    """The xDR ids of a table's rows."""
    return [tr.get_attribute("data-xdr-id") for tr in b.find_all(f"{table} tr[data-xdr-id]")]


def test_a_real_callback_hung_up_from_the_console(tmp_path, pg_dsn):
    cbs = str(Path(sys.executable).parent / "cbserver")
    subprocess.run([cbs, "provision", str(catalog(tmp_path)), "--dsn", pg_dsn],
                   check=True, capture_output=True, timeout=120)
    xdrgen.generate(pg_dsn, 120)
    account = ACCOUNTS[0]
    peer = SipPeer()
    peer.start()
    node = Node(tmp_path, "node1", pg_dsn, peer.port)
    for name, role, pw in (("alice", "admin", ADMIN_PASSWORD), ("rita", "readonly", READER_PASSWORD)):
        done = add_operator(node.config, name, role, pw)
        assert done.returncode == 0, done.stderr
    port = re.search(r'admin_endpoint = "tcp:(\d+):', node.config.read_text()).group(1)
    base = f"http://127.0.0.1:{port}"
    try:
        with running(node):
            node.start()
            node.wait_ready()
            with Browser() as b:
                login(b, base, "alice", ADMIN_PASSWORD)
                go(b, "Live callbacks", "Live callbacks")
                assert "No callback in progress" in b.text("#live-callbacks")
                code, body = http("POST", node.url("/api/v1/callbacks"), {
                    "application": "Web callback", "mode": "extended", "account": account,
                    "password": PASSWORD, "phone": "5511987654300", "destination": "18185550123"})
                assert code == 202, body
                cid = body["id"]
                row = f"#live-callbacks tr[data-callback-id='{cid}']"
                # No reload: htmx's polling brings the row, then its legs answered.
                b.wait_for(lambda: "B: answered" in b.text(row), timeout=40, what="the live row")
                assert b.find("h1").text == "Live callbacks" and "node1" in b.text(row)
                invites = {r.call_id for r in peer.of("INVITE")}
                assert len(invites) == 2
                b.find(f"{row} form.hangup button").click()
                b.wait_for(lambda: "hungup=" in b.url, what="the hang-up's answer")
                assert cid in b.text(".notice")
                assert wait_for("BYE on both legs",
                                lambda: invites <= {r.call_id for r in peer.of("BYE")}, 20)
                # The list empties by itself once the node has ended it.
                b.wait_for(lambda: not b.find_all(row), timeout=30, what="the row gone")

                go(b, "Past callbacks", "Past callbacks")
                past = f"#past-callbacks tr[data-callback-id='{cid}']"
                b.wait_for(lambda: "operator_hangup" in b.text(past), timeout=20, what="the cause")
                b.find(past).find_element("link text", "its xDRs").click()
                b.wait_for(lambda: b.find("h1").text == f"Callback {cid}", what="the callback")
                calls = {tr.get_attribute("data-call-id") for tr in b.find_all("#xdrs tr[data-xdr-id]")}
                assert calls == invites
                amounts = [td.text for td in b.find_all("#xdrs td.amount")]
                assert len(amounts) == 2 and all(a.endswith(" USD") for a in amounts)

                go(b, "xDRs", "xDRs")
                assert len(xdr_ids(b)) == 50
                first = xdr_ids(b)
                b.find("#xdrs-next").click()
                b.wait_for(lambda: xdr_ids(b) and xdr_ids(b)[0] not in first, what="the next page")
                b.find("#xdrs-previous").click()
                b.wait_for(lambda: xdr_ids(b) == first, what="the first page again")
                cause = b.find("#xdr-filter [name='cause']")
                cause.send_keys("operator_hangup")
                b.find("#f-account").send_keys(account)
                b.find("#xdr-filter button[type='submit']").click()
                b.wait_for(lambda: len(xdr_ids(b)) == 2, what="the filtered xDRs")
                assert {tr.get_attribute("data-call-id")
                        for tr in b.find_all("#xdrs tr[data-xdr-id]")} == invites
                href = b.find("#xdrs-csv").get_attribute("href")
                assert href == f"{base}/ui/xdrs.csv?account={account}&cause=operator_hangup"
                b.find("#f-prefix").send_keys("12ab")  # garbage: the form again, the error beside it
                b.find("#xdr-filter button[type='submit']").click()
                b.wait_for(lambda: b.find_all("#f-prefix-err"), what="the prefix's error")

                b.open(f"{base}/ui/accounts/{account}")
                assert len(xdr_ids(b, "#account-xdrs")) == 2
                b.find("#account-xdrs-all").click()
                b.wait_for(lambda: b.find("h1").text == "xDRs", what="the account's xDRs")
                assert b.find("#f-account").get_attribute("value") == account

                go(b, "Reports", "Reports")
                drawn = b.wait_for(lambda: b.js(
                    "return ['daily', 'destinations', 'causes'].filter(function (n) {"
                    " return document.getElementById('chart-' + n).chart; });"), what="the charts")
                assert drawn == ["daily", "destinations", "causes"]
                assert "operator_hangup" in b.text("#table-causes")
                assert b.find("#csv-daily").get_attribute("href").startswith(
                    f"{base}/ui/reports/daily.csv?from=")

                go(b, "Nodes", "Nodes")
                assert "node1" in b.text("#nodes tr[data-node='node1']")
                assert b.find_all("#nodes form.drain-form")
                # No CSP violation, no script error (the network's: the favicon, the 400 of the
                # garbage filter, are answers, not errors of the page).
                errors = [e for e in b.driver.get_log("browser")
                          if e["level"] == "SEVERE" and e["source"] != "network"]
                assert not errors, errors

            with Browser(javascript=False) as b:  # a read-only operator, without JavaScript
                login(b, base, "rita", READER_PASSWORD)
                go(b, "Nodes", "Nodes")
                assert not b.find_all("#nodes form")
                go(b, "Live callbacks", "Live callbacks")
                assert not b.find_all("form.hangup")
                b.find("#refresh").click()
                b.wait_for(lambda: b.find("h1").text == "Live callbacks", what="the refreshed list")
                go(b, "xDRs", "xDRs")
                b.find("#xdrs-next").click()
                b.wait_for(lambda: "after=" in b.url and len(xdr_ids(b)) == 50, what="page 2")
                go(b, "Reports", "Reports")
                assert "operator_hangup" in b.text("#table-causes")
    finally:
        peer.stop()
