"""A leg that answers while PostgreSQL is down, then ``kill -9`` of its node once the database
is back: the leg must still be ended and billed by crash recovery.

Found by the soak (``bench/soak.py``): the recovery row written when legB answers failed (the
database was away), the failure was only logged, and when the node was killed later the row
still held legA alone: legB was never sent a BYE by cbserver and its xDR had no Call-ID. Now
the save is tried again until it is stored (the status writer's batches carry it, since
session 9: ``StatusWriter.save_recovery``).

One real ``twistd cbserver`` node on a private PostgreSQL cluster the test stops and starts,
and a Python SIP trunk that holds its answer to legB until the test lets it go (after
stopping PostgreSQL).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cbserver.db.migrations import upgrade
from tests.integration.callback.test_crash_recovery_twistd import ACCOUNTS, PASSWORD, catalog
from tests.support.node import Node, http, query, running, wait_for
from tests.support.pgprivate import private_cluster
from tests.support.sippeer import SipPeer

pytestmark = pytest.mark.integration


class GatedPeer(SipPeer):
    """A trunk that answers legA at once and legB (the second INVITE) only once ``gate`` is
    set; its retransmissions meanwhile are dropped (the node's Timer B is 32 s)."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self._first: str | None = None

    def _handle(self, text: str, source) -> None:
        head = text.partition("\r\n\r\n")[0]
        if head.startswith("INVITE "):
            call_id = next((ln.split(":", 1)[1].strip() for ln in head.split("\r\n")
                            if ln.lower().startswith("call-id:")), "")
            self._first = self._first or call_id
            if call_id != self._first and not self.gate.is_set():
                with self.lock:  # seen (the test waits for it), answered later
                    self.held = (text, source)
                return
        super()._handle(text, source)

    def release(self) -> None:
        """Answer the held INVITE now."""
        self.gate.set()
        text, source = self.held
        super()._handle(text, source)


def call_until_legb_rings(node: Node, peer: GatedPeer, dsn: str) -> str:
    """Request an extended callback on ``node``; return its id once legA answered (its recovery
    row stored) and legB's INVITE is held by ``peer``."""
    code, body = http("POST", node.url("/api/v1/callbacks"), {
        "application": "Web callback", "mode": "extended", "account": ACCOUNTS[0],
        "password": PASSWORD, "phone": "5511987654300", "destination": "18185550123"})
    assert code == 202, body
    wait_for("legB's INVITE", lambda: hasattr(peer, "held"), 60)
    wait_for("legA's recovery row", lambda: query(
        dsn, "SELECT count(*) FROM callback_recovery WHERE jsonb_array_length(data->'legs') = 1"
    )[0][0] == 1, 30)
    return body["id"]


def test_a_leg_answered_while_the_database_is_down_is_recovered_after_a_kill(tmp_path):
    with private_cluster("cbs_rec_outage_") as cluster:
        dsn = cluster.dsn()
        upgrade(dsn, report=lambda _line: None)
        cbs = str(Path(sys.executable).parent / "cbserver")
        subprocess.run([cbs, "provision", str(catalog(tmp_path)), "--dsn", dsn],
                       check=True, capture_output=True, timeout=120)
        peer = GatedPeer()
        peer.start()
        node = Node(tmp_path, "node1", dsn, peer.port)
        # Reconnect within a second of PostgreSQL coming back (the default backs off to 30 s).
        node.edit_config(("[database]\n", "[database]\nretry_max = 1.0\n"))
        try:
            with running(node):
                node.start()
                node.wait_ready(120)
                cid = call_until_legb_rings(node, peer, dsn)
                cluster.stop("fast")
                peer.release()  # legB answers while PostgreSQL is down
                leg_b = peer.held[0].split("Call-ID:", 1)[1].split("\r\n", 1)[0].strip()
                wait_for("legB's ACK", lambda: any(r.call_id == leg_b for r in peer.of("ACK")), 30)
                wait_for("the failed save to be logged",
                         lambda: "callback status rows not stored" in node.log.read_text(), 30)
                cluster.start()
                # The save is tried again: the row holds both legs once the database is back.
                wait_for("both legs' recovery row", lambda: query(
                    dsn, "SELECT count(*) FROM callback_recovery WHERE jsonb_array_length(data->'legs') = 2"
                )[0][0] == 1, 60)
                node.kill9()
                node.start()  # the same node name recovers its predecessor's calls at once
                invites = {r.call_id for r in peer.of("INVITE")}
                assert len(invites) == 2 and leg_b in invites
                wait_for("a BYE on both legs", lambda: invites <= {r.call_id for r in peer.of("BYE")}, 60)
                wait_for("both xDRs", lambda: query(
                    dsn, "SELECT count(*) FROM xdrs WHERE session_id = %s", (cid,))[0][0] == 2, 60)
                rows = query(dsn, "SELECT leg, call_id, sip_reason, duration FROM xdrs WHERE session_id = %s "
                                  "ORDER BY leg", (cid,))
                assert {r[1] for r in rows} == invites, rows
                assert all(r[2] == "node_lost" and r[3] > 0 for r in rows), rows
                assert query(dsn, "SELECT status, state->'cause'->>'code' FROM callback_sessions "
                             "WHERE id = %s",
                             (cid,)) == [("ended", "node_lost")]
                assert query(dsn, "SELECT count(*) FROM callback_recovery")[0][0] == 0
        finally:
            cluster.start()
            peer.stop()
