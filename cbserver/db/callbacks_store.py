"""SQL for callback sessions (their status, shared by every node), IVR failures and lockouts."""

from __future__ import annotations

import json

from twisted.internet import defer

# Many callbacks' rows in one statement: new ones inserted, known ones brought up to date.
# A final row is never overwritten: a node that comes back after crash recovery closed its
# callbacks (cbserver.callback.recovery) must not bring them back to life.
UPSERT = """
INSERT INTO callback_sessions (id, application, mode, account_id, phone, destination, status,
                               state, node, instance_id)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                     %s::text[], %s::jsonb[], %s::text[], %s::uuid[])
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, state = EXCLUDED.state,
       account_id = EXCLUDED.account_id, destination = EXCLUDED.destination, updated_at = now()
    WHERE callback_sessions.status NOT IN ('ended', 'refused')
"""
# The same upsert with the crash-recovery rows of this batch (cbserver.callback.recovery,
# migration 039) in the same statement, hence the same commit: the rows of callbacks whose leg
# answered since the last batch inserted or replaced (node, instance, snapshot), and those of
# callbacks whose final status this batch stores deleted (a final status means their xDRs are
# stored or spooled: recovery_store.REMOVE_ENDED deletes the same rows). Data-modifying CTEs
# always run to completion; the two id sets are disjoint (the writer sees to it). Issue 17
# item 1: one statement and one commit per batch instead of one each per answered leg and
# per ended callback.
UPSERT_WITH_RECOVERY = f"""
WITH st AS ({UPSERT.strip()}),
saved AS (
    INSERT INTO callback_recovery (session_id, node, instance_id, data)
    SELECT * FROM unnest(%s::text[], %s::text[], %s::uuid[], %s::jsonb[])
    ON CONFLICT (session_id) DO UPDATE SET data = EXCLUDED.data, node = EXCLUDED.node,
           instance_id = EXCLUDED.instance_id, updated_at = now())
DELETE FROM callback_recovery WHERE session_id = ANY(%s::text[])
"""
# With whether its node is lost: the callback is not final and its process has not been seen
# for node_expiry seconds (cb_node_alive), so it is not really in the status it says.
SELECT_STATE = ("SELECT state, status NOT IN ('ended', 'refused') AND NOT cb_node_alive(instance_id, %s), "
                "node FROM callback_sessions WHERE id = %s")
LOCKED = "SELECT count(*) FROM ivr_lockouts WHERE key = ANY(%s) AND locked_until > now()"
LOCK = """
INSERT INTO ivr_lockouts (key, locked_until) VALUES (%s, now() + make_interval(secs => %s))
ON CONFLICT (key) DO UPDATE SET locked_until = EXCLUDED.locked_until
"""
# One more failed identification for a key; a count older than the lockout period restarts.
FAIL = """
INSERT INTO ivr_failures AS f (key, failures, since) VALUES (%(key)s, 1, now())
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN f.since < now() - make_interval(secs => %(seconds)s) THEN 1
                    ELSE f.failures + 1 END,
    since = CASE WHEN f.since < now() - make_interval(secs => %(seconds)s) THEN now()
                 ELSE f.since END
RETURNING failures
"""
FORGET_FAILURES = "DELETE FROM ivr_failures WHERE key = %s"


def upsert(db, rows: list[tuple]):
    """Store callbacks' current status rows in one statement.

    Each row: ``(id, application, mode, account_id, phone, destination, status, state JSON,
    node, instance_id)``; no id twice. A new id is inserted, a known one updated (its
    application, mode, phone, node and creation time stay as first stored).
    """
    columns = [list(c) for c in zip(*rows, strict=True)]
    return db.runOperation(UPSERT, columns)


def upsert_with_recovery(db, rows: list[tuple], saves: list[tuple], drops: list[str]):
    """``upsert`` plus crash-recovery rows, in one statement (one commit).

    ``saves``: ``(session_id, node, instance_id, data JSON)`` rows to insert or replace;
    ``drops``: the ids whose recovery row goes (their final status is in ``rows``). No id in
    both. Without saves nor drops this is ``upsert``.
    """
    if not saves and not drops:
        return upsert(db, rows)
    columns = [list(c) for c in zip(*rows, strict=True)]
    saved = [list(c) for c in zip(*saves, strict=True)] if saves else [[], [], [], []]
    return db.runOperation(UPSERT_WITH_RECOVERY, [*columns, *saved, list(drops)])


@defer.inlineCallbacks
def fetch(db, callback_id: str, node_expiry: int = 10):
    """The stored status dict of a callback, or None.

    A callback still in progress whose node was not seen for ``node_expiry`` seconds gets
    ``"node_lost": true`` (its status is what the node last wrote; crash recovery will end
    it, cbserver.callback.recovery).
    """
    rows = yield db.runQuery(SELECT_STATE, (node_expiry, callback_id))
    if not rows:
        return None
    state = rows[0][0]
    state = json.loads(state) if isinstance(state, str) else state
    if "node" not in state:  # stored before the status named its node: the row's column does
        state = dict(state, node=rows[0][2])
    if rows[0][1]:
        state = dict(state, node_lost=True)
    return state


@defer.inlineCallbacks
def locked(db, keys: list[str]):
    """True when any of ``keys`` is locked out now."""
    rows = yield db.runQuery(LOCKED, (list(keys),))
    return int(rows[0][0]) > 0


@defer.inlineCallbacks
def failed(db, keys: list[str], limit: int, seconds: float):
    """Count one failed identification per key (across calls and nodes); lock out for
    ``seconds`` each key that reached ``limit`` failures. Fire with the keys locked now."""
    locked_now = []
    for key in keys:
        rows = yield db.runQuery(FAIL, {"key": key, "seconds": seconds})
        if int(rows[0][0]) >= limit:
            yield db.runOperation(LOCK, (key, seconds))
            yield db.runOperation(FORGET_FAILURES, (key,))
            locked_now.append(key)
    return locked_now


@defer.inlineCallbacks
def lock(db, keys: list[str], seconds: float):
    """Lock ``keys`` out for ``seconds``."""
    for key in keys:
        yield db.runOperation(LOCK, (key, seconds))
