"""Shared fixtures: the real local PostgreSQL and a fresh database per test.

The cluster is the checkout's private one (``cbserver pg start``), started once per run.
Each test that asks for ``pg_dsn`` gets its own database cloned from a template that has
every migration applied; the template is rebuilt only when the SQL files change, so a fresh
database costs a file copy, not a full migration.
"""

from __future__ import annotations

import hashlib
import os
import uuid

import psycopg2
import pytest
from twisted.logger import globalLogPublisher

from cbserver.db.migrations import upgrade
from cbserver.devtools.pgcluster import Cluster, ClusterError, default_cluster
from cbserver.resources import sql_dir


def _sql_fingerprint() -> str:
    """A short hash of every migration and function file, naming the matching template
    database (a changed function file must rebuild it as a changed migration does)."""
    h = hashlib.sha256()
    for path in sorted([*sql_dir().glob("*.sql"), *sql_dir().glob("functions/*.sql")]):
        h.update(path.relative_to(sql_dir()).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def _admin(cluster: Cluster):
    """An autocommit connection to the cluster's maintenance database."""
    conn = psycopg2.connect(cluster.dsn("postgres"))
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_cluster():
    """The running local cluster; stopped at the end only if this run started it."""
    cluster = default_cluster()
    was_running = cluster.running()
    try:
        cluster.start()
    except ClusterError as e:
        pytest.fail(f"local PostgreSQL unavailable: {e} (./cbs setup installs it)")
    yield cluster
    if not was_running:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_template(pg_cluster: Cluster) -> str:
    """Name of a template database with the current schema (built once per SQL change)."""
    name = f"cbs_tmpl_{_sql_fingerprint()}"
    conn = _admin(pg_cluster)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT datistemplate FROM pg_database WHERE datname = %s", (name,))
            row = cur.fetchone()
            if row and row[0]:
                return name
            if row:  # a half-built template from an interrupted run
                cur.execute(f'DROP DATABASE "{name}"')
            building = f"{name}_build_{os.getpid()}"
            cur.execute(f'DROP DATABASE IF EXISTS "{building}"')
            cur.execute(f'CREATE DATABASE "{building}"')
            upgrade(pg_cluster.dsn(building), report=lambda _line: None)
            cur.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
            cur.execute(f'ALTER DATABASE "{name}" WITH is_template = true')
            # Drop templates of older schemas so they do not pile up.
            cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'cbs_tmpl_%%' "
                        "AND datname <> %s AND datname NOT LIKE '%%_build_%%'", (name,))
            for (old,) in cur.fetchall():
                cur.execute(f'ALTER DATABASE "{old}" WITH is_template = false')
                cur.execute(f'DROP DATABASE IF EXISTS "{old}"')
    finally:
        conn.close()
    return name


def _scratch_database(cluster: Cluster, prefix: str, template: str | None = None):
    """Create a uniquely named database (from ``template``), yield its DSN, then drop it."""
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    conn = _admin(cluster)
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        conn.close()
    yield cluster.dsn(name)
    conn = _admin(cluster)
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


@pytest.fixture
def pg_dsn(pg_cluster: Cluster, pg_template: str):
    """DSN of a fresh database with the current schema, dropped after the test."""
    yield from _scratch_database(pg_cluster, "cbs_t_", pg_template)


@pytest.fixture
def empty_pg_dsn(pg_cluster: Cluster):
    """DSN of a fresh, empty database (no schema at all), dropped after the test."""
    yield from _scratch_database(pg_cluster, "cbs_e_")


@pytest.fixture
def logged():
    """Every log event emitted while the test runs, in order."""
    events = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)
