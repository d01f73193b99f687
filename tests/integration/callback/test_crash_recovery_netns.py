"""Crash recovery in a network namespace: two real ``twistd cbserver`` nodes and sipp as the
trunk, each on its own address inside a namespace the test creates, one PostgreSQL (reached
over its unix socket: filesystem sockets are not namespaced). ``kill -9`` of the node running
N connected callbacks; then, from what sipp saw on the wire (its message trace) and from the
database:

- every leg gets a BYE, sent by cbserver (not by sipp) from the recovering node's address,
  and answered 200;
- each callback has both xDRs, ``sip_reason`` ``node_lost``, billed from the answer up to
  the dead process's last heartbeat, and its account's balance changed by exactly their sum;
- the session rows are ``ended`` with cause ``node_lost``; no hold, slot or recovery row is
  left.

Run twice: recovered by the other node (``survivor``) and by the killed node started again
(``restarted``, it recognises its own leftovers by its node name). The figures (seconds from
the kill to the last BYE seen on the wire and to the last xDR, seconds and money not billed
per call) are printed and written to ``crash-recovery-netns-<who>.json`` in the test's folder.
Needs root (``ip netns``); skipped otherwise.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from cbserver.callback.recovery import pricer_from_dict
from tests.integration.callback.test_crash_recovery_twistd import (
    ACCOUNTS,
    PASSWORD,
    N,
    catalog,
    node_lost_xdrs,
    query,
)
from tests.integration.sip_torture.netns import Namespace, NetnsUnavailable
from tests.support.node import Node, running, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
SCENARIO = ROOT / "tests" / "integration" / "sip_sipp" / "scenarios" / "answer.xml"
# Addresses inside the namespace (its loopback holds 192.0.2.0/24: nothing leaves it).
NODE_ADDR = {"node1": "192.0.2.10", "node2": "192.0.2.11"}
TRUNK_ADDR, TRUNK_PORT = "192.0.2.20", 5070
WEB_PORT, SIP_PORT = 8080, 5060


def ns_node(ns: Namespace, tmp: Path, name: str, dsn: str) -> Node:
    """One ``twistd -n cbserver`` in the namespace: every address of its configuration is its
    own there, the trunk is sipp's."""
    return Node(tmp, name, dsn, (TRUNK_ADDR, TRUNK_PORT), web_port=WEB_PORT, sip_port=SIP_PORT,
                address=NODE_ADDR[name], prefix=ns.prefix())


_BLOCK = re.compile(r"^-{20,}.*$", re.MULTILINE)


def wire(trace: Path) -> list[dict]:
    """sipp's message trace as messages: direction, first line, Call-ID, CSeq, Via's host."""
    text = trace.read_text(errors="replace") if trace.exists() else ""
    out = []
    for block in _BLOCK.split(text):
        lines = [ln.rstrip("\r") for ln in block.strip().splitlines()]
        if len(lines) < 3 or "message" not in lines[0]:
            continue
        body = [ln for ln in lines[1:] if ln.strip()]
        headers: dict[str, str] = {}
        for ln in body[1:]:
            name, _, value = ln.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        via = re.search(r"SIP/2\.0/\w+\s+([\d.]+)", headers.get("via", ""))
        out.append({"dir": "sent" if " sent" in lines[0] else "received", "first": body[0],
                    "call_id": headers.get("call-id", ""), "cseq": headers.get("cseq", ""),
                    "via": via.group(1) if via else None})
    return out


@pytest.fixture
def namespace():
    if shutil.which("sipp") is None or shutil.which("curl") is None:
        pytest.skip("needs sipp and curl")
    try:
        with Namespace(f"cbs-crash-{os.getpid()}") as ns:
            yield ns
    except NetnsUnavailable as e:
        pytest.skip(str(e))


@pytest.mark.parametrize("who", ["survivor", "restarted"])
def test_kill_9_in_a_namespace_byes_on_the_wire_xdrs_balances_sessions(tmp_path, pg_dsn, namespace, who):
    ns = namespace
    cbs = str(Path(sys.executable).parent / "cbserver")
    subprocess.run([cbs, "provision", str(catalog(tmp_path)), "--dsn", pg_dsn],
                   check=True, capture_output=True, timeout=120)
    balances = "SELECT id, balance FROM accounts WHERE id = ANY(%s)"
    before = dict(query(pg_dsn, balances, (ACCOUNTS,)))
    trace = tmp_path / "sipp-messages.log"
    sipp_log = (tmp_path / "sipp.log").open("w")
    sipp = subprocess.Popen([*ns.prefix(), "sipp", "-sf", str(SCENARIO), "-i", TRUNK_ADDR,
                             "-p", str(TRUNK_PORT), "-mi", TRUNK_ADDR, "-mp", "16000", "-nostdin",
                             "-trace_msg", "-message_file", str(trace), "-trace_err", "-error_file",
                             str(tmp_path / "sipp-errors.log")],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=sipp_log)
    doomed = ns_node(ns, tmp_path, "node1", pg_dsn)
    survivor = ns_node(ns, tmp_path, "node2", pg_dsn) if who == "survivor" else doomed
    try:
        with running(doomed, survivor):
            doomed.start()
            if who == "survivor":
                survivor.start()
            doomed.wait_ready(90)
            survivor.wait_ready(90)
            assert sipp.poll() is None, (tmp_path / "sipp.log").read_text()
            ids = []
            for i in range(N):
                code, body = doomed.http("POST", "/api/v1/callbacks", {
                    "application": "Web callback", "mode": "extended", "account": ACCOUNTS[i],
                    "password": PASSWORD, "phone": f"55119876543{i:02d}", "destination": "18185550123"})
                assert code == 202, body
                ids.append(body["id"])
            for cid in ids:
                wait_for(f"{cid} connected", lambda cid=cid: doomed.http(
                    "GET", f"/api/v1/callbacks/{cid}")[1].get("status") == "connected", 60, every=0.3)
            invites = {m["call_id"] for m in wire(trace) if m["dir"] == "received"
                       and m["first"].startswith("INVITE ")}
            assert len(invites) == 2 * N
            wait_for("both legs' recovery rows", lambda: query(
                pg_dsn, "SELECT count(*) FROM callback_recovery WHERE jsonb_array_length(data->'legs') = 2"
            )[0][0] == N, 30)
            stored = {r[0]: r[1] for r in query(pg_dsn, "SELECT session_id, data FROM callback_recovery")}
            wait_for("a heartbeat after the answers", lambda: query(
                pg_dsn, "SELECT n.last_seen > max(s.updated_at) + interval '2 seconds' FROM server_nodes n, "
                        "callback_sessions s WHERE n.node = 'node1' AND n.stopped_at IS NULL "
                        "GROUP BY n.last_seen")[0][0], 30)
            time.sleep(2.0)  # the kill comes anywhere in the next heartbeat interval
            assert not [m for m in wire(trace) if m["first"].startswith("BYE ")]  # nobody hung up yet
            os.kill(doomed.proc.pid, signal.SIGKILL)
            killed = time.monotonic()
            killed_db = query(pg_dsn, "SELECT extract(epoch FROM now())::float8")[0][0]
            doomed.proc.wait()
            if who == "restarted":
                doomed.start()  # same name and addresses: a new process (instance)

            def byes():
                got = {m["call_id"] for m in wire(trace)
                       if m["dir"] == "received" and m["first"].startswith("BYE ")}
                return invites <= got

            wait_for("a BYE on every leg, on the wire", byes, 60)
            last_bye = time.monotonic() - killed
            wait_for("every xDR", lambda: query(
                pg_dsn, "SELECT count(*) FROM xdrs WHERE sip_reason = 'node_lost'")[0][0] == 2 * N, 60)
            all_xdrs = time.monotonic() - killed

            messages = wire(trace)
            recoverer = NODE_ADDR[survivor.name]
            for call_id in invites:
                bye = [m for m in messages if m["call_id"] == call_id and m["first"].startswith("BYE ")]
                assert bye and all(m["dir"] == "received" for m in bye), call_id  # cbserver hung up
                assert bye[0]["via"] == recoverer, (call_id, bye[0])
                assert any(m["call_id"] == call_id and m["dir"] == "sent"
                           and m["first"].startswith("SIP/2.0 200") and m["cseq"].endswith("BYE")
                           for m in messages), f"BYE of {call_id} not answered 200"
            rows, last_seen = node_lost_xdrs(pg_dsn, ids, invites)
            seconds_not_billed = killed_db - last_seen
            money_not_billed = []
            for sid, leg, _, amount, *_ in rows:
                # What the leg would have cost billed up to the kill, by its stored rate.
                data = next(x for x in stored[sid]["legs"] if x["leg"] == leg)
                upto_kill = math.ceil(killed_db - data["answered_at"] - 1e-6)
                money_not_billed.append(
                    (sid, pricer_from_dict(data["pricer"]).charge(upto_kill).amount - amount))
            after = dict(query(pg_dsn, balances, (ACCOUNTS,)))
            for account in ACCOUNTS:
                billed = sum((r[3] for r in rows if r[9] == account), Decimal(0))
                assert billed > 0 and before[account] - after[account] == billed, account
            assert query(pg_dsn, "SELECT status, state->'cause'->>'code' FROM callback_sessions "
                                 "WHERE id = ANY(%s)", (ids,)) == [("ended", "node_lost")] * N
            for table, column in (("balance_reservations", "session_id"),
                                  ("callback_slots", "callback_id"), ("callback_recovery", "session_id")):
                assert query(pg_dsn, f"SELECT count(*) FROM {table} WHERE {column} = ANY(%s)",
                             (ids,))[0][0] == 0
            per_call: dict[str, Decimal] = {}
            for sid, money in money_not_billed:
                per_call[sid] = per_call.get(sid, Decimal(0)) + money
            figures = {"recovered_by": who, "callbacks": N, "legs": 2 * N,
                       "seconds_to_last_bye_on_the_wire": round(last_bye, 2),
                       "seconds_to_all_xdrs": round(all_xdrs, 2),
                       "seconds_not_billed_per_call": round(seconds_not_billed, 2),
                       "money_not_billed_per_call_usd": sorted(str(v) for v in per_call.values())}
            print("crash recovery (netns, sipp) figures:", json.dumps(figures))
            (tmp_path / f"crash-recovery-netns-{who}.json").write_text(json.dumps(figures))
            assert last_bye < 30 and all_xdrs < 30, figures
            assert 0 <= seconds_not_billed <= 5.5, figures  # one heartbeat interval, plus scheduling
            assert all(v >= 0 for v in per_call.values()), figures
    finally:
        if sipp.poll() is None:
            sipp.terminate()
            try:
                sipp.wait(5)
            except subprocess.TimeoutExpired:
                sipp.kill()
                sipp.wait()
        sipp_log.close()
