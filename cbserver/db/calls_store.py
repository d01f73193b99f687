"""SQL of the operator console (issue 15, "Calls"): xDRs, callbacks, nodes, reports, hang-ups.

``PostgresCallsStore`` implements ``ICallsStore`` (declared by ``cbserver.callback.console``,
which says so: db never imports the callback layer). Filters arrive parsed
(``cbserver.callback.consolefilters``) and go into SQL as bound parameters only.

The xDR export streams through a connection of its own (not the pool's, which the calls
need), in one read-only transaction over a server-side cursor (``DECLARE … CURSOR``; psycopg2
has no named cursors on an asynchronous connection, the SQL statement is the same thing),
``FETCH``ing ``batch`` rows at a time. The next batch is fetched only once the consumer's
Deferred for the previous one fired: a client that reads slowly holds one batch in memory,
never the month. Indexes: migration 042.
"""

from __future__ import annotations

from twisted.internet import defer
from txpostgres import txpostgres

FIRST_BATCH = 100  # rows of an export's first FETCH
_TS = "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'"


def _ts(expr: str) -> str:
    return f"to_char({expr} AT TIME ZONE 'UTC', {_TS})"


XDR_COLUMNS = ("id", "session_id", "leg", "account_id", "customer_id", "cli", "cld",
               "access_code", "node", "tariff_name", "prefix", "peak", "connect_time",
               "disconnect_time", "duration", "charged_seconds", "amount", "currency",
               "sip_code", "sip_reason", "trigger_mode", "call_id", "cause")


# XDR_COLUMNS in order: (SQL expression, whether its text may need CSV quoting).
_XDR_EXPRS = (("x.id", False), ("x.session_id", True), ("x.leg", False), ("x.account_id", True),
              ("x.customer_id", True), ("x.cli", True), ("x.cld", True), ("x.access_code", True),
              ("x.node", True), ("x.tariff_name", True), ("x.prefix", True), ("x.peak", False),
              (_ts("x.connect_time"), False), (_ts("x.disconnect_time"), False),
              ("x.duration", False), ("x.charged_seconds", False), ("x.amount::text", False),
              ("x.currency::text", True), ("x.sip_code", False), ("x.sip_reason", True),
              ("x.trigger_mode", True), ("x.call_id", True), ("s.state -> 'cause' ->> 'code'", True))
_XDR_FROM = " FROM xdrs x LEFT JOIN callback_sessions s ON s.id = x.session_id"


def _csv_cell(expr: str, quote: bool) -> str:
    """SQL for one CSV cell (RFC 4180, as Python's csv module writes it): NULL empty; a text
    holding a quote, comma, CR or LF quoted with its quotes doubled (the regex's \\r and \\n
    are the regex engine's escapes, not the string's)."""
    if not quote:
        return f"coalesce(({expr})::text, '')"
    return (f"CASE WHEN ({expr}) ~ '[\",\\r\\n]' THEN '\"' || replace({expr}, '\"', '\"\"') || '\"' "
            f"ELSE coalesce({expr}, '') END")


def _xdr_select(csv: str | None) -> str:
    """The select list: columns (``csv`` None), columns with ``peak`` as text ("columns"), or
    each row as one CSV line built by PostgreSQL ("lines")."""
    if csv == "lines":
        cells = " || ',' || ".join(_csv_cell(e, q) for e, q in _XDR_EXPRS)
        return f"SELECT {cells} || E'\\r\\n'" + _XDR_FROM
    exprs = [("x.peak::text" if e == "x.peak" and csv else e) for e, _ in _XDR_EXPRS]
    return "SELECT " + ", ".join(exprs) + _XDR_FROM


def xdr_query(f, csv: str | None = None, paged: bool = True) -> tuple[str, dict]:
    """The SQL and parameters of filter ``f`` (newest first; ``paged``: one page and one row
    more, to know whether there is a next page). ``csv``: see ``_xdr_select``."""
    where, params = [], {}
    for column, name, value in (("x.account_id", "account", f.account),
                                ("x.customer_id", "customer", f.customer),
                                ("x.node", "node", f.node), ("x.leg", "leg", f.leg)):
        if value is not None:
            where.append(f"{column} = %({name})s")
            params[name] = value
    if f.start is not None:
        where.append("x.disconnect_time >= %(start)s")
        params["start"] = f.start
    if f.end is not None:
        where.append("x.disconnect_time < %(end)s")
        params["end"] = f.end
    if f.prefix is not None:
        # Digits only (checked), so no LIKE wildcard can be in it.
        where.append("x.cld LIKE %(prefix)s")
        params["prefix"] = f.prefix + "%"
    if f.cause is not None:
        # cause_code and final (sql/047) are the index's columns: state -> 'cause' ->> 'code'
        # of a row whose status is ended or refused.
        where.append("s.cause_code = %(cause)s AND s.final")
        params["cause"] = f.cause
    if paged and f.after is not None:
        where.append("(x.disconnect_time, x.id) < (%(after_t)s, %(after_id)s)")
        params["after_t"], params["after_id"] = f.after
    sql = _xdr_select(csv)
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY x.disconnect_time DESC, x.id DESC"
    if paged:
        sql += " LIMIT %(limit)s"
        params["limit"] = f.limit + 1
    return sql, params


# Not ended nor refused (sql/047's generated column, which the live list's index uses).
_LIVE = "NOT c.final"
CALLBACK_COLUMNS = ("id", "application", "mode", "account_id", "phone", "destination", "status",
                    "node", "instance_id", "node_alive", "created_at", "updated_at", "age_seconds",
                    "state", "recovery", "now", "hangup_requested_at", "cursor_at")
_CALLBACK_SELECT = (
    f"SELECT c.id, c.application, c.mode, c.account_id, c.phone, c.destination, c.status, c.node, "
    f"c.instance_id::text, cb_node_alive(c.instance_id, %(expiry)s), {_ts('c.created_at')}, "
    f"{_ts('c.updated_at')}, extract(epoch FROM now() - c.created_at)::float8, c.state, r.data, "
    f"extract(epoch FROM now())::float8, {_ts('h.requested_at')}, "
    # The keyset cursor needs created_at exactly (microseconds), not as shown.
    f"to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
    f"FROM callback_sessions c LEFT JOIN callback_recovery r ON r.session_id = c.id "
    f"LEFT JOIN callback_hangups h ON h.session_id = c.id")

NODE_COLUMNS = ("node", "instance_id", "hostname", "pid", "version", "alive", "calls_running",
                "started_at", "last_seen", "stopped_at")
# Every live process, and the latest process of each node name (alive or not).
NODES = f"""
SELECT n.node, n.instance_id::text, n.hostname, n.pid, n.version,
       cb_node_alive(n.instance_id, %(expiry)s) AS alive,
       (SELECT count(*) FROM callback_sessions c
         WHERE c.instance_id = n.instance_id AND {_LIVE}),
       {_ts('n.started_at')}, {_ts('n.last_seen')}, {_ts('n.stopped_at')}
  FROM server_nodes n
 WHERE cb_node_alive(n.instance_id, %(expiry)s)
    OR n.instance_id = (SELECT m.instance_id FROM server_nodes m WHERE m.node = n.node
                         ORDER BY m.last_seen DESC LIMIT 1)
 ORDER BY n.node, n.last_seen DESC
"""

_RANGE = ("x.disconnect_time >= %(start)s AND x.disconnect_time < %(end)s "
          "AND (%(account)s::text IS NULL OR x.account_id = %(account)s::text)")
REPORTS = {
    # Callbacks (each has exactly one legA row) and revenue per UTC day and currency.
    "daily": (("day", "currency", "callbacks", "connected", "minutes", "charged_minutes", "revenue"), f"""
SELECT (x.disconnect_time AT TIME ZONE 'UTC')::date::text, x.currency::text,
       count(*) FILTER (WHERE x.leg = 'A'),
       count(*) FILTER (WHERE x.leg = 'B' AND x.duration > 0),
       round(sum(x.duration) / 60.0, 2)::text, round(sum(x.charged_seconds) / 60.0, 2)::text,
       sum(x.amount)::text
  FROM xdrs x WHERE {_RANGE} GROUP BY 1, 2 ORDER BY 1, 2"""),
    # legB per rate prefix: attempts (placed), answered, ASR, ACD, and the post-dial delay
    # (INVITE to first 18x or 2xx) the callback's status recorded.
    "destinations": (("prefix", "attempts", "answered", "asr_percent", "acd_seconds",
                      "pdd_seconds", "minutes", "revenue"), f"""
SELECT coalesce(x.prefix, ''), count(*), count(*) FILTER (WHERE x.duration > 0),
       round(100.0 * count(*) FILTER (WHERE x.duration > 0) / count(*), 1)::text,
       coalesce(round(avg(x.duration) FILTER (WHERE x.duration > 0), 1), 0)::text,
       round(avg((s.state #>> '{{legs,B,post_dial_delay}}')::numeric), 3)::text,
       round(sum(x.duration) / 60.0, 2)::text, sum(x.amount)::text
  FROM xdrs x LEFT JOIN callback_sessions s ON s.id = x.session_id
 WHERE x.leg = 'B' AND x.sip_code IS NOT NULL AND {_RANGE}
 GROUP BY 1 ORDER BY 2 DESC, 1"""),
    # Outcomes: callbacks per cause code, with what they were charged.
    "causes": (("cause", "currency", "callbacks", "charged"), f"""
SELECT coalesce(s.state -> 'cause' ->> 'code', 'unknown'), x.currency::text,
       count(*) FILTER (WHERE x.leg = 'A'), sum(x.amount)::text
  FROM xdrs x LEFT JOIN callback_sessions s ON s.id = x.session_id
 WHERE {_RANGE} GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"""),
}

SESSION_FOR_HANGUP = ("SELECT status, instance_id::text FROM callback_sessions WHERE id = %s "
                      "FOR UPDATE")
# The request and its audit row (sql/044) in one statement; a repeated request (the row is
# there already) changes nothing and writes no audit row.
REQUEST_HANGUP = ("WITH r AS (INSERT INTO callback_hangups (session_id, instance_id, requested_by) "
                  "VALUES (%s, %s, %s) ON CONFLICT (session_id) DO NOTHING RETURNING session_id) "
                  "INSERT INTO audit_log (who, source, client, kind, key, action, before, after) "
                  "SELECT %s, %s, %s, 'callback', r.session_id, 'hangup', NULL, "
                  "jsonb_build_object('requested_by', %s::text) FROM r")
PENDING_HANGUPS = ("SELECT session_id FROM callback_hangups WHERE instance_id = %s "
                   "AND handled_at IS NULL ORDER BY requested_at")
HANGUP_HANDLED = "UPDATE callback_hangups SET handled_at = now() WHERE session_id = ANY(%s)"


class PostgresCallsStore:
    """``ICallsStore`` on the pool ``db`` (a ``cbserver.db.pool.Database``)."""

    def __init__(self, db):
        self.db = db

    def xdr_page(self, f):
        """Up to ``f.limit + 1`` rows (``XDR_COLUMNS``) of filter ``f``, newest first."""
        sql, params = xdr_query(f)
        return self.db.runQuery(sql, params)

    @defer.inlineCallbacks
    def stream_xdrs(self, f, on_batch, batch: int = 2000):
        """Every row of ``f`` as a CSV line (1-tuples), ``batch`` at a time, to ``on_batch(rows)``
        (which may return a Deferred: the next FETCH waits for it); fires with the row count."""
        sql, params = xdr_query(f, csv="lines", paged=False)
        conn = txpostgres.Connection(reactor=self.db.reactor)
        yield conn.connect(self.db.dsn, connect_timeout=10)
        total = 0
        try:
            # One snapshot for the whole export: rows inserted meanwhile are not half in it.
            yield conn.runOperation("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            # A plan that starts at once (newest rows through the index), not one that sorts
            # the whole selection before the first row: the client sees bytes at once, and
            # PostgreSQL needs no work memory (nor temporary files) for a month's sort.
            yield conn.runOperation("SET LOCAL cursor_tuple_fraction = 0.001")
            # No JIT: compiling the line-building expressions costs 0.3-0.5 s before the first
            # row of a large export (measured on 1,000,000 rows), and gains nothing clear over
            # the whole of it.
            yield conn.runOperation("SET LOCAL jit = off")
            yield conn.runOperation("DECLARE xdr_export NO SCROLL CURSOR FOR " + sql, params)
            size = min(FIRST_BATCH, batch)  # a small first batch: the first bytes sooner
            while True:
                rows = yield conn.runQuery(f"FETCH FORWARD {int(size)} FROM xdr_export")
                if rows:
                    total += len(rows)
                    yield on_batch(rows)
                if len(rows) < size:
                    break
                size = batch
            yield conn.runOperation("COMMIT")
        finally:
            # Closing ends the transaction (and the cursor) if anything above failed.
            conn.close()
        return total

    def callbacks(self, state: str, limit: int, after, account, node, expiry: int):
        """Live (newest first by creation) or past callbacks; ``limit + 1`` rows."""
        where = [_LIVE if state == "live" else f"NOT ({_LIVE})"]
        params = {"expiry": expiry, "limit": limit + 1}
        if account is not None:
            where.append("c.account_id = %(account)s")
            params["account"] = account
        if node is not None:
            where.append("c.node = %(node)s")
            params["node"] = node
        if after is not None:
            where.append("(c.created_at, c.id) < (%(after_t)s, %(after_id)s)")
            params["after_t"], params["after_id"] = after
        sql = (f"{_CALLBACK_SELECT} WHERE {' AND '.join(where)} "
               f"ORDER BY c.created_at DESC, c.id DESC LIMIT %(limit)s")
        return self.db.runQuery(sql, params)

    @defer.inlineCallbacks
    def callback(self, callback_id: str, expiry: int):
        """(callback row, its xDR rows) or None."""
        rows = yield self.db.runQuery(f"{_CALLBACK_SELECT} WHERE c.id = %(id)s",
                                      {"id": callback_id, "expiry": expiry})
        if not rows:
            return None
        sql, params = xdr_query(_SessionFilter(), paged=False)
        xdrs = yield self.db.runQuery(sql.replace(" ORDER BY", " WHERE x.session_id = %(sid)s ORDER BY"),
                                      {**params, "sid": callback_id})
        return rows[0], sorted(xdrs, key=lambda r: r[2])

    def request_hangup(self, callback_id: str, requested_by: str, actor):
        """Record a hang-up request for a callback in progress, audited as made by ``actor``
        (``billing.audit.Actor``): fire with ``"unknown"``, ``"ended"`` (final already), or
        ``"requested"`` (stored now, or before)."""
        return self.db.runInteraction(_request_hangup, callback_id, requested_by, actor)

    def pending_hangups(self, instance_id: str):
        """Ids of the callbacks of process ``instance_id`` an operator asked to hang up."""
        d = self.db.runQuery(PENDING_HANGUPS, (instance_id,))
        return d.addCallback(lambda rows: [r[0] for r in rows])

    def hangups_handled(self, ids):
        """Mark hang-up requests as handled."""
        return self.db.runOperation(HANGUP_HANDLED, (list(ids),))

    def nodes(self, expiry: int):
        """``NODE_COLUMNS`` rows: every live process and each node name's latest."""
        return self.db.runQuery(NODES, {"expiry": expiry})

    def report(self, name: str, start, end, account):
        """(columns, rows) of report ``name`` (``REPORTS``)."""
        columns, sql = REPORTS[name]
        d = self.db.runQuery(sql, {"start": start, "end": end, "account": account})
        return d.addCallback(lambda rows: (columns, rows))


class _SessionFilter:
    """No filter at all (a callback's own xDRs are selected by session)."""

    account = customer = node = leg = start = end = prefix = cause = after = None
    limit = 2


def _hangup_params(callback_id, instance_id, requested_by, actor) -> tuple:
    """The parameters of ``REQUEST_HANGUP``: the request, then its audit row's actor."""
    return (callback_id, instance_id, requested_by, actor.who, actor.source, actor.client or "",
            requested_by)


@defer.inlineCallbacks
def _request_hangup(cur, callback_id, requested_by, actor):
    yield cur.execute(SESSION_FOR_HANGUP, (callback_id,))
    row = cur.fetchone()
    if row is None:
        return "unknown"
    if row[0] in ("ended", "refused"):
        return "ended"
    yield cur.execute(REQUEST_HANGUP, _hangup_params(callback_id, row[1], requested_by, actor))
    return "requested"


class SyncCallsStore:
    """``ICallsStore`` on a blocking psycopg2 cursor (``cbserver.db.sync.sync_cursor``), for
    the CLI: the same SQL, each answer an already fired Deferred, so the same ``Console``
    shapes it without a reactor running."""

    def __init__(self, cur):
        self.cur = cur

    def _rows(self, sql, params):
        self.cur.execute(sql, params)
        return defer.succeed(self.cur.fetchall())

    def xdr_page(self, f):
        """As ``PostgresCallsStore.xdr_page``."""
        return self._rows(*xdr_query(f))

    def stream_xdrs(self, f, on_batch, batch: int = 2000):
        """As ``PostgresCallsStore.stream_xdrs``, through a named (server-side) cursor."""
        sql, params = xdr_query(f, csv="lines", paged=False)
        total = 0
        self.cur.execute("SET LOCAL cursor_tuple_fraction = 0.001")  # as the pool's export
        self.cur.execute("SET LOCAL jit = off")
        with self.cur.connection.cursor(name="xdr_export") as named:
            named.itersize = batch
            named.execute(sql, params)
            while rows := named.fetchmany(batch):
                total += len(rows)
                on_batch(rows)
        return defer.succeed(total)

    def callbacks(self, state, limit, after, account, node, expiry):
        """As ``PostgresCallsStore.callbacks``."""
        d = PostgresCallsStore(_SyncPool(self)).callbacks(state, limit, after, account, node, expiry)
        return d

    def callback(self, callback_id, expiry):
        """As ``PostgresCallsStore.callback``."""
        return PostgresCallsStore(_SyncPool(self)).callback(callback_id, expiry)

    def request_hangup(self, callback_id, requested_by, actor):
        """As ``PostgresCallsStore.request_hangup``."""
        self.cur.execute(SESSION_FOR_HANGUP, (callback_id,))
        row = self.cur.fetchone()
        if row is None:
            return defer.succeed("unknown")
        if row[0] in ("ended", "refused"):
            return defer.succeed("ended")
        self.cur.execute(REQUEST_HANGUP, _hangup_params(callback_id, row[1], requested_by, actor))
        return defer.succeed("requested")

    def nodes(self, expiry):
        """As ``PostgresCallsStore.nodes``."""
        return self._rows(NODES, {"expiry": expiry})

    def report(self, name, start, end, account):
        """As ``PostgresCallsStore.report``."""
        columns, sql = REPORTS[name]
        return self._rows(sql, {"start": start, "end": end, "account": account}).addCallback(
            lambda rows: (columns, rows))


class _SyncPool:
    """Just ``runQuery`` of a pool, on a sync store's cursor (the SQL is shared that way)."""

    def __init__(self, store):
        self.store = store

    def runQuery(self, sql, params=None):
        """Rows, as an already fired Deferred."""
        return self.store._rows(sql, params)
