"""Numbered SQL migrations: discovery, the schema version, and ``cbserver db upgrade``.

Migrations are the files ``sql/NNN_name.sql``, applied in number order, each in its own
transaction together with its row in ``schema_migrations``. A PostgreSQL advisory lock keeps
two nodes from upgrading one database at the same time. Schema changes happen only here.

An applied migration never changes: a later change goes into a new file. Each row records the
file's checksum, and ``upgrade`` and ``check_schema`` refuse a database whose applied
migrations no longer match their files (``MigrationChanged``), because the functions and
tables the code relies on would then not be the ones the files describe.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from cbserver.resources import sql_dir

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
# An arbitrary constant naming cbserver's upgrade lock (pg_advisory_xact_lock takes a bigint).
_LOCK_KEY = 0x6362_7376_6D69_67

BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """A migration file is malformed, failed to apply, or the schema is not usable."""


class SchemaTooOld(MigrationError):
    """The database schema is older than this cbserver needs."""

    def __init__(self, current: int, required: int):
        self.current = current
        self.required = required
        super().__init__(
            f"database schema is at version {current}, this cbserver needs {required}: "
            "run `cbserver db upgrade --dsn DSN` (or `cbserver db upgrade --config FILE`)")


class MigrationChanged(MigrationError):
    """Migrations applied to the database differ from the shipped files of the same number."""

    def __init__(self, changed: list[Migration]):
        self.changed = changed
        names = ", ".join(m.path.name for m in changed)
        super().__init__(
            f"applied migration(s) {names} changed after being applied to this database "
            "(checksum differs): an applied migration is never edited, so this database was "
            "built by a different cbserver. Restore the files as they were, or rebuild the "
            "database (`cbserver db status` lists the changed ones)")


@dataclass(frozen=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    path: Path

    def sql(self) -> str:
        """The file's text."""
        return self.path.read_text(encoding="utf-8")

    def checksum(self) -> str:
        """SHA-256 of the file, recorded so that a changed applied migration is noticed.

        Line endings are read as LF, so a checkout that converts them (git's autocrlf) does
        not look like a changed migration.
        """
        return hashlib.sha256(self.path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def discover(folder: Path | None = None) -> list[Migration]:
    """List the migrations in ``folder`` (default: the shipped ``sql/``) in version order."""
    folder = folder or sql_dir()
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        m = _NAME.match(path.name)
        if m is None:
            raise MigrationError(f"{path.name}: migration files must be named NNN_name.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two migrations share number {version:03d}: "
                                 f"{found[version].path.name} and {path.name}")
        found[version] = Migration(version, m.group(2), path)
    return [found[v] for v in sorted(found)]


def required_version(folder: Path | None = None) -> int:
    """The schema version this code needs: the highest shipped migration number."""
    migrations = discover(folder)
    return migrations[-1].version if migrations else 0


def applied(conn) -> dict[int, str]:
    """Version -> recorded checksum of every migration applied to the database behind the
    psycopg2 ``conn`` (empty before the first upgrade)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
            return {}
        cur.execute("SELECT version, checksum FROM schema_migrations")
        return dict(cur.fetchall())
    # (the cursor's context manager closes it; the caller owns the transaction)


def current_version(conn) -> int:
    """The highest migration applied to the database behind the psycopg2 ``conn``."""
    return max(applied(conn), default=0)


def changed(conn, folder: Path | None = None, recorded: dict[int, str] | None = None
            ) -> list[Migration]:
    """The applied migrations whose file no longer has the checksum recorded when applied
    (``recorded``: what ``applied(conn)`` returned, when the caller has it already)."""
    recorded = applied(conn) if recorded is None else recorded
    return [m for m in discover(folder)
            if m.version in recorded and recorded[m.version] != m.checksum()]


def pending(conn, folder: Path | None = None) -> list[Migration]:
    """The migrations not yet applied."""
    have = current_version(conn)
    conn.rollback()
    return [m for m in discover(folder) if m.version > have]


def upgrade(dsn: str, folder: Path | None = None, report=print) -> list[Migration]:
    """Apply every pending migration, each in its own transaction; return those applied."""
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10)
    except psycopg2.OperationalError as e:
        raise MigrationError(f"cannot connect to {dsn!r}: {str(e).strip()}") from None
    applied = []
    try:
        with conn, conn.cursor() as cur:
            cur.execute(BOOTSTRAP)
        with conn:
            edited = changed(conn, folder)
        if edited:
            raise MigrationChanged(edited)
        for migration in discover(folder):
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                cur.execute("SELECT 1 FROM schema_migrations WHERE version = %s",
                            (migration.version,))
                if cur.fetchone():
                    continue
                try:
                    cur.execute(migration.sql())
                except psycopg2.Error as e:
                    raise MigrationError(f"{migration.path.name} failed: "
                                         f"{str(e).strip()}") from None
                cur.execute("INSERT INTO schema_migrations (version, name, checksum) "
                            "VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum()))
            applied.append(migration)
            report(f"applied {migration.path.name}")
    finally:
        conn.close()
    return applied


def check_schema(conn, folder: Path | None = None) -> int:
    """Raise ``SchemaTooOld`` unless the database is at least at the required version, and
    ``MigrationChanged`` if an applied migration's file changed since; return the version."""
    recorded = applied(conn)
    have = max(recorded, default=0)
    need = required_version(folder)
    if have < need:
        raise SchemaTooOld(have, need)
    edited = changed(conn, folder, recorded)
    if edited:
        raise MigrationChanged(edited)
    return have
