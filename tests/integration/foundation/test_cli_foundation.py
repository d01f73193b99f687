"""The cbserver command's foundation sub-commands, run as a user would run them."""

import subprocess
import sys
import tomllib
from pathlib import Path

import psycopg2
import pytest

from cbserver.db.migrations import required_version
from cbserver.resources import sql_dir

pytestmark = pytest.mark.integration

CBSERVER = str(Path(sys.executable).parent / "cbserver")


def run(*args, check=True):
    proc = subprocess.run([CBSERVER, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_config_example_is_valid_toml_and_passes_check(tmp_path):
    text = run("config", "example").stdout
    tomllib.loads(text)
    path = tmp_path / "c.toml"
    path.write_text(text)
    out = run("config", "check", str(path)).stdout
    assert "OK (1 application(s): 'Web callback' at /web-callback)" in out


def test_config_check_reports_one_line_and_fails(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(run("config", "example").stdout.replace("[sip]\n", "[sip]\nlisten_on = 1\n"))
    proc = run("config", "check", str(path), check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "[sip.listen_on] unknown key; did you mean 'listen'?" in lines[0]


def test_db_upgrade_applies_everything_once_then_nothing(empty_pg_dsn):
    first = run("db", "upgrade", "--dsn", empty_pg_dsn).stdout
    assert "applied 001_core.sql" in first
    assert run("db", "upgrade", "--dsn", empty_pg_dsn).stdout.strip() == "schema is up to date"
    status = run("db", "status", "--dsn", empty_pg_dsn).stdout
    assert f"schema version {required_version()}" in status and "PENDING" not in status
    with psycopg2.connect(empty_pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), max(version) FROM schema_migrations")
        count, top = cur.fetchone()
    assert top == required_version() and count == len(list(sql_dir().glob("*.sql")))


def test_db_status_lists_pending_on_an_empty_database(empty_pg_dsn):
    status = run("db", "status", "--dsn", empty_pg_dsn).stdout
    assert "schema version 0" in status and "001 core: PENDING" in status


def test_db_upgrade_with_a_dsn_that_does_not_connect(tmp_path):
    proc = run("db", "upgrade", "--dsn", f"host={tmp_path} dbname=nope", check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("cbserver db: cannot connect to")
    assert "Traceback" not in proc.stderr


def test_failed_migration_is_rolled_back_and_named(tmp_path, empty_pg_dsn):
    from cbserver.db.migrations import MigrationError, upgrade

    (tmp_path / "001_ok.sql").write_text("CREATE TABLE t_ok (x int);")
    (tmp_path / "002_bad.sql").write_text("CREATE TABLE t_bad (x int); SELECT nonsense FROM nowhere;")
    try:
        upgrade(empty_pg_dsn, tmp_path, report=lambda _line: None)
    except MigrationError as e:
        assert "002_bad.sql failed" in str(e)
    else:
        raise AssertionError("the bad migration was applied")
    with psycopg2.connect(empty_pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('t_ok') IS NOT NULL, to_regclass('t_bad') IS NOT NULL")
        assert cur.fetchone() == (True, False)
        cur.execute("SELECT version FROM schema_migrations")
        assert cur.fetchall() == [(1,)]


def test_an_applied_migration_that_changed_is_refused_by_name(tmp_path, empty_pg_dsn):
    from cbserver.db.migrations import MigrationChanged, check_schema, upgrade

    (tmp_path / "001_one.sql").write_text("CREATE TABLE t_one (x int);\n")
    (tmp_path / "002_two.sql").write_text("CREATE TABLE t_two (x int);\n")
    upgrade(empty_pg_dsn, tmp_path, report=lambda _line: None)
    # The same text with CRLF line ends (a Windows checkout) is not a change.
    (tmp_path / "002_two.sql").write_bytes(b"CREATE TABLE t_two (x int);\r\n")
    assert upgrade(empty_pg_dsn, tmp_path, report=lambda _line: None) == []
    # An edit is, and nothing after it is applied: 003 waits until the database is sorted out.
    (tmp_path / "002_two.sql").write_text("CREATE TABLE t_two (x int, y int);\n")
    (tmp_path / "003_three.sql").write_text("CREATE TABLE t_three (x int);\n")
    try:
        upgrade(empty_pg_dsn, tmp_path, report=lambda _line: None)
    except MigrationChanged as e:
        assert [m.path.name for m in e.changed] == ["002_two.sql"]
        assert "002_two.sql changed after being applied" in str(e)
    else:
        raise AssertionError("upgrade went on over a changed migration")
    with psycopg2.connect(empty_pg_dsn) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('t_three') IS NULL")
            assert cur.fetchone() == (True,)
        (tmp_path / "003_three.sql").unlink()
        try:
            check_schema(conn, tmp_path)
        except MigrationChanged as e:
            assert [m.version for m in e.changed] == [2]
        else:
            raise AssertionError("check_schema accepted a changed migration")
    conn.close()


def test_db_status_marks_a_changed_migration_and_fails(pg_dsn):
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
    conn.close()
    proc = run("db", "status", "--dsn", pg_dsn, check=False)
    assert proc.returncode == 1
    first = sorted(sql_dir().glob("001_*.sql"))[0].stem[4:]
    assert f"  001 {first}: CHANGED since it was applied" in proc.stdout
    assert proc.stdout.count("CHANGED") == 1
    proc = run("db", "upgrade", "--dsn", pg_dsn, check=False)
    assert proc.returncode == 1
    assert "changed after being applied" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_rebuilds_a_database_it_cannot_upgrade(pg_cluster, pg_dsn, capsys):
    from cbserver.commands.demo import _upgrade_demo_database

    name = psycopg2.extensions.parse_dsn(pg_dsn)["dbname"]
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = %s",
                    (required_version(),))
        cur.execute("CREATE TABLE left_from_before (x int)")
    conn.close()
    _upgrade_demo_database(pg_cluster, name)
    assert "rebuilding it with the demo data" in capsys.readouterr().out
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass('left_from_before') IS NULL, count(*), "
                    "count(*) FILTER (WHERE checksum = 'edited') FROM schema_migrations")
        assert cur.fetchone() == (True, len(list(sql_dir().glob("*.sql"))), 0)
    conn.close()
    _upgrade_demo_database(pg_cluster, name)  # now current: nothing to rebuild
    assert "rebuilding" not in capsys.readouterr().out


def test_pg_status_and_dsn(pg_cluster):
    assert run("pg", "status").stdout.startswith("running:")
    assert run("pg", "dsn").stdout.strip() == pg_cluster.dsn()
