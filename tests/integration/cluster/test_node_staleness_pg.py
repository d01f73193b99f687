"""The cluster's one staleness rule on the real PostgreSQL: the node list (``nodes_store.LIST``:
``cbserver node list``, ``GET /v1/nodes``) and the process list (``calls_store.NODES``:
``GET /v1/nodes/processes``, the console) call a process gone after the same
``[recovery] stale_after`` seconds without a heartbeat, the rule crash recovery applies: a
survivor's sweep ends the callbacks of exactly the processes the lists call gone, with the
defaults and with a configured value."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from cbserver.callback.console import Console
from cbserver.callback.recovery import RecoveryService
from cbserver.config import NODE_STALE_AFTER, example_path, load_config
from cbserver.db import callbacks_store, nodes_store
from cbserver.db.calls_store import NODE_COLUMNS, NODES, PostgresCallsStore
from cbserver.db.pool import Database
from cbserver.db.recovery_store import PostgresRecoveryStore
from cbserver.db.sync import sync_cursor
from cbserver.web.admin_nodes import node_expiry
from tests.integration.callback.test_recovery_store_pg import session_row
from tests.integration.xdr.helpers import query

pytestmark = pytest.mark.integration

CBSERVER = str(Path(sys.executable).parent / "cbserver")


def _process(dsn, node, seen_ago: float) -> str:
    """A process row of ``node`` whose last heartbeat was ``seen_ago`` seconds ago."""
    instance = str(uuid.uuid4())
    query(dsn, "INSERT INTO server_nodes (node, instance_id, hostname, pid, version, started_at, "
               "last_seen) VALUES (%s, %s, 'h', 1, 't', now() - interval '1 hour', "
               "now() - make_interval(secs => %s))", (node, instance, seen_ago))
    return instance


def _both(dsn, expiry):
    """(live processes per node name of LIST, alive instance ids of NODES)."""
    with sync_cursor(dsn) as cur:
        listed = {n["node"]: n["processes"] for n in nodes_store.list_nodes_sync(cur, expiry)}
        cur.execute(NODES, {"expiry": expiry})
        alive = {r[NODE_COLUMNS.index("instance_id")] for r in cur.fetchall()
                 if r[NODE_COLUMNS.index("alive")]}
    return listed, alive


def test_both_lists_apply_the_same_rule_at_the_configured_stale_after(pg_dsn):
    tag = uuid.uuid4().hex[:8]
    fresh, late, gone = f"fresh-{tag}", f"late-{tag}", f"gone-{tag}"
    a = _process(pg_dsn, fresh, 2)
    b = _process(pg_dsn, late, NODE_STALE_AFTER - 5)  # two heartbeats late: still alive
    c = _process(pg_dsn, gone, NODE_STALE_AFTER + 5)  # past the rule: crash recovery's
    listed, alive = _both(pg_dsn, NODE_STALE_AFTER)
    assert listed.get(fresh) == 1 and listed.get(late) == 1
    assert gone not in listed  # no live process and no drain: not listed at all
    assert {a, b} <= alive and c not in alive
    # A longer configured stale_after moves both lists together.
    listed, alive = _both(pg_dsn, NODE_STALE_AFTER + 10)
    assert listed.get(gone) == 1 and c in alive


def _config_file(pg_dsn, tmp_path, stale_after: int):
    """The example configuration on this PostgreSQL with ``[recovery] stale_after``."""
    text = (example_path().read_text().replace("stale_after = 15", f"stale_after = {stale_after}")
            .replace('dsn = "host=127.0.0.1 port=5432 dbname=cbserver user=cbserver"',
                     f'dsn = "{pg_dsn}"'))
    cfg_file = tmp_path / "cbserver.toml"
    cfg_file.write_text(text)
    return cfg_file


@pytest_twisted.ensureDeferred
async def test_recovery_ends_the_calls_of_exactly_the_processes_the_lists_call_gone(pg_dsn, tmp_path):
    configured = load_config(_config_file(pg_dsn, tmp_path, NODE_STALE_AFTER + 25))
    tag = uuid.uuid4().hex[:8]
    survivor = Database(pg_dsn, reactor, size=2, node=f"survivor-{tag}")
    survivor.startService()
    await survivor.when_ready()
    try:
        # Processes whose last heartbeat was 5 s, default+5 s and default+35 s ago, each with
        # a callback running that no leg answered yet (closed by the sweep when it is dead).
        ages = {"young": 5, "between": NODE_STALE_AFTER + 5, "old": NODE_STALE_AFTER + 35}
        dead = {}
        for what, age in ages.items():
            proc = SimpleNamespace(node=f"{what}-{tag}", instance_id=_process(pg_dsn, f"{what}-{tag}", age))
            await callbacks_store.upsert(survivor, [session_row(proc, f"cb-{what}-{tag}")])
            dead[what] = proc

        async def judged(recovery, expiry):
            """(callbacks the sweep ended, processes the node list and the process list call
            gone), by process."""
            await recovery.sweep()
            ended = {w for w, p in dead.items()
                     if query(pg_dsn, "SELECT status FROM callback_sessions WHERE id = %s",
                              (f"cb-{w}-{tag}",))[0][0] == "ended"}
            listed, alive = _both(pg_dsn, expiry)
            return (ended, {w for w, p in dead.items() if p.node not in listed},
                    {w for w, p in dead.items() if p.instance_id not in alive})

        def service(**rule):
            return RecoveryService(PostgresRecoveryStore(survivor), SimpleNamespace(ua=object()),
                                   reactor, survivor.node, survivor.instance_id, **rule)

        # A configured stale_after, as the server passes it to both: only "old" is dead.
        ended, unlisted, not_alive = await judged(
            service(stale_after=configured.recovery.stale_after), node_expiry(configured))
        assert ended == unlisted == not_alive == {"old"}
        # The defaults (a server without the setting, the admin API and the console without a
        # configuration): "between" is dead too, for recovery and for the lists alike.
        ended, unlisted, not_alive = await judged(service(), node_expiry(None))
        assert ended == unlisted == not_alive == {"between", "old"}
        console = await Console(PostgresCallsStore(survivor)).nodes()
        seen = {n["instance_id"]: n["alive"] for n in console["nodes"]}
        assert seen.get(dead["young"].instance_id) is True
        assert seen.get(dead["between"].instance_id) is False  # its node's latest, not alive
    finally:
        query(pg_dsn, "DELETE FROM callback_sessions WHERE id LIKE %s", (f"cb-%-{tag}",))
        await defer.maybeDeferred(survivor.stopService)


def test_the_configured_stale_after_reaches_the_admin_api_and_the_cli(pg_dsn, tmp_path):
    cfg_file = _config_file(pg_dsn, tmp_path, 40)
    assert node_expiry(load_config(cfg_file)) == 40  # what GET /v1/nodes passes
    assert node_expiry(None) == NODE_STALE_AFTER
    tag = uuid.uuid4().hex[:8]
    name = f"half-{tag}"
    _process(pg_dsn, name, NODE_STALE_AFTER + 10)  # was alive under the old 30 s of LIST

    def listed(*how):
        out = subprocess.run([CBSERVER, "node", "list", *how],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert name not in listed("--dsn", pg_dsn)  # the default rule: gone, as crash recovery sees it
    assert f"{name}\trunning\tprocesses=1" in listed("--config", str(cfg_file))


def test_a_drained_node_without_a_live_process_is_listed_with_none(pg_dsn):
    tag = uuid.uuid4().hex[:8]
    name = f"drained-{tag}"
    _process(pg_dsn, name, NODE_STALE_AFTER + 5)
    query(pg_dsn, "INSERT INTO node_drains (node) VALUES (%s)", (name,))
    try:
        listed, _ = _both(pg_dsn, NODE_STALE_AFTER)
        assert listed[name] == 0
    finally:
        query(pg_dsn, "DELETE FROM node_drains WHERE node = %s", (name,))
