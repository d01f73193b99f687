"""An operator hangs up a live callback through the admin API of a real ``twistd cbserver``.

The trunk is a Python SIP peer that answers every INVITE and never hangs up. Once the
callback is connected it is first among the live callbacks (its node alive, its cost so far
growing); ``DELETE /v1/callbacks/{id}`` answers 202 (and 202 again: idempotent); the node
picks the request up, and within seconds BYE reaches the trunk on both legs' Call-IDs, the
callback ends with the cause ``operator_hangup``, both xDRs are written and billed (the
balance changes by exactly their amounts), ``/v1/xdrs?cause=operator_hangup`` and its CSV
show them, and a third DELETE is 409.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.callback.test_crash_recovery_twistd import ACCOUNTS, PASSWORD, catalog
from tests.support.node import Node, http, query, running, wait_for
from tests.support.sippeer import SipPeer

pytestmark = pytest.mark.integration

TOKEN = "test-admin-token-0123456789"  # tests.support.world.config_text's


def admin(node: Node, method: str, path: str) -> tuple[int, bytes, str]:
    """(status, body, content type) of an admin API request to ``node``."""
    port = re.search(r'admin_endpoint = "tcp:(\d+):', node.config.read_text()).group(1)
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("content-type", "")


def admin_json(node: Node, method: str, path: str):
    """(status, parsed JSON body) of an admin API request."""
    code, body, _ = admin(node, method, path)
    return code, json.loads(body) if body else None


def test_operator_hangup_ends_both_legs_on_the_wire_and_bills_them(tmp_path, pg_dsn):
    cbs = str(Path(sys.executable).parent / "cbserver")
    subprocess.run([cbs, "provision", str(catalog(tmp_path)), "--dsn", pg_dsn],
                   check=True, capture_output=True, timeout=120)
    account = ACCOUNTS[0]
    before = query(pg_dsn, "SELECT balance FROM accounts WHERE id = %s", (account,))[0][0]
    peer = SipPeer()
    peer.start()
    node = Node(tmp_path, "node1", pg_dsn, peer.port)
    try:
        with running(node):
            node.start()
            node.wait_ready()
            code, body = http("POST", node.url("/api/v1/callbacks"), {
                "application": "Web callback", "mode": "extended", "account": account,
                "password": PASSWORD, "phone": "5511987654300", "destination": "18185550123"})
            assert code == 202, body
            cid = body["id"]
            wait_for("connected", lambda: http("GET", node.url(f"/api/v1/callbacks/{cid}"))[1]["status"]
                     == "connected", 30)
            invites = {r.call_id for r in peer.of("INVITE")}
            assert len(invites) == 2

            # The live list: first, alive, priced once its recovery row (both legs) is stored;
            # the status row follows the node's memory within its writer's linger (0.2 s).
            def priced():
                code, live = admin_json(node, "GET", "/v1/callbacks?state=live")
                first = live["callbacks"][0] if live["callbacks"] else None
                if first and first["status"] == "connected" and first["cost_so_far"] \
                        and len(first["cost_so_far"]["legs"]) == 2:
                    return first
                return None

            first = wait_for("the live callback priced", priced, 15)
            assert first["id"] == cid and first["node"] == "node1" and first["node_alive"] is True
            assert first["status"] == "connected" and first["legs"]["B"]["state"] == "answered"
            code, nodes = admin_json(node, "GET", "/v1/nodes/processes")
            assert [(n["node"], n["alive"], n["calls_running"])
                    for n in nodes["nodes"]] == [("node1", True, 1)]

            asked = time.monotonic()
            code, body = admin_json(node, "DELETE", f"/v1/callbacks/{cid}")
            assert code == 202, body
            code2, _ = admin_json(node, "DELETE", f"/v1/callbacks/{cid}")
            assert code2 in (202, 409)  # 409 only if it has ended in between

            def byes():
                got = {r.call_id for r in peer.of("BYE")}
                return got if invites <= got else None

            assert wait_for("BYE on both legs", byes, 20) == invites
            bye_after = time.monotonic() - asked
            status = wait_for("ended", lambda: (lambda s: s if s["status"] == "ended" else None)(
                http("GET", node.url(f"/api/v1/callbacks/{cid}"))[1]), 20)
            assert status["cause"]["code"] == "operator_hangup"

            # The admin API reads PostgreSQL, which the node's status writer updates just after.
            one = wait_for("the ended row", lambda: (lambda c, b: b if c == 200 and not b["live"] else None)(
                *admin_json(node, "GET", f"/v1/callbacks/{cid}")), 10)
            assert one["live"] is False and one["cause"]["code"] == "operator_hangup"
            xdrs = one["xdrs"]
            assert [x["leg"] for x in xdrs] == ["A", "B"]
            assert all(x["duration"] > 0 and x["sip_code"] == 200 for x in xdrs)
            assert {x["call_id"] for x in xdrs} == invites
            total = sum(Decimal(x["amount"]) for x in xdrs)
            assert total > 0
            after = query(pg_dsn, "SELECT balance FROM accounts WHERE id = %s", (account,))[0][0]
            assert before - after == total
            assert query(pg_dsn, "SELECT handled_at IS NOT NULL FROM callback_hangups WHERE session_id = %s",
                         (cid,)) == [(True,)]

            code, listed = admin_json(node, "GET", "/v1/xdrs?cause=operator_hangup")
            assert [x["id"] for x in listed["xdrs"]] == sorted((x["id"] for x in xdrs), reverse=True)
            code, raw, ctype = admin(node, "GET", "/v1/xdrs?cause=operator_hangup&format=csv")
            assert code == 200 and ctype.startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(raw.decode(), newline="")))
            assert [r["session_id"] for r in rows] == [cid, cid]
            assert sorted(Decimal(r["amount"]) for r in rows) == sorted(Decimal(x["amount"]) for x in xdrs)

            code, body = admin_json(node, "DELETE", f"/v1/callbacks/{cid}")
            assert code == 409, body
            print(f"\noperator hang-up: BYE on both legs {bye_after:.2f} s after the DELETE")
    finally:
        peer.stop()
