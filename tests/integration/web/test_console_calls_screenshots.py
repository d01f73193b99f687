"""Screenshots of the console's calls screens for docs/admin-ui.md (run on demand), as
``test_console_screenshots.py`` takes the catalog's:
``CBS_SCREENSHOTS=docs/img .venv/bin/pytest tests/integration/web/test_console_calls_screenshots.py``.

The database gets 600 generated xDRs (``tests.support.xdrgen``, June 2026), a live callback
on a second node that looks alive, a drained node, and an account (made through the
console's forms) that owns some of the xDRs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import _scratch_database
from tests.integration.web.test_console_browser import login
from tests.integration.web.test_console_calls_twistd import sql
from tests.integration.web.test_console_screenshots import png_size, post
from tests.support import browser as browser_mod
from tests.support import xdrgen
from tests.support.browser import Browser
from tests.support.console import ADMIN_PASSWORD, Client, ConsoleServer, stop

OUT = os.environ.get("CBS_SCREENSHOTS", "")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not OUT, reason="set CBS_SCREENSHOTS=DIR to take them"),
              pytest.mark.skipif(not browser_mod.available(), reason="chromium not installed")]

SHOTS = {
    "xdrs": "/ui/xdrs?from=2026-06-01&to=2026-07-01",
    "live": "/ui/callbacks/live",
    "past": "/ui/callbacks/past",
    "nodes": "/ui/nodes",
    "reports": "/ui/reports?from=2026-06-01&to=2026-07-01",
    "account-xdrs": "/ui/accounts/cb1818000001#account-xdrs",
}


def test_screenshots_of_the_calls_screens(pg_cluster, pg_template, tmp_path):
    out = Path(OUT)
    out.mkdir(parents=True, exist_ok=True)
    dbs = _scratch_database(pg_cluster, "cbs_t_", pg_template)
    dsn = next(dbs)
    srv = None
    try:
        xdrgen.generate(dsn, 600)
        sql(dsn, "INSERT INTO server_nodes (node, instance_id, hostname, pid, version, last_seen) "
                 "VALUES ('node2', '33333333-3333-3333-3333-333333333333', 'cbs-b', 4242, "
                 "'1.0', now() + interval '1 hour')")
        sql(dsn, "INSERT INTO node_drains (node, deadline) VALUES ('node3', now() + interval '10 minutes')")
        srv = ConsoleServer(tmp_path, dsn, tls=False)
        sql(dsn, "INSERT INTO callback_sessions (id, application, mode, account_id, phone, "
                 "destination, status, state, node, instance_id) VALUES ('cb7QfL2xA', 'Web callback', "
                 "'extended', 'cb1818000001', '5511987654300', '18185550123', 'connected', "
                 "'{\"legs\": {\"A\": {\"state\": \"answered\"}, \"B\": {\"state\": \"answered\"}}}', "
                 "'node2', '33333333-3333-3333-3333-333333333333')")
        c = Client(srv.base)
        assert c.login("alice", ADMIN_PASSWORD).status == 303
        post(c, "/ui/destinations/new", {"prefix": "1818", "country": "USA"})
        post(c, "/ui/tariffs/new", {"name": "Tariff A", "currency": "USD", "applied_to": "customer"})
        post(c, "/ui/products/new", {"name": "Callback Services", "currency": "USD",
                                     "rl-0-node": "node1", "rl-0-tariff": "1",
                                     "rl-0-access_code": "WEBCALLBACK"})
        post(c, "/ui/customers/new", {"name": "Retail", "currency": "USD",
                                      "balance_control": "prepaid"})
        post(c, "/ui/accounts/new", {"id": "cb1818000001", "customer": "Retail",
                                     "product": "Callback Services", "opening_balance": "20",
                                     "account_type": "debit", "password": "Acc0unt-pass!",
                                     "status": "active"})
        sql(dsn, "UPDATE xdrs SET account_id = 'cb1818000001' WHERE account_id = 'acc1'")
        with Browser() as b:
            b.driver.set_window_size(1280, 900)
            login(b, srv.base, "alice", ADMIN_PASSWORD)
            for name, path in SHOTS.items():
                b.open(srv.base + path)
                assert b.text("h1") not in ("Something went wrong", "Not found"), path
                if name == "reports":
                    b.wait_for(lambda: b.js("return !!document.getElementById('chart-causes').chart"),
                               what="the charts")
                b.driver.save_screenshot(str(out / f"console-{name}.png"))
        for name in SHOTS:
            w, h = png_size(out / f"console-{name}.png")
            assert w >= 1000 and h >= 600, name
    finally:
        stop(srv)
        next(dbs, None)
