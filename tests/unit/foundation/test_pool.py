"""The database pool service: back-off while PostgreSQL is away, schema check, reconnection."""

import psycopg2
import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from cbserver.db.migrations import discover_functions, required_version
from cbserver.db.pool import Database, IDatabase
from cbserver.errors import DatabaseUnavailable


class FakeConnection:
    """Stands in for a txpostgres Connection; behaviour set by the shared ``server`` dict."""

    def __init__(self, server):
        self.server = server
        self.closed = False

    def connect(self, dsn, **kw):
        if not self.server["up"]:
            return defer.fail(psycopg2.OperationalError("could not connect to server: refused"))
        return defer.succeed(self)

    def runQuery(self, sql, params=None):
        if not self.server["up"]:
            return defer.fail(psycopg2.OperationalError("server closed the connection"))
        if "to_regclass" in sql:
            return defer.succeed([(self.server["version"] is not None,)])
        if "max(version)" in sql:
            return defer.succeed([(self.server["version"],)])
        if "FROM schema_functions" in sql:
            return defer.succeed(self.server.get("functions", []))
        self.server["queries"].append(sql)
        return defer.succeed([(1,)])

    def runOperation(self, sql, params=None):
        if not self.server["up"]:
            return defer.fail(psycopg2.OperationalError("server closed the connection"))
        self.server["queries"].append(sql)
        return defer.succeed(None)

    def close(self):
        self.closed = True


def make(up=True, version=1, required=1):
    server = {"up": up, "version": version, "queries": []}
    clock = Clock()
    db = Database("dbname=x", clock, size=2, retry_max=8.0,
                  connection_factory=lambda: FakeConnection(server), required=required)
    return db, clock, server


def stop(db, clock):
    d = db.stopService()
    clock.advance(0)
    assert not clock.getDelayedCalls()
    return d


def test_implements_interface():
    db, clock, _ = make()
    assert verifyObject(IDatabase, db)


def test_ready_when_server_up_and_schema_current():
    db, clock, server = make()
    fired = []
    db.when_ready().addCallback(fired.append)
    db.startService()
    assert db.ready and fired == [db]
    assert db.health()["status"] == "ok"
    assert any("INSERT INTO server_nodes" in q for q in server["queries"])
    stop(db, clock)


def test_retries_with_exponential_backoff_capped():
    db, clock, server = make(up=False)
    db.startService()
    assert not db.ready
    health = db.health()
    assert health["status"] == "down" and "refused" in health["reason"]
    delays = []
    for _ in range(6):
        (call,) = clock.getDelayedCalls()
        delays.append(call.getTime() - clock.seconds())
        clock.advance(delays[-1])
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert db.attempts == 7
    server["up"] = True
    clock.advance(8.0)
    assert db.ready
    stop(db, clock)


def test_schema_too_old_is_reported_with_upgrade_command():
    db, clock, server = make(version=1, required=3)
    db.startService()
    assert not db.ready
    reason = db.health()["reason"]
    assert "version 1" in reason and "needs 3" in reason and "cbserver db upgrade" in reason
    server["version"] = 3
    clock.advance(0.5)
    assert db.ready
    stop(db, clock)


def test_functions_unlike_the_shipped_files_are_reported_with_upgrade_command():
    shipped = discover_functions()
    server = {"up": True, "version": required_version(), "queries": [],
              "functions": [(f.name, f.checksum()) for f in shipped[1:]]}
    clock = Clock()
    db = Database("dbname=x", clock, size=2, connection_factory=lambda: FakeConnection(server))
    db.startService()
    assert not db.ready
    reason = db.health()["reason"]
    assert shipped[0].path.name in reason and "cbserver db upgrade" in reason
    assert shipped[1].path.name not in reason
    server["functions"].append((shipped[0].name, shipped[0].checksum()))
    clock.advance(0.5)
    assert db.ready
    stop(db, clock)


def test_lost_connection_fails_query_and_reconnects():
    db, clock, server = make()
    db.startService()
    server["up"] = False
    failures = []
    db.runQuery("SELECT 1").addErrback(failures.append)
    # The driver's error reaches callers as the project's own, with the driver's as cause.
    assert failures and failures[0].check(DatabaseUnavailable)
    assert isinstance(failures[0].value.__cause__, psycopg2.OperationalError)
    assert not db.ready and db.health()["status"] == "down"
    later = []
    db.runQuery("SELECT 1").addErrback(later.append)
    assert later[0].check(DatabaseUnavailable)
    server["up"] = True
    clock.advance(0.5)
    assert db.ready
    rows = []
    db.runQuery("SELECT 2").addCallback(rows.append)
    assert rows == [[(1,)]]
    stop(db, clock)


def test_heartbeat_refreshes_node_row():
    db, clock, server = make()
    db.startService()
    before = len(server["queries"])
    clock.advance(db.ping_interval)
    assert len(server["queries"]) == before + 1
    assert "last_seen" in server["queries"][-1]
    stop(db, clock)


def test_callers_wait_for_a_free_connection():
    db, clock, server = make()
    db.startService()
    gate = defer.Deferred()
    held = []

    def hold(conn):
        held.append(conn)
        return gate

    # Take both connections, then queue a third caller.
    c1 = db._checkout()
    c2 = db._checkout()
    c1.addCallback(hold)
    c2.addCallback(hold)
    third = db.runQuery("SELECT 3")
    results = []
    third.addCallback(results.append)
    assert results == []
    db._checkin(held[0])
    assert results == [[(1,)]]
    db._checkin(held[1])
    stop(db, clock)


@pytest.mark.parametrize("up", [True, False])
def test_stop_leaves_no_timers(up):
    db, clock, server = make(up=up)
    db.startService()
    stop(db, clock)
    assert not db.ready
