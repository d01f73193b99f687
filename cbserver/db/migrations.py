"""SQL migrations and repeatable function files: discovery, the schema version, and
``cbserver db upgrade``.

Migrations are the files ``sql/NNN_name.sql`` (tables, indexes, data), applied in number
order, each in its own transaction together with its row in ``schema_migrations``. A
PostgreSQL advisory lock keeps two nodes from upgrading one database at the same time. Schema
changes happen only here.

An applied migration never changes: a later change goes into a new file. Each row records the
file's checksum, and ``upgrade`` and ``check_schema`` refuse a database whose applied
migrations no longer match their files (``MigrationChanged``), because the tables the code
relies on would then not be the ones the files describe. The one exception is ``SUPERSEDED``:
files rewritten once, on purpose, whose old checksum still counts.

Functions are not copied into each migration that changes them: each lives in one repeatable
file ``sql/functions/NN_name.sql`` (``CREATE OR REPLACE FUNCTION``; one function or a small
family). After the numbered migrations, ``upgrade`` applies, in ``NN`` order (the dependency
order: a file comes after the files whose functions it needs), every file whose checksum is
not the one recorded in ``schema_functions``, all in one transaction; an unchanged file is not
run again. A file that changes a function's arguments or result type drops the old signature
itself first (``DROP FUNCTION IF EXISTS name(old types);``), since ``CREATE OR REPLACE`` cannot.
The server refuses to start on functions that differ from its files (``FunctionsOutOfDate``,
a ``SchemaTooOld``) rather than replacing them itself: nodes of two versions may share one
database during an upgrade, and a node that rewrote functions at start-up would undo the
newer node's functions each time an older one restarted. ``cbserver db upgrade`` is the one
writer, and it leaves the functions of a database newer than itself alone.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from cbserver.resources import sql_dir

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_FUNCTION_NAME = re.compile(r"^(\d{2})_([a-z0-9_]+)\.sql$")
FUNCTIONS_DIR = "functions"
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


#: Migration files rewritten after they were applied, without changing the database an upgrade
#: leaves behind: version -> the checksums they were first shipped with, which still count as
#: theirs (``upgrade`` then records the current checksum). 031-033 carried whole function
#: bodies, copied from one file to the next to change a line; the bodies now live in
#: sql/functions/, applied after the numbered migrations, so a database that ran the old text
#: gets the same functions as one that runs the new (tests/data/migrations_at_033/ keeps the
#: old files; tests/integration/foundation/test_upgrade_from_033.py checks it).
SUPERSEDED: dict[int, frozenset[str]] = {
    31: frozenset({"e04445d977417a8af3e84fc43add28cb4cc492db12fdc28162498d8777b47140"}),
    32: frozenset({"f5661612f009da59aa0a9a3c6323339ba288fe90944e874fd0b002db164bf4e5"}),
    33: frozenset({"53aa371f918602e79e76e480707c21ff20e521352af355303619273adb7c242d"}),
}

#: The applied function files and their checksums (the table is created by migration 034).
FUNCTION_CHECKSUMS = "SELECT name, checksum FROM schema_functions"


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


class FunctionsOutOfDate(SchemaTooOld):
    """The database's functions are not those of this cbserver's ``sql/functions/`` files."""

    def __init__(self, stale: list[FunctionFile], version: int):
        self.stale = stale
        self.current = self.required = version
        names = ", ".join(f.path.name for f in stale)
        MigrationError.__init__(
            self, f"database functions differ from this cbserver's sql/functions/ ({names}: "
            "changed or never applied): run `cbserver db upgrade --dsn DSN` "
            "(or `cbserver db upgrade --config FILE`)")


class _SqlFile:
    """What a migration and a function file share: their text and its checksum."""

    path: Path

    def sql(self) -> str:
        """The file's text."""
        return self.path.read_text(encoding="utf-8")

    def checksum(self) -> str:
        """SHA-256 of the file, recorded so that a changed file is noticed.

        Line endings are read as LF, so a checkout that converts them (git's autocrlf) does
        not look like a changed file.
        """
        return hashlib.sha256(self.path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()

    def has_statements(self) -> bool:
        """False for a file of comments only (a migration whose work moved elsewhere), which
        PostgreSQL would refuse as an empty query."""
        return any(line.strip() and not line.strip().startswith("--")
                   for line in self.sql().splitlines())


@dataclass(frozen=True)
class Migration(_SqlFile):
    """One numbered migration file."""

    version: int
    name: str
    path: Path


@dataclass(frozen=True)
class FunctionFile(_SqlFile):
    """One repeatable file of ``sql/functions/``: ``order`` is its ``NN``, ``name`` the rest
    of its name, recorded in ``schema_functions`` (so renumbering a file does not re-apply it)."""

    order: int
    name: str
    path: Path


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


def discover_functions(folder: Path | None = None) -> list[FunctionFile]:
    """List the function files of ``folder``/functions (default: the shipped ``sql/``) in
    the order they are applied: by their ``NN`` prefix, then by name."""
    where = (folder or sql_dir()) / FUNCTIONS_DIR
    found: dict[str, FunctionFile] = {}
    for path in sorted(where.glob("*.sql")) if where.is_dir() else []:
        m = _FUNCTION_NAME.match(path.name)
        if m is None:
            raise MigrationError(f"functions/{path.name}: function files must be named NN_name.sql")
        name = m.group(2)
        if name in found:
            raise MigrationError(f"two function files share the name {name}: "
                                 f"{found[name].path.name} and {path.name}")
        found[name] = FunctionFile(int(m.group(1)), name, path)
    return sorted(found.values(), key=lambda f: (f.order, f.name))


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


def _superseded(migration: Migration, checksum: str) -> bool:
    """True when ``checksum`` is one the migration's file was first shipped with."""
    return checksum in SUPERSEDED.get(migration.version, ())


def changed(conn, folder: Path | None = None, recorded: dict[int, str] | None = None
            ) -> list[Migration]:
    """The applied migrations whose file no longer has the checksum recorded when applied
    (``recorded``: what ``applied(conn)`` returned, when the caller has it already); a
    ``SUPERSEDED`` checksum is not a change."""
    recorded = applied(conn) if recorded is None else recorded
    return [m for m in discover(folder)
            if m.version in recorded and recorded[m.version] != m.checksum()
            and not _superseded(m, recorded[m.version])]


def applied_functions(conn) -> dict[str, str]:
    """Name -> recorded checksum of every function file applied to the database behind the
    psycopg2 ``conn`` (empty before migration 034)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('schema_functions') IS NOT NULL")
        if not cur.fetchone()[0]:
            return {}
        cur.execute(FUNCTION_CHECKSUMS)
        return dict(cur.fetchall())


def stale_functions(recorded: dict[str, str], version: int, folder: Path | None = None
                    ) -> list[FunctionFile]:
    """The function files to apply to a database at schema ``version`` whose applied files
    have the checksums ``recorded``: those never applied or changed since, in order.

    None for a database newer than these files (``version`` above the last migration): its
    functions came from a newer cbserver and are left to it.
    """
    if version > required_version(folder):
        return []
    return [f for f in discover_functions(folder) if recorded.get(f.name) != f.checksum()]


def check_functions(recorded: dict[str, str], version: int, folder: Path | None = None) -> None:
    """Raise ``FunctionsOutOfDate`` unless the database's function files (``recorded``) are
    those shipped (see ``stale_functions``)."""
    stale = stale_functions(recorded, version, folder)
    if stale:
        raise FunctionsOutOfDate(stale, version)


def pending(conn, folder: Path | None = None) -> list[Migration]:
    """The migrations not yet applied."""
    have = current_version(conn)
    conn.rollback()
    return [m for m in discover(folder) if m.version > have]


def upgrade(dsn: str, folder: Path | None = None, report=print) -> list[Migration | FunctionFile]:
    """Apply every pending migration, each in its own transaction, then every function file
    that changed, in one transaction; return what was applied (migrations, then function
    files), reporting each."""
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
        _record_superseded(conn, folder, report)
        for migration in discover(folder):
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                cur.execute("SELECT 1 FROM schema_migrations WHERE version = %s",
                            (migration.version,))
                if cur.fetchone():
                    continue
                try:
                    if migration.has_statements():
                        cur.execute(migration.sql())
                except psycopg2.Error as e:
                    raise MigrationError(f"{migration.path.name} failed: "
                                         f"{str(e).strip()}") from None
                cur.execute("INSERT INTO schema_migrations (version, name, checksum) "
                            "VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum()))
            applied.append(migration)
            report(f"applied {migration.path.name}")
        applied.extend(_apply_functions(conn, folder, report))
    finally:
        conn.close()
    return applied


def _record_superseded(conn, folder: Path | None, report) -> None:
    """Record the current checksum of each applied migration whose recorded one is
    ``SUPERSEDED``, so that the database names the files it is now consistent with."""
    done = []
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        cur.execute("SELECT version, checksum FROM schema_migrations")
        recorded = dict(cur.fetchall())
        for m in discover(folder):
            if m.version in recorded and _superseded(m, recorded[m.version]):
                cur.execute("UPDATE schema_migrations SET checksum = %s WHERE version = %s",
                            (m.checksum(), m.version))
                done.append(m)
    for m in done:  # after the commit, as upgrade reports everything
        report(f"recorded the new checksum of {m.path.name} "
               "(its function bodies moved to sql/functions/)")


def _apply_functions(conn, folder: Path | None, report) -> list[FunctionFile]:
    """Apply the function files that changed or were never applied, in order, in one
    transaction (all of a release's functions or none); return them."""
    if not discover_functions(folder):
        return []
    done = []
    with conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        version = current_version(conn)
        if version > required_version(folder):
            report(f"schema version {version} is newer than this cbserver's "
                   f"({required_version(folder)}): its functions are left as they are")
            return []
        cur.execute("SELECT to_regclass('schema_functions') IS NOT NULL")
        if not cur.fetchone()[0]:
            raise MigrationError("sql/functions/ has files but no migration created "
                                 "the schema_functions table")
        recorded = applied_functions(conn)
        for f in stale_functions(recorded, version, folder):
            try:
                cur.execute(f.sql())
            except psycopg2.Error as e:
                raise MigrationError(f"functions/{f.path.name} failed (no function file was "
                                     f"applied): {str(e).strip()}") from None
            cur.execute("INSERT INTO schema_functions (name, checksum) VALUES (%s, %s) "
                        "ON CONFLICT (name) DO UPDATE "
                        "SET checksum = EXCLUDED.checksum, applied_at = now()",
                        (f.name, f.checksum()))
            done.append(f)
    for f in done:  # after the commit: nothing is reported as applied that was rolled back
        report(f"applied functions/{f.path.name}")
    return done


def check_schema(conn, folder: Path | None = None) -> int:
    """Raise ``SchemaTooOld`` unless the database is at least at the required version,
    ``MigrationChanged`` if an applied migration's file changed since, and
    ``FunctionsOutOfDate`` if its functions are not the shipped files'; return the version."""
    recorded = applied(conn)
    have = max(recorded, default=0)
    need = required_version(folder)
    if have < need:
        raise SchemaTooOld(have, need)
    edited = changed(conn, folder, recorded)
    if edited:
        raise MigrationChanged(edited)
    check_functions(applied_functions(conn), have, folder)
    return have
