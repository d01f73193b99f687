"""``kill -9`` of a node the moment legB answers: the window the batched recovery row opens.

Since session 9 a callback's recovery row rides the status writer's next batch (up to 0.2 s
after the answer, ``StatusWriter.save_recovery``) instead of a statement of its own at once.
A node killed inside that window leaves the leg that just answered unknown to recovery
(docs/billing.md, "Crash recovery", known limits). This test kills the node right after
legB's ACK, inside or just after that window, and checks that whatever the timing, nothing is
inconsistent: legA (answered seconds earlier, its row stored) gets its BYE and a ``node_lost``
xDR; legB is either in the row (BYE and a ``node_lost`` xDR) or not (no BYE from cbserver, a
zero xDR ``not answered: node_lost``); the balance moves by exactly the xDRs; no hold, slot
nor recovery row is left; each leg has one xDR. The outcome is printed.

One real ``twistd cbserver`` node (restarted under the same name: it recovers its own calls
at once) and a Python SIP trunk that answers legB only when the test lets it.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.callback.test_crash_recovery_twistd import ACCOUNTS, catalog
from tests.integration.callback.test_recovery_row_after_outage_twistd import (
    GatedPeer,
    call_until_legb_rings,
)
from tests.support.node import Node, query, wait_for

pytestmark = pytest.mark.integration


def test_a_kill_right_after_legb_answers_loses_at_most_legb_and_stays_consistent(tmp_path, pg_dsn):
    cbs = str(Path(sys.executable).parent / "cbserver")
    subprocess.run([cbs, "provision", str(catalog(tmp_path)), "--dsn", pg_dsn],
                   check=True, capture_output=True, timeout=120)
    balance = "SELECT balance FROM accounts WHERE id = %s"
    before = query(pg_dsn, balance, (ACCOUNTS[0],))[0][0]
    peer = GatedPeer()
    peer.start()
    node = Node(tmp_path, "node1", pg_dsn, peer.port)
    try:
        node.start()
        node.wait_ready(120)
        cid = call_until_legb_rings(node, peer, pg_dsn)
        # Some billable time for legA: a heartbeat after its answer.
        wait_for("a heartbeat after legA's answer", lambda: query(
            pg_dsn, "SELECT n.last_seen > r.updated_at + interval '1 second' FROM server_nodes n, "
                    "callback_recovery r WHERE n.instance_id = r.instance_id")[0][0], 20)
        leg_b = peer.held[0].split("Call-ID:", 1)[1].split("\r\n", 1)[0].strip()
        peer.release()
        wait_for("legB's ACK", lambda: any(r.call_id == leg_b for r in peer.of("ACK")), 30)
        node.kill9()  # within the batching window, or just after
        legs_in_row = query(pg_dsn, "SELECT jsonb_array_length(data->'legs') FROM callback_recovery")
        node.start()  # the same node name recovers its predecessor's calls at once
        invites = [r.call_id for r in peer.of("INVITE")]
        leg_a = next(c for c in invites if c != leg_b)
        wait_for("legA's BYE", lambda: leg_a in {r.call_id for r in peer.of("BYE")}, 60)
        wait_for("both xDRs", lambda: query(
            pg_dsn, "SELECT count(*) FROM xdrs WHERE session_id = %s", (cid,))[0][0] == 2, 60)
        rows = {r[0]: r[1:] for r in query(
            pg_dsn, "SELECT leg, call_id, sip_reason, duration, amount FROM xdrs WHERE session_id = %s",
            (cid,))}
        assert rows["A"][:2] == (leg_a, "node_lost") and rows["A"][2] > 0 and rows["A"][3] > 0, rows
        b_known = rows["B"][1] == "node_lost"
        if b_known:  # the row with legB was committed before the kill
            assert rows["B"][0] == leg_b, rows
            wait_for("legB's BYE", lambda: leg_b in {r.call_id for r in peer.of("BYE")}, 60)
        else:  # killed inside the window: legB unknown, not billed, left to the carrier
            assert rows["B"][1:4] == ("not answered: node_lost", 0, Decimal(0)), rows
        after = query(pg_dsn, balance, (ACCOUNTS[0],))[0][0]
        assert before - after == rows["A"][3] + rows["B"][3]  # debit: exactly the xDRs
        assert query(pg_dsn, "SELECT status, state->'cause'->>'code' FROM callback_sessions WHERE id = %s",
                     (cid,)) == [("ended", "node_lost")]
        assert query(pg_dsn, "SELECT count(*) FROM balance_reservations")[0][0] == 0
        assert query(pg_dsn, "SELECT count(*) FROM callback_slots WHERE callback_id = %s", (cid,))[0][0] == 0
        assert query(pg_dsn, "SELECT count(*) FROM callback_recovery")[0][0] == 0
        print(f"kill right after legB's ACK: legs in the recovery row {legs_in_row}, "
              f"legB {'recovered' if b_known else 'lost to the window'}")
    finally:
        node.stop()
        peer.stop()
