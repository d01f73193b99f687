"""``cb_admit``'s statement, and the delete of an ended callback's recovery row, commit
without waiting for the WAL flush (issue 17 item 1, session 8), on the real PostgreSQL: the
setting lasts only that statement's transaction (the connection's next statement, and every
other store's, commit synchronously as before), and what they wrote is committed and seen by
another node at once."""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted

from cbserver.callback.admission import SlotClaim
from cbserver.db.limits_store import ASYNC_COMMIT, PostgresLimitStore
from cbserver.db.recovery_store import PostgresRecoveryStore
from tests.support.pgconn import pg_connection, running_pool

pytestmark = pytest.mark.integration

WINDOW = 600


@pytest_twisted.ensureDeferred
async def test_the_asynchronous_commit_stays_inside_the_admission_statement(pg_dsn):
    # One connection, so the statement after the admission runs where the admission ran.
    async with running_pool(pg_dsn) as db:
        rows = await db.runQuery(ASYNC_COMMIT + "SELECT current_setting('synchronous_commit')")
        assert rows == [("off",)]
        store = PostgresLimitStore(db)
        start = 1_800_000_000 - 1_800_000_000 % WINDOW
        slot = str(uuid.uuid4())
        claim = SlotClaim(slot, "cbasync1", 2, 60, None)
        counted, peeked, refused, taken = await store.admit(
            [("client", "198.51.100.7")], [], start, start - WINDOW, 1.0, {"client": 5}, claim)
        assert (counted, peeked, refused, taken) == ({"client": (1, 0)}, {}, False, True)
        assert await db.runQuery("SHOW synchronous_commit") == [("on",)]
    # Committed: another connection (another node) sees the hit and the slot.
    with pg_connection(pg_dsn) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT hits FROM rate_limit_counters WHERE kind = 'client' "
                        "AND key = '198.51.100.7' AND window_start = %s", (start,))
            assert cur.fetchall() == [(1,)]
            cur.execute("SELECT account_id FROM callback_slots WHERE slot_id = %s", (slot,))
            assert cur.fetchall() == [("cbasync1",)]


@pytest_twisted.ensureDeferred
async def test_the_ended_callbacks_delete_is_seen_at_once_and_the_setting_does_not_stay(pg_dsn):
    async with running_pool(pg_dsn) as db:
        store = PostgresRecoveryStore(db)
        await store.save("cbasync2", "node-a", db.instance_id, {"session_id": "cbasync2",
                                                                 "legs": []})
        await store.remove("cbasync2")
        assert await db.runQuery("SHOW synchronous_commit") == [("on",)]
    with pg_connection(pg_dsn) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM callback_recovery WHERE session_id = 'cbasync2'")
            assert cur.fetchall() == [(0,)]


def test_cb_admit_sets_the_asynchronous_commit_for_its_own_transaction_only(pg_dsn):
    # No SET statement is sent with the call any more (one statement less per callback);
    # the function's own setting lasts until its transaction commits, then is gone.
    from cbserver.db.limits_store import ADMIT_FN

    assert "SET" not in ADMIT_FN.split("FROM")[0]
    start = 1_800_000_000 - 1_800_000_000 % WINDOW
    params = {"kinds": ["client"], "keys": ["198.51.100.9"], "caps": [5.0], "peek_kinds": [],
              "peek_keys": [], "peek_caps": [], "start": start, "previous": start - WINDOW,
              "elapsed": 1.0, "size": WINDOW, "slot": str(uuid.uuid4()), "account": "cbasync3",
              "slot_cap": 2, "start_timeout": 60, "node_expiry": 60, "callback": None}
    with pg_connection(pg_dsn) as conn:
        with conn.cursor() as cur:
            cur.execute("SHOW synchronous_commit")
            assert cur.fetchall() == [("on",)]
            cur.execute(ADMIT_FN, params)  # inside psycopg2's transaction
            assert any(row[5] for row in cur.fetchall())  # the slot was taken
            cur.execute("SHOW synchronous_commit")
            assert cur.fetchall() == [("off",)]  # still this transaction: off until COMMIT
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SHOW synchronous_commit")
            assert cur.fetchall() == [("on",)]
