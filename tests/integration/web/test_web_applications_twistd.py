"""Voice applications managed in the catalog reach running ``twistd cbserver`` nodes without restart.

Real PostgreSQL, two real nodes on it, real HTTPS sockets: an application created through the admin
API answers at its path; a changed field applies to the next callback request; a changed
host name re-routes; a deleted application's page is 404. The config's own application is
seeded into the catalog at start-up, audited as coming from the config file.
"""

from __future__ import annotations

import json
import re
import ssl
import time
import urllib.error
import urllib.request

import pytest

from tests.support.server import free_port, start, terminate, wait_health, write_config

pytestmark = pytest.mark.integration

TOKEN = "applications-test-admin-token-0123"
WAIT = 30.0  # generous: a change is seen within a second or so on an idle machine


def request(url: str, method: str = "GET", body: dict | None = None, host: str | None = None,
            token: str | None = None) -> tuple[int, str]:
    """(status, body text) of one HTTPS request, certificate unchecked."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    headers = {}
    if host:
        headers["Host"] = host
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def title(page: str) -> str:
    m = re.search(r"<title>([^<]*)</title>", page)
    return m.group(1) if m else ""


def until(check, what: str):
    """Poll ``check()`` until it returns something true; fail after ``WAIT`` seconds."""
    deadline = time.monotonic() + WAIT
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: never happened (last: {last!r})")


def test_applications_follow_the_catalog_on_a_running_node(tmp_path, pg_dsn):
    admin_port = free_port()
    config, port = write_config(tmp_path, pg_dsn, **{
        'admin_token = ""': f'admin_token = "{TOKEN}"',
        'admin_endpoint = "ssl:8902:interface=127.0.0.1"':
            f'admin_endpoint = "ssl:{admin_port}:interface=127.0.0.1"',
        'second_number = "18005550100"': 'second_number = "+1 800 555-0100"'})
    # A second node on the same database, which no request to the API ever reaches.
    (tmp_path / "node2").mkdir()
    config2, port2 = write_config(tmp_path / "node2", pg_dsn, **{'node = "node1"': 'node = "node2"'})
    proc = start(config)
    proc2 = start(config2)
    web, admin = f"https://127.0.0.1:{port}", f"https://127.0.0.1:{admin_port}"
    web2 = f"https://127.0.0.1:{port2}"

    def api(method, path, body=None):
        code, text = request(admin + path, method, body, token=TOKEN)
        return code, (json.loads(text) if text else None)

    def callback(path, body):
        code, text = request(f"{web}{path}/api/v1/callbacks", "POST", body)
        return code, json.loads(text)

    try:
        wait_health(port, 200, proc)
        wait_health(port2, 200, proc2)
        # The config's application was added to the catalog at start-up (once), as the config
        # file's change; its number in the page's own form was accepted and normalised.
        code, listed = until(lambda: (lambda r: r if r[1]["total"] else None)(
            api("GET", "/v1/applications")), "the config's application seeded")
        (seeded,) = listed["items"]
        assert seeded["name"] == "Web callback" and seeded["second_number"] == "18005550100"
        code, audit = api("GET", "/v1/audit?kind=application")
        # Seeded once, by whichever node started first.
        assert [(r["action"], r["source"]) for r in audit["items"]] in (
            [("create", f"provision:{config.resolve()}")], [("create", f"provision:{config2.resolve()}")])
        assert request(web + "/web-callback")[0] == 200

        # A stranger (no token, a wrong one, the public endpoint) creates nothing.
        sales = {"name": "Sales callback", "callback_page_address": "https://127.0.0.1/sales",
                 "path": "sales"}
        assert request(admin + "/v1/applications", "POST", sales)[0] == 401
        assert request(admin + "/v1/applications", "POST", sales, token="x" * 34)[0] == 401
        assert request(web + "/v1/applications", "POST", sales, token=TOKEN)[0] in (404, 405)
        assert api("GET", "/v1/applications")[1]["total"] == 1

        # 1. Create: the page answers on the running node, no restart.
        assert request(web + "/sales")[0] == 404
        code, made = api("POST", "/v1/applications", sales)
        assert code == 201, made
        page = until(lambda: (lambda r: r[1] if r[0] == 200 else None)(request(web + "/sales")),
                     "the new application's page")
        assert title(page).endswith("Sales callback")
        page = until(lambda: (lambda r: r[1] if r[0] == 200 else None)(request(web2 + "/sales")),
                     "the new application's page on the other node")
        assert title(page).endswith("Sales callback")
        # No second number: the next callback in Simple mode is refused, naming the mode.
        body = {"mode": "simple", "account": "cb1818000001", "phone": "+55 11 98765-4321"}
        code, answer = callback("/sales", body)
        assert code == 400 and answer["error"]["field"] == "mode", answer

        # 2. Change a field: the next callback uses it (Simple mode is now offered, so the
        # request goes on to the account, which does not exist).
        code, changed = api("PATCH", "/v1/applications/Sales%20callback",
                            {"second_number": "+1 800 555-0199"})
        assert code == 200 and changed["second_number"] == "18005550199"

        def simple_taken():
            code, answer = callback("/sales", body)
            return (code, answer) if answer["error"]["field"] != "mode" else None

        code, answer = until(simple_taken, "the changed second number in use")
        assert code == 401 and answer["error"]["code"] == "bad_credentials", answer
        assert "18005550199" in request(web + "/sales?mode=simple")[1]

        # Host routing follows a change too.
        api("PATCH", "/v1/applications/Sales%20callback", {"hosts": ["sales.example.net"]})
        # ("/" under any name is some instance's page: wait for this one's.)
        page = until(lambda: (lambda r: r[1] if r[0] == 200 and title(r[1]).endswith(
            "Sales callback") else None)(request(web + "/", host="sales.example.net")),
            "the new host name routed")
        assert title(page).endswith("Sales callback")
        # A bad value is refused naming the field, and the node keeps serving the old one.
        code, err = api("PATCH", "/v1/applications/Sales%20callback", {"second_number": "call me"})
        assert code == 400 and err["error"]["field"] == "second_number"

        # 3. Delete: its page, host name and API are 404 from the next request on.
        code, _ = api("DELETE", "/v1/applications/Sales%20callback")
        assert code == 204
        until(lambda: request(web + "/sales")[0] == 404, "the deleted application's page 404")
        # Its host name is no longer listed: "/" there is the default instance's page.
        code, page = request(web + "/", host="sales.example.net")
        assert code == 200 and not title(page).endswith("Sales callback")
        assert request(f"{web}/sales/api/v1/callbacks", "POST", body)[0] == 404
        assert request(web + "/web-callback")[0] == 200  # the others are untouched
        until(lambda: request(web2 + "/sales")[0] == 404, "the deleted page 404 on the other node")
    finally:
        code, out = terminate(proc)
        code2, out2 = terminate(proc2)
    assert code == 0 and code2 == 0, (out, out2)
    assert "Traceback" not in out + out2
    assert "applications changed" in out and "applications changed" in out2
