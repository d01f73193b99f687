"""Repeatable function files on a real PostgreSQL: a changed file is applied again and an
unchanged one is not, a signature change drops the old function, a failing file applies none."""

from __future__ import annotations

import hashlib
import shutil

import psycopg2
import pytest

from cbserver.db.migrations import FunctionsOutOfDate, MigrationError, check_schema, upgrade
from cbserver.resources import sql_dir
from tests.integration.xdr.helpers import query

pytestmark = pytest.mark.integration

ONE = """CREATE OR REPLACE FUNCTION t_one(p integer) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT p + 1 $$;
"""
TWO = """CREATE OR REPLACE FUNCTION t_two(p integer) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$ SELECT t_one(p) * 2 $$;
"""


@pytest.fixture
def folder(tmp_path):
    """A migrations folder: one table, the schema_functions migration, two function files
    (the second calls the first)."""
    (tmp_path / "001_t.sql").write_text("CREATE TABLE t (x int);\n")
    shutil.copy(next(sql_dir().glob("034_*.sql")), tmp_path / "034_schema_functions.sql")
    (tmp_path / "functions").mkdir()
    (tmp_path / "functions" / "10_t_one.sql").write_text(ONE)
    (tmp_path / "functions" / "20_t_two.sql").write_text(TWO)
    return tmp_path


def one(dsn, statement, params=()):
    """The first row of one query."""
    return query(dsn, statement, params)[0]


def proc_version(dsn, name):
    """The pg_proc row's xmin: a CREATE OR REPLACE writes a new row version."""
    return one(dsn, "SELECT xmin::text FROM pg_proc WHERE proname = %s", (name,))[0]


def names(applied):
    return [a.path.name for a in applied]


def test_a_changed_file_is_applied_again_and_an_unchanged_one_is_not(folder, empty_pg_dsn):
    said = []
    assert names(upgrade(empty_pg_dsn, folder, report=said.append)) == [
        "001_t.sql", "034_schema_functions.sql", "10_t_one.sql", "20_t_two.sql"]
    assert said[-2:] == ["applied functions/10_t_one.sql", "applied functions/20_t_two.sql"]
    assert one(empty_pg_dsn, "SELECT t_two(1)") == (4,)
    assert upgrade(empty_pg_dsn, folder, report=lambda _line: None) == []
    one_before, two_before = proc_version(empty_pg_dsn, "t_one"), proc_version(empty_pg_dsn, "t_two")

    (folder / "functions" / "20_t_two.sql").write_text(TWO.replace("* 2", "* 3"))
    conn = psycopg2.connect(empty_pg_dsn)
    try:
        with pytest.raises(FunctionsOutOfDate, match="20_t_two.sql"):
            check_schema(conn, folder)  # the server would not start on the old t_two
    finally:
        conn.close()
    said = []
    assert names(upgrade(empty_pg_dsn, folder, report=said.append)) == ["20_t_two.sql"]
    assert said == ["applied functions/20_t_two.sql"]
    assert one(empty_pg_dsn, "SELECT t_two(1)") == (6,)
    assert proc_version(empty_pg_dsn, "t_one") == one_before  # not run again
    assert proc_version(empty_pg_dsn, "t_two") != two_before
    checksum = one(empty_pg_dsn, "SELECT checksum FROM schema_functions WHERE name = 't_two'")[0]
    assert checksum == hashlib.sha256((folder / "functions" / "20_t_two.sql").read_bytes()).hexdigest()


def test_a_file_changing_a_signature_drops_the_old_one_itself(folder, empty_pg_dsn):
    upgrade(empty_pg_dsn, folder, report=lambda _line: None)
    (folder / "functions" / "10_t_one.sql").write_text(
        "DROP FUNCTION IF EXISTS t_one(integer);\n"
        "CREATE OR REPLACE FUNCTION t_one(p integer, q integer DEFAULT 1) RETURNS bigint\n"
        "LANGUAGE sql IMMUTABLE AS $$ SELECT (p + q)::bigint $$;\n")
    assert names(upgrade(empty_pg_dsn, folder, report=lambda _line: None)) == ["10_t_one.sql"]
    assert one(empty_pg_dsn, "SELECT count(*) FROM pg_proc WHERE proname = 't_one'") == (1,)
    assert one(empty_pg_dsn, "SELECT t_one(1, 5)") == (6,)


def test_a_failing_function_file_applies_none_of_them(folder, empty_pg_dsn):
    upgrade(empty_pg_dsn, folder, report=lambda _line: None)
    (folder / "functions" / "10_t_one.sql").write_text(ONE.replace("p + 1", "p + 10"))
    (folder / "functions" / "20_t_two.sql").write_text("CREATE FUNCTION broken( AS;\n")
    with pytest.raises(MigrationError, match="functions/20_t_two.sql failed"):
        upgrade(empty_pg_dsn, folder, report=lambda _line: None)
    assert one(empty_pg_dsn, "SELECT t_one(1)") == (2,)  # the edit of 10 was rolled back too
    (folder / "functions" / "20_t_two.sql").write_text(TWO)
    assert names(upgrade(empty_pg_dsn, folder, report=lambda _line: None)) == ["10_t_one.sql"]
    assert one(empty_pg_dsn, "SELECT t_two(1)") == (22,)


def test_function_files_without_the_schema_functions_table_are_refused(folder, empty_pg_dsn):
    (folder / "034_schema_functions.sql").unlink()
    with pytest.raises(MigrationError, match="no migration created the schema_functions table"):
        upgrade(empty_pg_dsn, folder, report=lambda _line: None)
