"""End to end with sipp as the carrier: each leg's xDR carries the SIP Call-ID the carrier saw
(read from sipp's own message trace), the one cbserver logged for it ("call placed call_id=…
callback_id=…"), and the node and process that ran it: what an operator needs to match an
xDR with the carrier's CDR and a SIP trace."""

from __future__ import annotations

import re
import time

import psycopg2
import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher

from cbserver.callback.api import CallbackRequest
from tests.support.world import DEMO_PASSWORD, World, ensure

pytestmark = pytest.mark.integration

_BLOCK = re.compile(r"^-{20,} .*$", re.MULTILINE)  # sipp's message file: a dashed line per message


def extended(destination="18185550123", phone="5511987654321"):
    return CallbackRequest(application="Web callback", mode="extended", phone=phone,
                           account="cb1818000001", password=DEMO_PASSWORD, destination=destination,
                           client_address="127.0.0.1")


@pytest.fixture
def world(tmp_path, pg_dsn):
    """A ``World`` whose sipp traces every message, and the "call placed" log lines."""
    w = World(tmp_path, pg_dsn, hold_ms=3000)
    w.sip_log = tmp_path / "carrier-messages.log"
    w.carrier.extra_args = ("-trace_msg", "-message_file", str(w.sip_log))
    w.placed = []

    def observe(event):
        if str(event.get("log_format", "")).startswith("call placed call_id="):
            w.placed.append((event["callback_id"], event["call_id"], event["uri"]))

    globalLogPublisher.addObserver(observe)
    try:
        pytest_twisted.blockon(ensure(w.start()))
        yield w
        pytest_twisted.blockon(ensure(w.stop()))
    finally:
        globalLogPublisher.removeObserver(observe)


def invites_received(w, timeout: float = 5.0) -> dict[str, str]:
    """The Call-ID of each INVITE sipp received, by the user part of its Request-URI."""
    deadline = time.monotonic() + timeout
    while True:
        text = w.sip_log.read_text() if w.sip_log.exists() else ""
        if text or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    out: dict[str, str] = {}
    for block in _BLOCK.split(text):
        lines = [ln.rstrip("\r") for ln in block.strip().splitlines() if ln.strip()]
        if len(lines) < 2 or "message received" not in lines[0] or not lines[1].startswith("INVITE "):
            continue
        user = lines[1].split()[1].removeprefix("sip:").split("@")[0]
        call_id = next(ln.partition(":")[2].strip() for ln in lines[2:]
                       if ln.partition(":")[0].strip().lower() in ("call-id", "i"))
        out.setdefault(user, call_id)  # a re-sent INVITE (digest challenge) keeps its Call-ID
    return out


def placed(w, callback_id: str) -> dict[str, str]:
    """The Call-IDs cbserver logged as placed for ``callback_id``, by the number dialled."""
    return {uri.removeprefix("sip:").split("@")[0]: call_id
            for cid, call_id, uri in w.placed if cid == callback_id}


@pytest_twisted.ensureDeferred
async def test_both_xdrs_carry_the_call_ids_the_carrier_saw_and_the_node(world):
    cid = await world.server.callbacks.request_callback(extended())
    status = await world.wait_end(cid)
    assert status["cause"]["code"] == "lega_hung_up"
    x = world.xdrs(cid)
    on_wire = invites_received(world)
    logged = placed(world, cid)
    a, b = x["A"]["call_id"], x["B"]["call_id"]
    assert a and b and a != b
    assert (a, b) == (on_wire["5511987654321"], on_wire["18185550123"])
    assert (a, b) == (logged["5511987654321"], logged["18185550123"])
    assert {r["node"] for r in x.values()} == {world.cfg.server.node}
    assert {str(r["instance_id"]) for r in x.values()} == {world.server.db.instance_id}
    # The process is the one registered in server_nodes: the xDR joins it.
    with psycopg2.connect(world.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT x.leg, n.node FROM xdrs x JOIN server_nodes n USING (instance_id) "
                    "WHERE x.session_id = %s ORDER BY x.leg", (cid,))
        assert cur.fetchall() == [("A", world.cfg.server.node), ("B", world.cfg.server.node)]
    conn.close()


@pytest_twisted.ensureDeferred
async def test_a_legb_never_placed_has_no_call_id_and_a_failed_lega_keeps_its_own(world):
    cid = await world.server.callbacks.request_callback(extended(phone="4865551234"))
    status = await world.wait_end(cid)
    assert status["cause"]["code"] == "lega_busy"
    x = world.xdrs(cid)
    assert x["A"]["sip_code"] == 486
    assert x["A"]["call_id"] == invites_received(world)["4865551234"] == placed(world, cid)["4865551234"]
    assert x["B"]["call_id"] is None and x["B"]["sip_reason"].startswith("not placed")
    assert str(x["B"]["instance_id"]) == world.server.db.instance_id
