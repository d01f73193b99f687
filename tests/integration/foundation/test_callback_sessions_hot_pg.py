"""Migration 047 on the real PostgreSQL: a live callback's status updates are HOT updates
(no new index entries), the generated columns ``final`` and ``cause_code`` follow status and
state, and the live list and the cause filter read them with the meaning they had."""

from __future__ import annotations

import json
import uuid

import pytest

from cbserver.db.callbacks_store import UPSERT
from tests.support.pgconn import pg_connection

pytestmark = pytest.mark.integration


def _row(cid: str, status: str, state: dict, instance: str) -> tuple:
    return (cid, "cb", "simple", "acc1", "+15550001", None, status, json.dumps(state), "node-a",
            instance)


def _upsert(cur, rows: list[tuple]) -> None:
    cur.execute(UPSERT, [list(c) for c in zip(*rows, strict=True)])


def test_live_status_updates_are_hot_and_the_final_one_sets_the_index_columns(pg_dsn):
    instance = str(uuid.uuid4())
    with pg_connection(pg_dsn) as conn:
        with conn, conn.cursor() as cur:
            _upsert(cur, [_row("cbhot1", "calling_you", {"status": "calling_you"}, instance),
                          _row("cbhot2", "calling_you", {"status": "calling_you"}, instance)])
        with conn, conn.cursor() as cur:
            # Three progress updates of one row, then its end: counted in this transaction.
            for status in ("answered", "calling_destination", "connected"):
                _upsert(cur, [_row("cbhot1", status, {"status": status}, instance)])
            cur.execute("SELECT pg_stat_get_xact_tuples_updated('callback_sessions'::regclass), "
                        "pg_stat_get_xact_tuples_hot_updated('callback_sessions'::regclass)")
            assert cur.fetchone() == (3, 3)
            _upsert(cur, [_row("cbhot1", "ended", {"status": "ended",
                                                   "cause": {"code": "normal_clearing"}},
                               instance)])
            cur.execute("SELECT pg_stat_get_xact_tuples_updated('callback_sessions'::regclass), "
                        "pg_stat_get_xact_tuples_hot_updated('callback_sessions'::regclass)")
            assert cur.fetchone() == (4, 3)  # the end changes the indexed columns: not HOT
            cur.execute("SELECT id, final, cause_code FROM callback_sessions ORDER BY id")
            assert cur.fetchall() == [("cbhot1", True, "normal_clearing"),
                                      ("cbhot2", False, None)]
            # A cause written before the end is not the cause code of a live row.
            _upsert(cur, [_row("cbhot2", "calling_destination", {"status": "calling_destination",
                                                       "cause": {"code": "busy"}}, instance)])
            cur.execute("SELECT final, cause_code FROM callback_sessions WHERE id = 'cbhot2'")
            assert cur.fetchone() == (False, None)
            # A final row is never overwritten (the upsert's rule), so it stays final.
            _upsert(cur, [_row("cbhot1", "connected", {"status": "connected"}, instance)])
            cur.execute("SELECT status, final FROM callback_sessions WHERE id = 'cbhot1'")
            assert cur.fetchone() == ("ended", True)


def test_the_indexes_read_the_generated_columns(pg_dsn):
    with pg_connection(pg_dsn) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT indexname, indexdef FROM pg_indexes "
                        "WHERE tablename = 'callback_sessions' AND indexdef LIKE '%%WHERE%%' "
                        "ORDER BY indexname")
            defs = dict(cur.fetchall())
        assert set(defs) == {"callback_sessions_cause", "callback_sessions_live",
                             "callback_sessions_open_by_account"}
        for name, definition in defs.items():
            # Neither status nor state: an update that changes only them can stay HOT.
            assert "status" not in definition and "state" not in definition, name
        assert "(cause_code) WHERE final" in defs["callback_sessions_cause"]
        assert "WHERE (NOT final)" in defs["callback_sessions_live"]


def test_the_rewritten_tables_leave_room_for_new_versions(pg_dsn):
    # A HOT update needs room on the row's own page (047, 048).
    with pg_connection(pg_dsn) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT relname, reloptions FROM pg_class WHERE relname IN "
                        "('callback_sessions', 'callback_recovery') ORDER BY relname")
            assert cur.fetchall() == [("callback_recovery", ["fillfactor=60"]),
                                      ("callback_sessions", ["fillfactor=90"])]
