"""The SQL of the console's operators, sessions and failed logins (tables of sql/045).

``PostgresOperatorStore`` implements ``cbserver.operators.IOperatorStore`` on the
server's pool; the ``*_sync`` functions are the CLI's (``cbserver operator ...``), on a
blocking cursor. Idle timeouts and lockout periods are judged by the database's clock, so
every node behind a load balancer agrees on them.
"""

from __future__ import annotations

from zope.interface import implementer

from cbserver.operators import IOperatorStore

OPERATOR_COLUMNS = "name, role, password_hash, disabled, created_at, password_changed_at"
GET_OPERATOR = f"SELECT {OPERATOR_COLUMNS} FROM operators WHERE name = %s"
LIST_OPERATORS = f"SELECT {OPERATOR_COLUMNS} FROM operators ORDER BY name"
ADD_OPERATOR = """
INSERT INTO operators (name, role, password_hash) VALUES (%s, %s, %s)
ON CONFLICT (name) DO NOTHING RETURNING name
"""
SET_PASSWORD = """
UPDATE operators SET password_hash = %s, password_changed_at = now() WHERE name = %s
RETURNING name
"""
SET_ROLE = "UPDATE operators SET role = %s WHERE name = %s RETURNING name"
SET_DISABLED = "UPDATE operators SET disabled = %s WHERE name = %s RETURNING name"
# A changed password or a disabled operator ends every session of that operator.
END_OPERATOR_SESSIONS = "DELETE FROM operator_sessions WHERE operator = %s"
OPEN_SESSION = """
INSERT INTO operator_sessions (id_hash, operator, csrf_token, client) VALUES (%s, %s, %s, %s)
"""
# Touch and read in one statement: a session idle for longer than the timeout is not found
# (and is deleted by the prune below), whichever node served it last.
TOUCH_SESSION = """
UPDATE operator_sessions s SET used_at = now()
  FROM operators o
 WHERE s.id_hash = %(id)s AND o.name = s.operator AND NOT o.disabled
   AND s.used_at > now() - make_interval(secs => %(idle)s)
RETURNING s.operator, o.role, s.csrf_token
"""
END_SESSION = "DELETE FROM operator_sessions WHERE id_hash = %s"
PRUNE_SESSIONS = "DELETE FROM operator_sessions WHERE used_at < now() - make_interval(secs => %s)"
PRUNE_FAILURES = ("DELETE FROM operator_login_failures "
                  "WHERE since < now() - make_interval(secs => %s)")
# Failures per key with their period: a count older than the period starts again from 1.
PEEK_FAILURES = """
SELECT key, failures FROM operator_login_failures
 WHERE key = ANY(%(keys)s) AND since > now() - make_interval(secs => %(period)s)
"""
COUNT_FAILURE = """
INSERT INTO operator_login_failures AS f (key, failures, since)
SELECT k, 1, now() FROM unnest(%(keys)s::text[]) AS k
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN f.since <= now() - make_interval(secs => %(period)s) THEN 1
                    ELSE f.failures + 1 END,
    since    = CASE WHEN f.since <= now() - make_interval(secs => %(period)s) THEN now()
                    ELSE f.since END
"""
CLEAR_FAILURES = "DELETE FROM operator_login_failures WHERE key = ANY(%s)"


def _operator(row) -> dict | None:
    """A row of ``operators`` as a dict (None for no row)."""
    if row is None:
        return None
    name, role, password_hash, disabled, created_at, changed_at = row
    return {"name": name, "role": role, "password_hash": password_hash, "disabled": disabled,
            "created_at": created_at, "password_changed_at": changed_at}


@implementer(IOperatorStore)
class PostgresOperatorStore:
    """``IOperatorStore`` on the server's pool ``db``."""

    def __init__(self, db):
        self.db = db

    def get_operator(self, name):
        """See ``IOperatorStore``."""
        return self.db.runQuery(GET_OPERATOR, (name,)).addCallback(
            lambda rows: _operator(rows[0] if rows else None))

    def open_session(self, id_hash, operator, csrf_token, client):
        """See ``IOperatorStore``."""
        return self.db.runOperation(OPEN_SESSION, (id_hash, operator, csrf_token, client))

    def touch_session(self, id_hash, idle_seconds):
        """See ``IOperatorStore``."""
        d = self.db.runQuery(TOUCH_SESSION, {"id": id_hash, "idle": float(idle_seconds)})
        return d.addCallback(lambda rows: (
            {"operator": rows[0][0], "role": rows[0][1], "csrf_token": rows[0][2]}
            if rows else None))

    def end_session(self, id_hash):
        """See ``IOperatorStore``."""
        return self.db.runOperation(END_SESSION, (id_hash,))

    def prune(self, idle_seconds, period):
        """See ``IOperatorStore``."""
        d = self.db.runOperation(PRUNE_SESSIONS, (float(idle_seconds),))
        return d.addCallback(lambda _: self.db.runOperation(PRUNE_FAILURES, (float(period),)))

    def login_failures(self, keys, period):
        """See ``IOperatorStore``."""
        d = self.db.runQuery(PEEK_FAILURES, {"keys": list(keys), "period": float(period)})
        return d.addCallback(lambda rows: {k: int(n) for k, n in rows})

    def count_failure(self, keys, period):
        """See ``IOperatorStore``."""
        return self.db.runOperation(COUNT_FAILURE, {"keys": list(keys), "period": float(period)})

    def clear_failures(self, keys):
        """See ``IOperatorStore``."""
        return self.db.runOperation(CLEAR_FAILURES, (list(keys),))


# -- the CLI's, blocking ------------------------------------------------------------------


def add_operator_sync(cur, name: str, role: str, password_hash: str) -> bool:
    """Add an operator; False if the name is taken."""
    cur.execute(ADD_OPERATOR, (name, role, password_hash))
    return cur.fetchone() is not None


def list_operators_sync(cur) -> list[dict]:
    """Every operator, by name."""
    cur.execute(LIST_OPERATORS)
    return [_operator(r) for r in cur.fetchall()]


def set_password_sync(cur, name: str, password_hash: str) -> bool:
    """Replace an operator's password and end their sessions; False if there is no such name."""
    cur.execute(SET_PASSWORD, (password_hash, name))
    found = cur.fetchone() is not None
    cur.execute(END_OPERATOR_SESSIONS, (name,))
    return found


def set_role_sync(cur, name: str, role: str) -> bool:
    """Change an operator's role; False if there is no such name."""
    cur.execute(SET_ROLE, (role, name))
    return cur.fetchone() is not None


def set_disabled_sync(cur, name: str, disabled: bool) -> bool:
    """Disable (ending their sessions) or enable an operator; False if there is no such name."""
    cur.execute(SET_DISABLED, (disabled, name))
    found = cur.fetchone() is not None
    if disabled:
        cur.execute(END_OPERATOR_SESSIONS, (name,))
    return found
