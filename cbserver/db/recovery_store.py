"""The SQL of crash recovery (``callback_recovery``, migration 039): see ``cbserver.callback.recovery``.

A row is written when a leg of a callback answers and deleted when the callback ends. A row
is an orphan when its process (``server_nodes.instance_id``) is not this one and either
belongs to an earlier process of this node's name (the node restarted: its predecessor is
dead whatever its heartbeat says) or has not been seen for ``stale_after`` seconds
(``cb_node_alive``). ``settle`` recovers one orphan in one transaction: the row is locked
``FOR UPDATE SKIP LOCKED`` (a survivor racing another skips it), its xDRs are written by
``xdr_store.write_batch`` (balances changed, the legs' holds released, idempotent on
(session, leg)), the session row is closed, the session's other holds and its concurrency
slot are deleted, and the row goes.

A row whose callback's session row is final (``ended``/``refused``) is stale: the callback
ended normally on its node but the delete did not reach PostgreSQL (it was down), or the node
died between the end and the delete. A final status is written only once the callback's xDRs
are in PostgreSQL or in its node's spool (replayed when the node restarts, idempotently), so
such a row is deleted without writing any xDR or sending any BYE: ``remove_ended`` does it for
every node on each sweep, and ``settle`` does it for a row it finds final under its lock (no
double billing, no overbilling up to a later heartbeat).
"""

from __future__ import annotations

import json

from twisted.internet import defer

from cbserver.db import xdr_store
from cbserver.db.limits_store import ASYNC_COMMIT

SAVE = """
INSERT INTO callback_recovery (session_id, node, instance_id, data) VALUES (%s, %s, %s, %s::jsonb)
ON CONFLICT (session_id) DO UPDATE SET data = EXCLUDED.data, node = EXCLUDED.node,
       instance_id = EXCLUDED.instance_id, updated_at = now()
"""
REMOVE = "DELETE FROM callback_recovery WHERE session_id = %s"
# The delete when a callback ended normally, on its own, without waiting for the WAL flush
# (as limits_store.ASYNC_COMMIT; issue 17 item 1, session 8): it follows the callback's xDRs,
# committed synchronously before it, and losing it (PostgreSQL crashing within a fraction of
# a second) leaves the row the sweep already handles when the delete did not reach
# PostgreSQL: removed unbilled once the session row is final (remove_ended), else settled
# with xDR writes that are idempotent on (session, leg). Never inside settle's transaction.
REMOVE_ENDED_CALLBACK = ASYNC_COMMIT + REMOVE
_ORPHAN = ("r.instance_id <> %(me)s::uuid AND (r.node = %(node)s "
           "OR NOT cb_node_alive(r.instance_id, %(stale)s))")
ORPHANS = f"SELECT r.session_id FROM callback_recovery r WHERE {_ORPHAN} ORDER BY r.updated_at"
# The dead process's last heartbeat; a process with no server_nodes row at all is billed up to
# its row's last write.
LOCK = (f"SELECT r.data, extract(epoch FROM coalesce(n.last_seen, r.updated_at))::float8 "
        f"FROM callback_recovery r LEFT JOIN server_nodes n ON n.instance_id = r.instance_id "
        f"WHERE r.session_id = %(sid)s AND {_ORPHAN} FOR UPDATE OF r SKIP LOCKED")
SESSION_STATE = "SELECT state, status FROM callback_sessions WHERE id = %s FOR UPDATE"
FINAL = ("ended", "refused")
# Rows of callbacks whose final status is stored (see the module docstring); locked rows (a
# survivor settling one) are left to it.
REMOVE_ENDED = """
DELETE FROM callback_recovery r WHERE r.session_id IN (
    SELECT r2.session_id FROM callback_recovery r2 JOIN callback_sessions s ON s.id = r2.session_id
     WHERE s.status IN ('ended', 'refused') FOR UPDATE OF r2 SKIP LOCKED)
RETURNING r.session_id
"""
CLOSE_SESSION = ("UPDATE callback_sessions SET status = 'ended', state = %s::jsonb, updated_at = now() "
                 "WHERE id = %s AND status NOT IN ('ended', 'refused')")
RELEASE_HOLDS = "DELETE FROM balance_reservations WHERE session_id = %s"
RELEASE_SLOTS = "DELETE FROM callback_slots WHERE callback_id = %s"
# Callbacks of dead processes with no leg answered (so no recovery row, and nothing to end or
# bill): closed in one statement, their holds and slots released.
_DEAD_SESSION = ("c.instance_id <> %(me)s::uuid AND (c.node = %(node)s "
                 "OR NOT cb_node_alive(c.instance_id, %(stale)s))")
CLOSE_UNANSWERED = f"""
WITH dead AS (
    SELECT c.id FROM callback_sessions c
     WHERE c.status NOT IN ('ended', 'refused') AND {_DEAD_SESSION}
       AND NOT EXISTS (SELECT 1 FROM callback_recovery r WHERE r.session_id = c.id)
     FOR UPDATE OF c SKIP LOCKED),
closed AS (
    UPDATE callback_sessions c SET status = 'ended', updated_at = now(),
           state = c.state || jsonb_build_object('status', 'ended', 'cause', jsonb_build_object(
               'code', 'node_lost', 'sip_status', NULL, 'reason', %(reason)s))
      FROM dead WHERE c.id = dead.id RETURNING c.id),
holds AS (DELETE FROM balance_reservations WHERE session_id IN (SELECT id FROM closed)),
slots AS (DELETE FROM callback_slots WHERE callback_id IN (SELECT id FROM closed))
SELECT id FROM closed ORDER BY id
"""


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


class PostgresRecoveryStore:
    """``IRecoveryStore`` on the pool ``db`` (a ``cbserver.db.pool.Database``).

    The interface is declared by the callback layer, which says this class provides it
    (``cbserver.callback.recovery``): db never imports callback.
    """

    def __init__(self, db):
        self.db = db

    def save(self, session_id, node, instance_id, data):
        """Insert or replace the callback's row."""
        return self.db.runOperation(SAVE, (session_id, node, instance_id, json.dumps(data)))

    def remove(self, session_id):
        """Delete the callback's row."""
        return self.db.runOperation(REMOVE_ENDED_CALLBACK, (session_id,))

    def remove_ended(self):
        """Delete the rows of callbacks whose final status is stored; fire with their ids."""
        d = self.db.runQuery(REMOVE_ENDED)
        return d.addCallback(lambda rows: sorted(r[0] for r in rows))

    def orphans(self, node, instance_id, stale_after):
        """Ids of the callbacks of dead processes, oldest first."""
        d = self.db.runQuery(ORPHANS, {"me": instance_id, "node": node, "stale": int(stale_after)})
        return d.addCallback(lambda rows: [r[0] for r in rows])

    def close_unanswered(self, node, instance_id, stale_after, reason):
        """Close the dead processes' callbacks that had no leg answered; fire with their ids."""
        d = self.db.runQuery(CLOSE_UNANSWERED, {"me": instance_id, "node": node,
                                                "stale": int(stale_after), "reason": reason})
        return d.addCallback(lambda rows: [r[0] for r in rows])

    def settle(self, session_id, node, instance_id, stale_after, settle):
        """Recover one callback in one transaction (see the module docstring)."""
        params = {"sid": session_id, "me": instance_id, "node": node, "stale": int(stale_after)}
        return self.db.runInteraction(_settle, params, settle)


@defer.inlineCallbacks
def _settle(cur, params, settle):
    yield cur.execute(LOCK, params)
    row = cur.fetchone()
    if row is None:
        return None  # recovered already, locked by another survivor, or its node is back
    data, last_seen = _json(row[0]), float(row[1])
    sid = params["sid"]
    yield cur.execute(SESSION_STATE, (sid,))
    found = cur.fetchone()
    if found is not None and found[1] in FINAL:
        # Ended normally; only the delete was lost: its xDRs are its node's (see above).
        yield cur.execute(REMOVE, (sid,))
        return None
    records, state = settle(data, last_seen, _json(found[0]) if found else None)
    yield xdr_store.write_batch(cur, records)
    yield cur.execute(CLOSE_SESSION, (json.dumps(state), sid))
    yield cur.execute(RELEASE_HOLDS, (sid,))
    yield cur.execute(RELEASE_SLOTS, (sid,))
    yield cur.execute(REMOVE, (sid,))
    return data
