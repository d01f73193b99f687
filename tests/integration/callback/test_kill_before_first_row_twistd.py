"""``kill -9`` of a real ``twistd cbserver`` after a callback's admission took the account's
slot and its authorization took a hold, but before its first status row was committed.

The request is stopped there from outside: the test holds a lock on ``callback_sessions``
that lets the node read it but not write it, waits until the slot and the holds are in the
database, and kills the node. Its client gets no 202: nothing was promised. Then either

* ``statement_finishes``: as when only the process dies, its database connection's blocked
  INSERT still completes once the lock goes (PostgreSQL finishes a statement whose client
  died). A second node's crash recovery then closes that callback (``node_lost``) and frees
  its slot and holds, with no xDR; or
* ``connection_gone``: the node's database connections die with it (``pg_terminate_backend``),
  no session row is ever written, and the orphans stop counting on their own: the slot once
  the start timeout has passed (until then the account's cap of one refuses a new request
  ``concurrent``), the holds once their process's heartbeat is stale.

Either way a new request for the account is accepted on the second node in the end.
"""

from __future__ import annotations

import json
import signal
import ssl
import threading
import time
import urllib.error
import urllib.request

import psycopg2
import pytest

from cbserver.billing.provision import provision_file_sync
from cbserver.resources import checkout_dir
from tests.support.server import start, terminate, wait_health, write_config

pytestmark = pytest.mark.integration

ACCOUNT, PASSWORD = "cb1818000001", "demo-pass-1"


def post(port: int) -> tuple[int, dict]:
    """POST one extended callback of the demo account; (status, answer)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    body = json.dumps({"mode": "extended", "account": ACCOUNT, "password": PASSWORD,
                       "phone": "5511987654321", "destination": "18185550123"}).encode()
    req = urllib.request.Request(f"https://127.0.0.1:{port}/api/v1/callbacks", data=body,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def scalar(dsn: str, query: str, args=()):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchone()[0]
    finally:
        conn.close()


def node(tmp_path, pg_dsn, name: str):
    """A node's config with the account's cap at one callback; (config, web port)."""
    folder = tmp_path / name
    folder.mkdir()
    return write_config(folder, pg_dsn, **{"concurrent_per_account = 2": "concurrent_per_account = 1",
                                           "stale_after = 15": "stale_after = 10"})


@pytest.mark.parametrize("case", ["statement_finishes", "connection_gone"])
def test_kill_9_between_the_slot_and_the_first_row_promises_nothing_and_frees_both(tmp_path, pg_dsn,
                                                                                 case):
    provision_file_sync(pg_dsn, checkout_dir() / "demo" / "demo.toml")
    config_a, port_a = node(tmp_path, pg_dsn, "a")
    proc = start(config_a)
    blocker = psycopg2.connect(pg_dsn)
    try:
        wait_health(port_a, 200, proc)
        # Reads pass, writes wait: SHARE ROW EXCLUSIVE conflicts with INSERT/UPDATE only.
        with blocker.cursor() as cur:
            cur.execute("LOCK TABLE callback_sessions IN SHARE ROW EXCLUSIVE MODE")
        answer: list = []
        client = threading.Thread(target=lambda: answer.append(_try(post, port_a)), daemon=True)
        client.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            slots = scalar(pg_dsn, "SELECT count(*) FROM callback_slots WHERE account_id = %s",
                           (ACCOUNT,))
            holds = scalar(pg_dsn, "SELECT count(*) FROM balance_reservations WHERE account_id = %s",
                           (ACCOUNT,))
            if slots and holds:
                break
            time.sleep(0.05)
        # The slot, and a hold per leg authorized (both legs of an extended callback).
        assert slots == 1 and holds >= 1, "the request never reached its first status row"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if case == "connection_gone":
            scalar(pg_dsn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                           "AND pid <> %s", (blocker.get_backend_pid(),))
        blocker.rollback()
        client.join(timeout=30)
        assert answer and answer[0][0] != 202, answer  # no 202: nothing was promised
    finally:
        blocker.close()
        if proc.poll() is None:
            proc.kill()
        terminate(proc)
    dead = scalar(pg_dsn, "SELECT instance_id::text FROM balance_reservations WHERE account_id = %s",
                  (ACCOUNT,))
    time.sleep(0.5)  # a blocked statement of the dead node's connection completes now, or never
    rows = scalar(pg_dsn, "SELECT count(*) FROM callback_sessions WHERE account_id = %s", (ACCOUNT,))
    assert rows == (1 if case == "statement_finishes" else 0)

    config_b, port_b = node(tmp_path, pg_dsn, "b")
    proc_b = start(config_b)
    try:
        wait_health(port_b, 200, proc_b)
        if case == "statement_finishes":
            # The survivor's recovery closes the lost callback and frees what it held.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and scalar(
                    pg_dsn, "SELECT count(*) FROM callback_sessions WHERE account_id = %s "
                            "AND status NOT IN ('ended', 'refused')", (ACCOUNT,)):
                time.sleep(0.5)
            assert scalar(pg_dsn, "SELECT state->'cause'->>'code' FROM callback_sessions "
                                  "WHERE account_id = %s", (ACCOUNT,)) == "node_lost"
            assert scalar(pg_dsn, "SELECT count(*) FROM balance_reservations WHERE account_id = %s",
                          (ACCOUNT,)) == 0
            assert scalar(pg_dsn, "SELECT count(*) FROM callback_slots WHERE account_id = %s",
                          (ACCOUNT,)) == 0
            assert scalar(pg_dsn, "SELECT count(*) FROM xdrs") == 0
        else:
            status, refused = post(port_b)
            # The young orphaned slot counts: the cap of one is taken.
            assert status == 429, (status, refused)
            assert "callbacks in progress" in refused["error"]["message"], refused
            assert scalar(pg_dsn, "SELECT cb_node_alive(%s::uuid, 60)", (dead,))  # holds count
            # Time passes for the orphans, on the database's clock (slots) and the dead node's
            # heartbeat (holds), as it would in a minute.
            scalar(pg_dsn, "UPDATE callback_slots SET taken_at = taken_at - 3600 "
                           "WHERE account_id = %s RETURNING 1", (ACCOUNT,))
            scalar(pg_dsn, "UPDATE server_nodes SET last_seen = last_seen - interval '1 hour' "
                           "WHERE instance_id = %s::uuid RETURNING 1", (dead,))
        status, created = post(port_b)
        assert status == 202, created
        # The orphaned holds are gone (purged by the new reservation, or released by recovery);
        # the new callback holds its own.
        assert scalar(pg_dsn, "SELECT count(*) FROM balance_reservations WHERE instance_id = %s::uuid",
                      (dead,)) == 0
        assert scalar(pg_dsn, "SELECT count(*) FROM balance_reservations WHERE account_id = %s "
                              "AND instance_id <> %s::uuid", (ACCOUNT, dead)) == holds
    finally:
        terminate(proc_b)


def _try(fn, *args):
    """``fn(*args)``, or the connection error it raised, as (None, error)."""
    try:
        return fn(*args)
    except (OSError, urllib.error.URLError) as e:
        return None, repr(e)
