"""SQL for callback sessions (their status, shared by every node) and IVR lockouts."""

from __future__ import annotations

import json

from twisted.internet import defer

INSERT = """
INSERT INTO callback_sessions (id, application, mode, account_id, phone, destination, status,
                               state, node, instance_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
UPDATE = """
UPDATE callback_sessions SET status = %s, state = %s, account_id = %s, destination = %s,
       updated_at = now()
 WHERE id = %s
"""
SELECT_STATE = "SELECT state FROM callback_sessions WHERE id = %s"
LOCKED = "SELECT count(*) FROM ivr_lockouts WHERE key = ANY(%s) AND locked_until > now()"
LOCK = """
INSERT INTO ivr_lockouts (key, locked_until) VALUES (%s, now() + make_interval(secs => %s))
ON CONFLICT (key) DO UPDATE SET locked_until = EXCLUDED.locked_until
"""


def insert(db, state: dict, *, phone: str, account_id: str | None, destination: str | None,
           node: str, instance_id: str):
    """Store a new callback's first status."""
    return db.runOperation(INSERT, (state["id"], state["application"], state["mode"], account_id,
                                    phone, destination, state["status"], json.dumps(state), node,
                                    instance_id))


def update(db, state: dict, *, account_id: str | None, destination: str | None):
    """Store a callback's current status."""
    return db.runOperation(UPDATE, (state["status"], json.dumps(state), account_id, destination,
                                    state["id"]))


@defer.inlineCallbacks
def fetch(db, callback_id: str):
    """The stored status dict of a callback, or None."""
    rows = yield db.runQuery(SELECT_STATE, (callback_id,))
    if not rows:
        return None
    state = rows[0][0]
    return json.loads(state) if isinstance(state, str) else state


@defer.inlineCallbacks
def locked(db, keys: list[str]):
    """True when any of ``keys`` is locked out now."""
    rows = yield db.runQuery(LOCKED, (list(keys),))
    return int(rows[0][0]) > 0


@defer.inlineCallbacks
def lock(db, keys: list[str], seconds: float):
    """Lock ``keys`` out for ``seconds``."""
    for key in keys:
        yield db.runOperation(LOCK, (key, seconds))
