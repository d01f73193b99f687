"""SQL for the nodes of a cluster: the probe behind ``/readyz``, and draining (migration 041).

``poll`` is the one query a running node makes for its readiness: the schema's version and
function checksums (compared with the shipped files, as the pool does at connect time) and
whether this node is being drained, with the seconds left to its deadline on the database's
clock. The drain commands are used by ``cbserver node`` (psycopg2 cursor, ``*_sync``) and by
the admin API (the pool); both write the same ``node_drains`` row, which every node reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import defer

from cbserver.db.migrations import MigrationError, check_functions, required_version

POLL = (
    "SELECT (SELECT coalesce(max(version), 0) FROM schema_migrations), "
    "       (SELECT coalesce(json_object_agg(name, checksum), '{}') FROM schema_functions), "
    "       d.node IS NOT NULL, extract(epoch FROM d.deadline - now()) "
    "FROM (SELECT 1) AS one LEFT JOIN node_drains d ON d.node = %s")

# A drain or undrain and its audit row (sql/044) in one statement: both or neither.
_AUDIT = ("a AS (INSERT INTO audit_log (who, source, client, kind, key, action, before, after) "
          "SELECT %(who)s, %(source)s, %(client)s, 'node', d.node, %(action)s, NULL, "
          "jsonb_build_object('deadline', d.deadline) FROM d) ")
DRAIN = (
    "WITH d AS (INSERT INTO node_drains (node, deadline) VALUES (%(node)s, "
    "CASE WHEN %(secs)s::float8 IS NULL "
    "THEN NULL ELSE now() + make_interval(secs => %(secs)s::float8) END) "
    "ON CONFLICT (node) DO UPDATE SET deadline = EXCLUDED.deadline, requested_at = now() "
    "RETURNING node, deadline, requested_at), " + _AUDIT +
    "SELECT node, deadline, requested_at FROM d")

UNDRAIN = ("WITH d AS (DELETE FROM node_drains WHERE node = %(node)s RETURNING node, deadline), "
           + _AUDIT + "SELECT node FROM d")


def _params(node: str, actor, action: str, **more) -> dict:
    """The statement's parameters: the node, then the audit row's actor and action."""
    return {"node": node, "who": actor.who, "source": actor.source,
            "client": actor.client or "", "action": action, **more}

# Every node name known: those with a live process and those drained; per name its live
# processes and the callbacks they run. "Live" is cb_node_alive with %(expiry)s, the cluster's
# one staleness rule ([recovery] stale_after), as in calls_store.NODES: a process the lists show
# as gone is one whose callbacks crash recovery ends.
LIST = (
    "WITH live AS (SELECT n.node, n.instance_id, n.hostname, n.pid, n.version, n.last_seen "
    "              FROM server_nodes n WHERE cb_node_alive(n.instance_id, %(expiry)s)), "
    "names AS (SELECT node FROM live UNION SELECT node FROM node_drains) "
    "SELECT names.node, d.node IS NOT NULL, d.deadline, "
    "       (SELECT count(*) FROM live WHERE live.node = names.node), "
    "       (SELECT coalesce(json_agg(json_build_object('hostname', l.hostname, 'pid', l.pid, "
    "               'version', l.version, 'last_seen', l.last_seen) ORDER BY l.last_seen), '[]') "
    "          FROM live l WHERE l.node = names.node), "
    "       (SELECT count(*) FROM callback_sessions c JOIN live l ON l.instance_id = c.instance_id "
    "         WHERE l.node = names.node AND c.status NOT IN ('ended', 'refused')) "
    "FROM names LEFT JOIN node_drains d ON d.node = names.node ORDER BY names.node")


@dataclass(frozen=True)
class NodePoll:
    """What one ``poll`` found: a schema problem (None: current), the drain state."""

    schema_problem: str | None
    draining: bool
    deadline_in: float | None  # seconds to the drain deadline (negative: passed); None: none


def _poll_result(rows) -> NodePoll:
    """A ``NodePoll`` from the ``POLL`` row, the schema judged against the shipped files."""
    version, functions, draining, deadline_in = rows[0]
    problem = None
    need = required_version()
    if int(version) < need:
        problem = f"schema version {version}, this cbserver needs {need}: run `cbserver db upgrade`"
    else:
        try:
            check_functions(dict(functions or {}), int(version))
        except MigrationError as e:
            problem = str(e)
    return NodePoll(problem, bool(draining), None if deadline_in is None else float(deadline_in))


def poll(db, node: str):
    """Fire with this node's ``NodePoll`` (one query on the pool ``db``)."""
    return db.runQuery(POLL, (node,)).addCallback(_poll_result)


def _node_row(row) -> dict:
    """One ``LIST`` row as a JSON-able dict."""
    node, draining, deadline, processes, details, active = row
    return {"node": node, "draining": bool(draining),
            "deadline": deadline.isoformat() if deadline else None,
            "processes": int(processes), "instances": details, "active_callbacks": int(active)}


def _drained(row) -> dict:
    node, deadline, requested = row
    return {"node": node, "draining": True, "deadline": deadline.isoformat() if deadline else None,
            "requested_at": requested.isoformat()}


@defer.inlineCallbacks
def drain(db, node: str, deadline_seconds: float | None, actor):
    """Mark ``node`` draining (again: a new deadline), audited as made by ``actor``
    (``billing.audit.Actor``); fire with the row as a dict."""
    rows = yield db.runQuery(DRAIN, _params(node, actor, "drain", secs=deadline_seconds))
    return _drained(rows[0])


@defer.inlineCallbacks
def undrain(db, node: str, actor):
    """End the drain of ``node`` (audited); fire with whether it was drained."""
    rows = yield db.runQuery(UNDRAIN, _params(node, actor, "undrain"))
    return bool(rows)


@defer.inlineCallbacks
def list_nodes(db, expiry: int):
    """Fire with every known node name's state (see ``LIST``); ``expiry``: the seconds
    without a heartbeat after which a process is gone, ``[recovery] stale_after``."""
    rows = yield db.runQuery(LIST, {"expiry": expiry})
    return [_node_row(r) for r in rows]


def drain_sync(cur, node: str, deadline_seconds: float | None, actor) -> dict:
    """``drain`` through a psycopg2 cursor (the CLI)."""
    cur.execute(DRAIN, _params(node, actor, "drain", secs=deadline_seconds))
    return _drained(cur.fetchone())


def undrain_sync(cur, node: str, actor) -> bool:
    """``undrain`` through a psycopg2 cursor."""
    cur.execute(UNDRAIN, _params(node, actor, "undrain"))
    return cur.fetchone() is not None


def list_nodes_sync(cur, expiry: int) -> list[dict]:
    """``list_nodes`` through a psycopg2 cursor."""
    cur.execute(LIST, {"expiry": expiry})
    return [_node_row(r) for r in cur.fetchall()]
