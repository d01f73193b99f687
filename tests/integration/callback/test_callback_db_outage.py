"""PostgreSQL going away while a callback is in progress: nothing lost, nothing charged twice.

End to end in one process, as ``test_callback_e2e.py``: the whole service tree (``World``),
sipp as the carrier over UDP on 127.0.0.1, and a real PostgreSQL, here a private cluster the
test stops (``pg_ctl stop``) and starts again, so that the shared cluster other tests use
is never touched. sipp traces every SIP message it sends or receives, so the tests can tell
from the wire, not from cbserver's own view, that each dialog ended with a BYE answered 200.

Two outages: once both legs are connected (the call goes on, both xDRs wait in the spool and
land once when PostgreSQL is back), and while legA rings (legB's re-authorization cannot
reach the database: the callback ends with ``authorization_failed``, legA is hung up, legB is
never dialled, legA's xDR is still written). Meanwhile new callbacks are refused with 503
``not_ready`` and, once PostgreSQL is back, accepted again.
"""

from __future__ import annotations

import re
import time
import uuid

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads
from twisted.logger import globalLogPublisher

from cbserver.db.migrations import upgrade
from cbserver.devtools.pgcluster import Cluster
from tests.support.api import get_json, post_callback
from tests.support.node import query as node_query
from tests.support.pgprivate import private_cluster
from tests.support.quote import quote
from tests.support.world import DEMO_PASSWORD, World, ensure

pytestmark = pytest.mark.integration

ACCOUNT = "cb1818000001"
PHONE = "5511987654321"
DESTINATION = "18185550123"
EXTENDED = {"mode": "extended", "account": ACCOUNT, "password": DEMO_PASSWORD,
            "phone": PHONE, "destination": DESTINATION}
# The carrier hangs an answered call up after this long: long enough to stop PostgreSQL
# while both legs talk, short enough to keep each test well under a minute.
HOLD_MS = 6000
# The status writer used to give up a row after 5 attempts a second apart; an outage that
# outlasts the end of the call by more than that is what must still leave a sensible status.
OUTAGE_AFTER_END = 7.0
# Failures (tracebacks) logged on purpose on the paths under test: none. legB's
# re-authorization failing because PostgreSQL is away is a one-line warning, not a failure.
EXPECTED_FAILURES = ()


# -- a private cluster this module may stop --------------------------------------------------

@pytest.fixture(scope="module")
def stoppable_cluster():
    """A private PostgreSQL cluster (under /var/tmp) the tests stop and start at will.

    Built once per module (initdb costs seconds); each test gets its own database in it.
    """
    with private_cluster("cbs_cb_outage_") as cluster:
        yield cluster


def _admin(cluster: Cluster, sql: str) -> None:
    """Run one statement on the maintenance database (autocommit: CREATE/DROP DATABASE)."""
    conn = psycopg2.connect(cluster.dsn("postgres"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


class Failures:
    """Collects the failures (tracebacks) logged while a test runs."""

    def __init__(self):
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        # log.failure() events carry log_failure; the reactor's "Unhandled Error" (an
        # exception that escaped into it, logged through twisted.python.log.err) carries
        # failure.
        if "log_failure" in event or "failure" in event:
            self.events.append(event)

    def unexpected(self) -> list[str]:
        """The logged failures that are not deliberate reports of the outage."""
        out = []
        for e in self.events:
            if e.get("log_format") in EXPECTED_FAILURES:
                continue
            f = e.get("log_failure") or e.get("failure")
            out.append(f"{e.get('why') or e.get('log_format')}: {f.getErrorMessage()}")
        return out


@pytest.fixture
def world(stoppable_cluster, tmp_path):
    """A ``World`` on a fresh database of the stoppable cluster, sipp tracing its messages."""
    cluster = stoppable_cluster
    cluster.start()  # idempotent; a failed earlier test may have left it stopped
    name = f"cbs_o_{uuid.uuid4().hex[:12]}"
    _admin(cluster, f'CREATE DATABASE "{name}"')
    dsn = cluster.dsn(name)
    upgrade(dsn, report=lambda _line: None)
    w = World(tmp_path, dsn, hold_ms=HOLD_MS)
    w.cluster = cluster
    # [database] retry_max: reconnect within a second of PostgreSQL coming back rather than
    # after the default back-off of up to 30 s, to keep the test short.
    w.server.db.retry_max = 1.0
    w.sip_log = tmp_path / "carrier-messages.log"
    w.carrier.extra_args = ("-trace_msg", "-message_file", str(w.sip_log))
    failures = Failures()
    globalLogPublisher.addObserver(failures)
    try:
        pytest_twisted.blockon(ensure(w.start()))
        w.failures = failures
        yield w
    finally:
        try:
            cluster.start()  # a test that failed mid-outage: let the server stop normally
            if w.server.running:
                pytest_twisted.blockon(ensure(w.stop()))
        finally:
            globalLogPublisher.removeObserver(failures)
            _admin(cluster, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- helpers ---------------------------------------------------------------------------------

async def sleep(seconds: float) -> None:
    """Let the reactor run for ``seconds``."""
    await task.deferLater(reactor, seconds, lambda: None)


async def wait_for(what: str, predicate, timeout: float = 20.0) -> None:
    """Poll ``predicate`` (plain or async) until true; fail naming ``what`` after ``timeout``."""
    deadline = reactor.seconds() + timeout
    while True:
        value = predicate()
        if hasattr(value, "__await__"):
            value = await value
        if value:
            return
        assert reactor.seconds() < deadline, f"timed out waiting for {what}"
        await sleep(0.05)


async def wait_api_status(w, cb_id, wanted: str, timeout: float = 20.0) -> dict:
    """Poll the JSON API until the callback's status is ``wanted``; return the body."""
    seen = []

    async def reached():
        code, body = await get_json(w, f"/api/v1/callbacks/{cb_id}")
        seen.append((code, body.get("status") or body.get("error", {}).get("code")))
        return code == 200 and body["status"] == wanted and body

    deadline = reactor.seconds() + timeout
    while reactor.seconds() < deadline:
        body = await reached()
        if body:
            return body
        await sleep(0.1)
    raise AssertionError(f"callback {cb_id} never reported {wanted} (last seen {seen[-3:]})")


def stop_db(w, mode: str):
    """Stop the cluster in a thread (pg_ctl waits for the server to be gone)."""
    return threads.deferToThread(w.cluster.stop, mode)


def start_db(w):
    """Start the cluster again in a thread."""
    return threads.deferToThread(w.cluster.start)


def query(w, sql: str, params=()):
    """One query on the test's database (plain psycopg2, outside the server)."""
    return node_query(w.dsn, sql, params)


_BLOCK = re.compile(r"^-{20,} .*$", re.MULTILINE)


def sip_messages(w, timeout: float = 5.0) -> list[dict]:
    """Every SIP message sipp traced: {"dir": "sent"/"received", "first", "call_id", "cseq"}.

    sipp's message file holds blocks led by a dashed line with a timestamp, then
    "UDP message sent|received ...", a blank line and the message itself.
    """
    text = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not text:
        text = w.sip_log.read_text() if w.sip_log.exists() else ""
        if not text:
            time.sleep(0.1)
    out = []
    for block in _BLOCK.split(text):
        lines = [ln.rstrip("\r") for ln in block.strip().splitlines()]
        if len(lines) < 3 or "message" not in lines[0]:
            continue
        direction = "sent" if " sent" in lines[0] else "received"
        body = [ln for ln in lines[1:] if ln.strip()]
        headers = {}
        for ln in body[1:]:
            name, _, value = ln.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        out.append({"dir": direction, "first": body[0], "call_id": headers.get("call-id", ""),
                    "cseq": headers.get("cseq", "")})
    return out


def bye_of(messages: list[dict], call_id: str) -> str:
    """Who ended dialog ``call_id`` with a BYE answered 200: "carrier" or "cbserver".

    Fails when the dialog saw no BYE, or no 200 answering it, on the wire.
    """
    byes = [m for m in messages if m["call_id"] == call_id and m["first"].startswith("BYE ")]
    assert byes, f"no BYE on the wire for dialog {call_id}"
    sender = "carrier" if byes[0]["dir"] == "sent" else "cbserver"
    answer_dir = "received" if sender == "carrier" else "sent"
    assert any(m["call_id"] == call_id and m["dir"] == answer_dir
               and m["first"].startswith("SIP/2.0 200") and m["cseq"].endswith("BYE")
               for m in messages), f"the BYE of dialog {call_id} was never answered 200"
    return sender


def xdrs(w, cb_id) -> dict:
    """The callback's xDR rows by leg, and how many rows there are."""
    rows = w.xdrs(cb_id)
    count = query(w, "SELECT count(*) FROM xdrs WHERE session_id = %s", (cb_id,))[0][0]
    return rows, count


async def refused_while_away(w) -> None:
    """A new callback request is refused 503 not_ready (a JSON error), not 500."""
    code, body, _ = await post_callback(w, EXTENDED)
    assert code == 503, body
    assert body["error"]["code"] == "not_ready"


# -- the tests -------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_database_stopped_while_connected_loses_nothing_and_charges_once(world):
    w = world
    before = w.balance(ACCOUNT)
    code, body, _ = await post_callback(w, EXTENDED)
    assert code == 202, body
    cb_id = body["id"]
    connected = await wait_api_status(w, cb_id, "connected")
    assert connected["legs"]["A"]["state"] == "answered" == connected["legs"]["B"]["state"]
    session = w.server.callbacks.sessions[cb_id]
    dialogs = {"A": session.a.call.call_id, "B": session.b.call.call_id}

    await stop_db(w, "fast")
    await refused_while_away(w)
    # The call goes on: the carrier still talks on both legs until its hold time ends it.
    code, body = await get_json(w, f"/api/v1/callbacks/{cb_id}")
    assert code == 200 and body["status"] == "connected"
    ended = await wait_api_status(w, cb_id, "ended", timeout=HOLD_MS / 1000 + 10)
    # legA answered first, so the carrier's hold ends it first.
    assert ended["cause"]["code"] == "lega_hung_up"
    assert ended["charges"]["currency"] == "USD"
    # Both legs' xDRs wait in the spool: acknowledged, not in PostgreSQL (it is away).
    assert w.server.xdr.health()["depth"] == 2
    assert w.server.xdr.health()["mode"] == "spooling"
    # PostgreSQL stays away well past the end of the call; the status must not be lost.
    await sleep(OUTAGE_AFTER_END)
    code, body = await get_json(w, f"/api/v1/callbacks/{cb_id}")
    assert code == 200 and body["status"] == "ended", body
    await refused_while_away(w)

    await start_db(w)
    await wait_for("the spool to be replayed",
                   lambda: w.server.xdr.health() == {**w.server.xdr.health(), "depth": 0,
                                                     "mode": "direct"})
    # Once its final status is stored this node forgets it; any node then reads "ended".
    await wait_for("the final status to be stored",
                   lambda: cb_id not in w.server.callbacks.sessions
                   and query(w, "SELECT status FROM callback_sessions WHERE id = %s",
                             (cb_id,)) == [("ended",)])
    # The crash-recovery row, whose delete failed while PostgreSQL was away, goes too (the
    # recovery sweep removes rows of ended callbacks): it must not stay for ever.
    await wait_for("the recovery row to be removed",
                   lambda: query(w, "SELECT count(*) FROM callback_recovery WHERE session_id = %s",
                                 (cb_id,)) == [(0,)], timeout=30)
    code, body = await get_json(w, f"/api/v1/callbacks/{cb_id}")
    assert code == 200 and body["status"] == "ended"
    assert body["cause"]["code"] == "lega_hung_up"
    # The account's concurrency slot is free again (its callback's row is final).
    assert query(w, "SELECT count(*) FROM callback_slots s WHERE s.account_id = %s AND "
                    "cb_slot_live(s.callback_id, s.taken_at, 0, 60)", (ACCOUNT,)) == [(0,)]

    rows, count = xdrs(w, cb_id)
    assert count == 2 and set(rows) == {"A", "B"}
    a, b = rows["A"], rows["B"]
    assert a["duration"] >= HOLD_MS // 1000 - 1 and b["duration"] >= 1
    expected = (quote(w, PHONE, a["duration"], a["connect_time"], account=ACCOUNT)
                + quote(w, DESTINATION, b["duration"], b["connect_time"], account=ACCOUNT))
    assert a["amount"] + b["amount"] == expected > 0
    assert body["charges"]["total"] == format(expected, "f")
    assert before - w.balance(ACCOUNT) == expected
    assert query(w, "SELECT count(*) FROM balance_reservations WHERE session_id = %s",
                 (cb_id,)) == [(0,)]

    # Accepted again now that PostgreSQL is back.
    code, again, _ = await post_callback(w, EXTENDED)
    assert code == 202, again
    await wait_api_status(w, again["id"], "connected")

    # On the wire: the carrier hung legA up, cbserver then hung legB up; both BYEs answered.
    messages = sip_messages(w)
    assert bye_of(messages, dialogs["A"]) == "carrier"
    assert bye_of(messages, dialogs["B"]) == "cbserver"
    assert w.failures.unexpected() == []


@pytest_twisted.ensureDeferred
async def test_database_stopped_while_lega_rings_ends_with_authorization_failed(world):
    w = world
    before = w.balance(ACCOUNT)
    code, body, _ = await post_callback(w, EXTENDED)
    assert code == 202, body
    cb_id = body["id"]
    # legA rings for a second at the carrier before it answers; PostgreSQL is gone by then,
    # so legB's re-authorization (when legA answers) cannot reach it.
    started = reactor.seconds()
    await stop_db(w, "immediate")
    assert reactor.seconds() - started < 0.9, "PostgreSQL took too long to stop for this test"
    assert w.server.callbacks.sessions[cb_id].a.state in ("calling", "ringing")
    session = w.server.callbacks.sessions[cb_id]
    await refused_while_away(w)

    ended = await wait_api_status(w, cb_id, "ended", timeout=30)
    assert ended["cause"]["code"] == "authorization_failed"
    assert ended["cause"]["description"] == "the balance could not be checked"
    assert ended["legs"]["A"]["sip_status"] == 200
    assert ended["legs"]["B"]["state"] != "answered" and session.b.call is None
    assert w.server.xdr.health()["depth"] == 2  # legA's xDR and legB's "not placed" one
    await sleep(OUTAGE_AFTER_END)
    code, body = await get_json(w, f"/api/v1/callbacks/{cb_id}")
    assert code == 200 and body["status"] == "ended", body

    await start_db(w)
    await wait_for("the spool to be replayed",
                   lambda: w.server.xdr.health() == {**w.server.xdr.health(), "depth": 0,
                                                     "mode": "direct"})
    await wait_for("the final status to be stored",
                   lambda: query(w, "SELECT status FROM callback_sessions WHERE id = %s",
                                 (cb_id,)) == [("ended",)])
    code, body = await get_json(w, f"/api/v1/callbacks/{cb_id}")
    assert code == 200 and body["cause"]["code"] == "authorization_failed"

    rows, count = xdrs(w, cb_id)
    assert count == 2 and set(rows) == {"A", "B"}
    a, b = rows["A"], rows["B"]
    # legA was answered (it heard why the call failed): billed exactly once, by the callback
    # tariff: legB was never placed, and CALLBACK_FAIL (special_charge_if_legb_fails) is for
    # a legB tried and failed (issue 13).
    assert a["duration"] >= 1 and a["sip_code"] == 200
    assert a["access_code"] == "WEBCALLBACK"
    expected = quote(w, PHONE, a["duration"], a["connect_time"], account=ACCOUNT,
                     access_code="WEBCALLBACK")
    assert a["amount"] == expected > 0
    assert b["amount"] == 0 and b["duration"] == 0
    assert b["sip_reason"] == "not placed: authorization_failed"
    assert before - w.balance(ACCOUNT) == expected
    assert query(w, "SELECT count(*) FROM balance_reservations WHERE session_id = %s",
                 (cb_id,)) == [(0,)]

    # On the wire: legA alone was dialled, and cbserver hung it up.
    messages = sip_messages(w)
    invites = {m["call_id"] for m in messages
               if m["dir"] == "received" and m["first"].startswith("INVITE ")}
    assert invites == {session.a.call.call_id}
    assert bye_of(messages, session.a.call.call_id) == "cbserver"

    # The stop was a crash (immediate) within a second of the admission's asynchronous
    # commit (cb_admit, docs/billing.md "PostgreSQL crashing right after an admission"):
    # the pool reconnected by itself and the next callback is admitted and connects.
    code, again, _ = await post_callback(w, EXTENDED)
    assert code == 202, again
    await wait_api_status(w, again["id"], "connected")
    assert w.failures.unexpected() == []
