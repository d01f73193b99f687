"""``cbserver node list|drain|undrain`` and the admin API's ``/v1/nodes`` against the real
PostgreSQL: the drain row both write, what ``list`` shows of live nodes and their callbacks,
``drain --wait`` returning only once the node runs no callback, and bad input refused."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from cbserver.db.pool import Database
from tests.integration.catalog.admin_client import AdminClient
from tests.integration.xdr.helpers import query

pytestmark = pytest.mark.integration

CBSERVER = str(Path(sys.executable).parent / "cbserver")


def node_cli(dsn, *args, timeout=60):
    return subprocess.run([CBSERVER, "node", *args, "--dsn", dsn], capture_output=True, text=True,
                          timeout=timeout)


@pytest_twisted.async_yield_fixture
async def edge1(pg_dsn):
    """A live node 'edge1' (its pool registers and beats, as a server's does)."""
    pool = Database(pg_dsn, reactor, size=1, node="edge1")
    pool.startService()
    await pool.when_ready()
    yield pool
    await pool.stopService()


def _callback(dsn, instance, status="connected"):
    cb_id = uuid.uuid4().hex
    query(dsn, "INSERT INTO callback_sessions (id, application, mode, phone, status, state, node, "
               "instance_id) VALUES (%s, 'Web callback', 'extended', '1555', %s, '{}', 'edge1', %s)",
          (cb_id, status, instance))
    return cb_id


def test_drain_list_undrain_from_the_shell(pg_dsn, edge1):
    _callback(pg_dsn, edge1.instance_id)
    listed = node_cli(pg_dsn, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["edge1\trunning\tprocesses=1\tcallbacks=1"]
    out = node_cli(pg_dsn, "drain", "edge1", "--deadline", "600")
    assert out.returncode == 0 and "node edge1: draining, calls end by" in out.stdout
    row = query(pg_dsn, "SELECT round(extract(epoch FROM deadline - now())) FROM node_drains "
                        "WHERE node = 'edge1'")
    assert 590 <= row[0][0] <= 600
    (line,) = node_cli(pg_dsn, "list", "--json").stdout.splitlines()
    shown = json.loads(line)
    assert shown["draining"] and shown["deadline"] and shown["active_callbacks"] == 1
    assert node_cli(pg_dsn, "undrain", "edge1").returncode == 0
    again = node_cli(pg_dsn, "undrain", "edge1")
    assert again.returncode == 1 and "node edge1 is not drained" in again.stderr
    assert query(pg_dsn, "SELECT count(*) FROM node_drains") == [(0,)]
    # A drained node without a live process is still listed (it stays drained if it starts).
    assert node_cli(pg_dsn, "drain", "edge9").returncode == 0
    assert "edge9\tdraining\tprocesses=0\tcallbacks=0" in node_cli(pg_dsn, "list").stdout


@pytest.mark.parametrize(("args", "says"), [
    (["drain", "*"], "names a rating-list entry for any node"),
    (["drain", " "], "surrounding spaces"),
    (["drain", "edge1", "--deadline", "0"], "--deadline"),
    (["drain", "edge1", "--deadline", "-5"], "--deadline"),
    (["undrain", "x" * 101], "1-100 characters")])
def test_bad_input_is_one_line_and_writes_nothing(pg_dsn, args, says):
    out = node_cli(pg_dsn, *args)
    assert out.returncode != 0 and says in out.stderr and "Traceback" not in out.stderr
    assert query(pg_dsn, "SELECT count(*) FROM node_drains") == [(0,)]


def test_drain_wait_returns_once_the_node_runs_no_callback(pg_dsn, edge1):
    cb_id = _callback(pg_dsn, edge1.instance_id)
    timed_out = node_cli(pg_dsn, "drain", "edge1", "--wait", "--wait-timeout", "6")
    assert timed_out.returncode == 1 and "still 1 callback(s) in progress" in timed_out.stderr
    waiting = subprocess.Popen([CBSERVER, "node", "drain", "edge1", "--wait", "--dsn", pg_dsn],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(7)  # past its notice delay: it is polling the count now
        assert waiting.poll() is None
        query(pg_dsn, "UPDATE callback_sessions SET status = 'ended' WHERE id = %s", (cb_id,))
        out, err = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 0, err
    assert "no callback in progress; it can be stopped" in out


@pytest_twisted.ensureDeferred
async def test_admin_api_drains_lists_and_undrains(db_for_admin, tmp_path):
    pool, dsn = db_for_admin
    api = AdminClient(pool, tmp_path)
    code, body = await api.call("POST", "/v1/nodes/edge1/drain", {"deadline": 120})
    assert code == 200 and body["node"] == "edge1" and body["draining"] and body["deadline"]
    listed = await api.ok("GET", "/v1/nodes")
    assert [n["node"] for n in listed["items"] if n["draining"]] == ["edge1"]
    assert query(dsn, "SELECT node FROM node_drains") == [("edge1",)]
    # No deadline: a body is optional.
    code, body = await api.call("POST", "/v1/nodes/edge2/drain")
    assert code == 200 and body["deadline"] is None
    assert (await api.call("DELETE", "/v1/nodes/edge2/drain"))[0] == 200
    code, body = await api.call("DELETE", "/v1/nodes/edge2/drain")
    assert code == 404 and body["error"]["code"] == "not_found"
    for bad, field in (({"deadline": -1}, "deadline"), ({"deadline": "soon"}, "deadline"),
                       ({"deadline": True}, "deadline"), ({"until": 5}, "until")):
        code, body = await api.call("POST", "/v1/nodes/edge3/drain", bad)
        assert code == 400 and body["error"]["field"] == field, body
    code, body = await api.call("POST", "/v1/nodes/%2A/drain", {})
    assert code == 400 and body["error"]["field"] == "node"
    # A stranger without the token changes nothing.
    code, _ = await api.call("DELETE", "/v1/nodes/edge1/drain", token="wrong-token-0123456789")
    assert code == 401
    code, _ = await api.call("POST", "/v1/nodes/edge4/drain", {}, token=None)
    assert code == 401
    assert query(dsn, "SELECT node FROM node_drains") == [("edge1",)]
    # Each change is in the audit log, as made by the API's token (issue 15): the two drains
    # and the one undrain that changed something; refused requests wrote nothing.
    assert query(dsn, "SELECT who, source, key, action FROM audit_log WHERE kind = 'node' "
                      "ORDER BY id") == [("api-token", "api", "edge1", "drain"),
                                         ("api-token", "api", "edge2", "drain"),
                                         ("api-token", "api", "edge2", "undrain")]


@pytest_twisted.async_yield_fixture
async def db_for_admin(pg_dsn):
    pool = Database(pg_dsn, reactor, size=2, node="admin-test")
    pool.startService()
    await pool.when_ready()
    yield pool, pg_dsn
    await pool.stopService()
