"""Two real ``twistd cbserver`` nodes on one PostgreSQL; ``kill -9`` of the node running N
connected callbacks. The other node must, within 30 s: send BYE on every leg (seen on the
wire by the trunk, a Python SIP peer that never hangs up), write both xDRs of each callback
with the reason ``node_lost`` and durations up to the dead node's last heartbeat, change the
balance by exactly their amounts, close the session rows (cause ``node_lost``) and leave no
hold, slot nor recovery row. Meanwhile ``GET`` of a callback says its node is lost.

The figures (seconds from kill to the last BYE and the last xDR, money-time not billed per
call) are printed and written to ``crash-recovery-figures.json`` in the test's folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.node import Node, demo_catalog, http, query, running, wait_for
from tests.support.sippeer import SipPeer

pytestmark = pytest.mark.integration

N = 4
# One debit account per callback: a callback holds its account's whole balance (its maximum
# duration priced), so a second one on the same account would be refused for balance.
ACCOUNTS = [f"cbrecover{i:03d}" for i in range(N)]
PASSWORD = "recover-pass-1"


def catalog(tmp: Path) -> Path:
    """The demo's catalog plus the test's accounts."""
    return demo_catalog(tmp, ACCOUNTS, PASSWORD)


def node_lost_xdrs(dsn: str, ids: list[str], invites: set[str]) -> tuple[list[tuple], float]:
    """The xDRs after node1's crash, checked: two per callback ``ids``, one per leg of
    ``invites``, all of the one killed process, reason ``node_lost``, ended at its last
    heartbeat and billed from the answer up to it. Returns the rows (session_id, leg,
    duration, amount, connect_time, disconnect_time, sip_reason, node, call_id, account_id)
    and that heartbeat's time (epoch seconds)."""
    rows = query(dsn, "SELECT session_id, leg, duration, amount, connect_time, disconnect_time, "
                      "sip_reason, node, call_id, account_id FROM xdrs ORDER BY session_id, leg")
    assert sorted({r[0] for r in rows}) == sorted(ids) and len(rows) == 2 * len(ids)
    assert {r[8] for r in rows} == invites
    # (`cbserver provision` registered a node1 process too, long stopped.)
    instance = query(dsn, "SELECT DISTINCT instance_id FROM xdrs")
    assert len(instance) == 1
    last_seen = query(dsn, "SELECT extract(epoch FROM last_seen)::float8 FROM server_nodes "
                           "WHERE instance_id = %s", instance[0])[0][0]
    for _sid, leg, duration, amount, connect, disconnect, reason, node, _, _ in rows:
        assert reason == "node_lost" and node == "node1"
        assert abs(disconnect.timestamp() - last_seen) < 0.002, leg
        # Rounded up from the answer (connect_time is truncated to the millisecond).
        assert 0 <= duration - (last_seen - connect.timestamp()) < 1.001, leg
        assert amount > 0
    return rows, last_seen


@pytest.mark.parametrize("who", ["survivor", "restarted"])
def test_kill_9_of_a_node_with_calls_up_ends_bills_and_closes_everything(tmp_path, pg_dsn, who):
    """``who`` recovers: another node, or the killed node itself started again alone (it
    recognises its own leftovers by its node name)."""
    cbs = str(Path(sys.executable).parent / "cbserver")
    subprocess.run([cbs, "provision", str(catalog(tmp_path)), "--dsn", pg_dsn],
                   check=True, capture_output=True, timeout=120)
    balances = "SELECT id, balance FROM accounts WHERE id = ANY(%s)"
    before = dict(query(pg_dsn, balances, (ACCOUNTS,)))
    peer = SipPeer()
    peer.start()
    doomed = Node(tmp_path, "node1", pg_dsn, peer.port)
    survivor = Node(tmp_path, "node2", pg_dsn, peer.port) if who == "survivor" else doomed
    try:
        with running(doomed, survivor):
            doomed.start()
            doomed.wait_ready()
            if who == "survivor":
                survivor.start()
                survivor.wait_ready()
            ids = []
            for i in range(N):
                code, body = http("POST", doomed.url("/api/v1/callbacks"), {
                    "application": "Web callback", "mode": "extended", "account": ACCOUNTS[i],
                    "password": PASSWORD, "phone": f"55119876543{i:02d}", "destination": "18185550123"})
                assert code == 202, body
                ids.append(body["id"])
            for cid in ids:
                wait_for(f"{cid} connected",
                         lambda cid=cid: http("GET", doomed.url(f"/api/v1/callbacks/{cid}"))[1]["status"]
                         == "connected", 30)
            invites = {r.call_id for r in peer.of("INVITE")}
            assert len(invites) == 2 * N
            # Both legs' recovery rows are written (asynchronously) once legB answered.
            wait_for("recovery rows", lambda: query(
                pg_dsn, "SELECT count(*) FROM callback_recovery WHERE jsonb_array_length(data->'legs') = 2"
            )[0][0] == N, 10)
            # Some billable time: the doomed node's heartbeat goes past every answer.
            wait_for("a heartbeat after the answers", lambda: query(
                pg_dsn, "SELECT n.last_seen > max(s.updated_at) + interval '2 seconds' FROM server_nodes n, "
                        "callback_sessions s WHERE n.node = 'node1' AND n.stopped_at IS NULL "
                        "GROUP BY n.last_seen")[0][0], 20)
            time.sleep(2.0)  # and the kill comes anywhere in the next heartbeat interval
            os.kill(doomed.proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            killed_db = query(pg_dsn, "SELECT extract(epoch FROM now())::float8")[0][0]
            doomed.proc.wait()
            if who == "restarted":
                doomed.start()  # same name, same configuration: a new process (instance)

            # Until recovered, any node reports the callback with its node lost.
            def lost_or_recovered():
                body = http("GET", survivor.url(f"/api/v1/callbacks/{ids[0]}"))[1]
                if body.get("node_lost"):
                    return "node_lost", body["status"]
                return ("recovered", body["status"]) if body["status"] == "ended" else None

            if who == "survivor":
                seen_lost = wait_for("node_lost on GET", lost_or_recovered, 40)
                assert seen_lost == ("node_lost", "connected")  # said so, status kept
            else:
                seen_lost = ("not asked", None)  # the restarted node recovers at once

            def byes():
                got = {r.call_id: r.at for r in peer.of("BYE")}
                return got if invites <= set(got) else None

            bye_times = wait_for("a BYE on every leg", byes, 40)
            xdrs_done = wait_for("every xDR", lambda: query(
                pg_dsn, "SELECT count(*) FROM xdrs WHERE sip_reason = 'node_lost'")[0][0] == 2 * N, 40)
            assert xdrs_done
            all_xdrs_at = time.monotonic()
            last_bye = max(bye_times[c] for c in invites) - killed

            # Every BYE came from the survivor (the dead node's port is closed).
            assert {r.source for r in peer.of("BYE")} != set()
            rows, last_seen = node_lost_xdrs(pg_dsn, ids, invites)
            not_billed = killed_db - last_seen
            after = dict(query(pg_dsn, balances, (ACCOUNTS,)))
            for account in ACCOUNTS:  # debit accounts: down by exactly their xDRs
                billed = sum((r[3] for r in rows if r[9] == account), Decimal(0))
                assert billed > 0 and before[account] - after[account] == billed, account
            sessions = query(pg_dsn, "SELECT status, state->'cause'->>'code' FROM callback_sessions "
                                     "WHERE id = ANY(%s)", (ids,))
            assert sessions == [("ended", "node_lost")] * N
            assert query(pg_dsn, "SELECT count(*) FROM balance_reservations")[0][0] == 0
            assert query(pg_dsn, "SELECT count(*) FROM callback_slots WHERE callback_id = ANY(%s)",
                         (ids,))[0][0] == 0
            assert query(pg_dsn, "SELECT count(*) FROM callback_recovery")[0][0] == 0
            code, status = http("GET", survivor.url(f"/api/v1/callbacks/{ids[0]}"))
            assert status["status"] == "ended" and status["cause"]["code"] == "node_lost"
            assert "node_lost" not in status
            figures = {"recovered_by": who, "callbacks": N, "legs": 2 * N,
                       "seconds_to_last_bye": round(last_bye, 2),
                       "seconds_to_all_xdrs": round(all_xdrs_at - killed, 2),
                       "seconds_not_billed_per_call": round(not_billed, 2),
                       "get_said_node_lost_before_recovery": seen_lost[0] == "node_lost"}
            print("crash recovery figures:", json.dumps(figures))
            (tmp_path / f"crash-recovery-figures-{who}.json").write_text(json.dumps(figures))
            assert figures["seconds_to_last_bye"] < 30 and figures["seconds_to_all_xdrs"] < 30
            assert 0 <= not_billed <= 5.5  # at most one heartbeat interval (5 s), plus scheduling
    finally:
        peer.stop()
