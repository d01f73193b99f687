"""PostgreSQL failover under a running node: a primary, a synchronous streaming standby, the
primary stopped (``immediate``: a crash, no shutdown checkpoint) and the standby promoted.

The node is a real ``twistd cbserver`` whose DSN names both clusters with
``target_session_attrs=read-write`` (docs/failover.md); the trunk is the sipp carrier, which
hangs every answered call up after ``HOLD_MS``. Callbacks that ended before the switch must
have their xDRs on the new primary (synchronous replication: a commit is acknowledged only once
the standby has flushed it), callbacks talking across the switch must end while no primary
exists and be billed once (their xDRs wait in the node's spool and land on the new primary),
and nothing is written twice. The pool itself is checked with both DSN forms (URI and key=value), the standby
listed first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import reactor

from cbserver.db.migrations import upgrade
from cbserver.db.pool import Database
from cbserver.devtools.pgcluster import Cluster, failover_dsn
from tests.support.carrier import Carrier
from tests.support.node import Node, demo_catalog, http, query, running, wait_for
from tests.support.world import free_udp_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
DB = "cbfailover"
# Long enough to stop and promote while the second batch talks; short enough for a test.
HOLD_MS = 9000
PASSWORD = "failover-pass-1"
BEFORE = [f"cbfobefore{i}" for i in range(2)]  # ended before the switch
ACROSS = [f"cbfoacross{i}" for i in range(2)]  # talking while the primary goes away
AFTER = ["cbfoafter0"]  # asked for once the standby is promoted


@pytest.fixture
def pair():
    """A primary with the schema in database ``cbfailover`` and its synchronous standby."""
    roots = [Path(tempfile.mkdtemp(prefix=f"cbs_fo_{n}_", dir="/var/tmp")) for n in ("p", "s")]
    for root in roots:
        root.chmod(0o755)  # the unprivileged PostgreSQL user must reach it when we are root
    primary, standby = Cluster(roots[0]), Cluster(roots[1])
    try:
        primary.start()
        primary.sql(f"CREATE DATABASE {DB}")
        upgrade(primary.dsn(DB), report=lambda _line: None)
        standby.start_standby(primary, synchronous=True)
        yield primary, standby
    finally:
        for cluster in (standby, primary):
            try:
                cluster.stop("immediate")
            except Exception:  # noqa: BLE001 - a half-made cluster: remove it anyway
                pass
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


def catalog(tmp: Path) -> Path:
    """The demo's catalog plus one debit account per callback (a callback holds its balance)."""
    return demo_catalog(tmp, BEFORE + ACROSS + AFTER, PASSWORD)


def start_callbacks(node: Node, accounts: list[str]) -> list[str]:
    """Ask for one callback per account; return their ids."""
    ids = []
    for i, account in enumerate(accounts):
        code, body = http("POST", node.url("/api/v1/callbacks"), {
            "application": "Web callback", "mode": "extended", "account": account,
            "password": PASSWORD, "phone": f"55119876543{i:02d}", "destination": "18185550123"})
        assert code == 202, body
        ids.append(body["id"])
    return ids


def status(node: Node, cid: str) -> str | None:
    """The callback's status as the node reports it (None while the node cannot say)."""
    try:
        code, body = http("GET", node.url(f"/api/v1/callbacks/{cid}"))
    except OSError:
        return None
    return body.get("status") if code == 200 else None


XDRS = ("SELECT session_id, leg, duration, amount, account_id FROM xdrs "
        "WHERE session_id = ANY(%s) ORDER BY session_id, leg")


@pytest.mark.parametrize("form", ["uri", "keyvalue"])
@pytest_twisted.ensureDeferred
async def test_pool_connects_to_the_writable_host_of_a_multi_host_dsn(pair, form):
    """Both DSN forms, the standby listed first: the pool lands on the primary."""
    primary, standby = pair
    hosts = f"{standby.socket_dir},{primary.socket_dir}"
    if form == "uri":
        dsn = (f"postgresql:///{DB}?host={hosts}&port=5432,5432&user=cbserver"
               "&target_session_attrs=read-write")
    else:
        dsn = failover_dsn([standby, primary], DB)
    db = Database(dsn, reactor, size=2, node="pooltest")
    db.startService()
    try:
        await db.when_ready()
        rows = await db.runQuery("SELECT pg_is_in_recovery(), current_setting('data_directory')")
        assert rows[0][0] is False
        assert Path(rows[0][1]).resolve() == primary.data.resolve()
    finally:
        await db.stopService()
    # The same DSN without target_session_attrs takes the first host, the read-only standby:
    # what the setting is for.
    conn = psycopg2.connect(f"host={hosts} port=5432,5432 user=cbserver dbname={DB}")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery()")
            assert cur.fetchone()[0] is True
    finally:
        conn.close()


def test_primary_lost_and_standby_promoted_loses_no_xdr_and_writes_none_twice(pair, tmp_path):
    primary, standby = pair
    both = failover_dsn([primary, standby], DB)
    cbs = str(Path(sys.executable).parent / "cbserver")
    subprocess.run([cbs, "provision", str(catalog(tmp_path)), "--dsn", both],
                   check=True, capture_output=True, timeout=120)
    # Synchronous: the primary reports its standby as such before any call is made.
    assert primary.sql("SELECT sync_state FROM pg_stat_replication") == "sync"
    opening = dict(query(standby.dsn(DB), "SELECT id, balance FROM accounts"))
    carrier = Carrier(tmp_path, free_udp_port(), hold_ms=HOLD_MS).start()
    node = Node(tmp_path, "node1", both, carrier.port)
    # Reconnect within a second of the new primary accepting writes (default back-off: 30 s).
    node.edit_config(("[database]\n", "[database]\nretry_max = 1.0\n"))
    try:
        with running(node):
            node.start()
            node.wait_ready()
            before = start_callbacks(node, BEFORE)
            for cid in before:
                wait_for(f"{cid} ended", lambda cid=cid: status(node, cid) == "ended", 60)
            wait_for("the first xDRs on the primary", lambda: len(
                query(primary.dsn(DB), XDRS, (before,))) == 2 * len(before), 30)
            # What the primary acknowledged before it goes; no query of the standby needed.
            written = query(primary.dsn(DB), XDRS, (before,))

            across = start_callbacks(node, ACROSS)
            for cid in across:
                wait_for(f"{cid} connected", lambda cid=cid: status(node, cid) == "connected", 30)
            primary.stop("immediate")
            # The carrier hangs up while no primary exists: the calls end, their xDRs wait in
            # the node's spool (the standby, still read-only, is skipped by the DSN).
            for cid in across:
                wait_for(f"{cid} ended", lambda cid=cid: status(node, cid) == "ended", 90)
            wait_for("the spooled xDRs", lambda: http("GET", node.url("/healthz"))[1].get(
                "xdr_spool", {}).get("depth") == 2 * len(across), 30)
            assert http("GET", node.url("/healthz"))[0] == 503
            standby.promote()
            # The node found the new primary on its own and takes callbacks again.
            wait_for("ready again", lambda: http("GET", node.url("/healthz"))[0] == 200, 60)
            after = start_callbacks(node, AFTER)
            wait_for("the last callback connected", lambda: status(node, after[0]) in (
                "connected", "ended"), 30)

            new = standby.dsn(DB)
            everything = before + across
            wait_for("every xDR on the new primary", lambda: len(
                query(new, XDRS, (everything,))) == 2 * len(everything), 60)
            rows = query(new, XDRS, (everything,))
            # The xDRs written before the switch are there, unchanged.
            assert [r for r in rows if r[0] in before] == written
            # None twice: one row per leg (the table's key would refuse a second one, and the
            # balances below would show a second debit).
            assert len({(r[0], r[1]) for r in rows}) == len(rows) == 2 * len(everything)
            assert all(r[3] > 0 for r in rows)
            balances = dict(query(new, "SELECT id, balance FROM accounts"))
            for account in BEFORE + ACROSS:
                billed = sum((r[3] for r in rows if r[4] == account), Decimal(0))
                assert opening[account] - balances[account] == billed, account
            sessions = query(new, "SELECT id, status FROM callback_sessions WHERE id = ANY(%s)",
                             (everything,))
            assert sorted(sessions) == sorted((cid, "ended") for cid in everything)
            assert query(new, "SELECT count(*) FROM balance_reservations WHERE session_id = ANY(%s)",
                         (everything,)) == [(0,)]
    finally:
        carrier.stop()


def test_pg_command_makes_promotes_and_names_a_standby(tmp_path):
    """``cbserver pg standby|promote|dsn --failover|status --standby`` on a cluster of its own."""
    root = Path(tempfile.mkdtemp(prefix="cbs_fo_cli_", dir="/var/tmp"))
    root.chmod(0o755)
    env = {**os.environ, "CBS_PG_ROOT": str(root / "pg")}
    cbs = str(Path(sys.executable).parent / "cbserver")

    def run(*args):
        return subprocess.run([cbs, "pg", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    try:
        refused = run("promote")
        assert refused.returncode == 1 and "is not a standby" in refused.stderr
        assert run("standby").returncode == 1  # no primary running yet
        assert run("start").returncode == 0
        made = run("standby")
        assert made.returncode == 0, made.stderr
        dsn = made.stdout.strip()
        assert dsn == run("dsn", "--failover").stdout.strip()
        assert "target_session_attrs=read-write" in dsn and f"{root}/pg-standby/run" in dsn
        assert "(standby)" in run("status", "--standby").stdout
        assert run("promote").returncode == 0
        promoted = run("status", "--standby").stdout
        assert promoted.startswith("running: ") and "(standby)" not in promoted
        conn = psycopg2.connect(dsn.replace("dbname=cbserver", "dbname=postgres"))
        try:  # both are primaries now; the first writable host listed wins
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('data_directory')")
                assert cur.fetchone()[0].startswith(f"{root}/pg/")
        finally:
            conn.close()
        # Back to one cluster: the primary no longer waits for a standby, which is gone.
        assert run("drop-standby").returncode == 0
        assert not (root / "pg-standby").exists()
        primary = Cluster(root / "pg")
        assert primary.sql("SHOW synchronous_standby_names") == ""
        primary.sql("CREATE DATABASE after_the_standby")  # a commit that does not wait
        assert run("drop-standby").returncode == 1
    finally:
        run("stop", "--standby")
        run("stop")
        shutil.rmtree(root, ignore_errors=True)
