"""The migrations runner's file logic, without a database: the order function files are
applied in, which of them are stale, and which migration checksums still count."""

from __future__ import annotations

import pytest

from cbserver.db.migrations import (
    SUPERSEDED,
    FunctionsOutOfDate,
    MigrationError,
    SchemaTooOld,
    changed,
    check_functions,
    discover,
    discover_functions,
    required_version,
    stale_functions,
)
from cbserver.resources import sql_dir


def files(folder, names: dict[str, str]):
    """Write ``{relative path: text}`` under ``folder``; return ``folder``."""
    for name, text in names.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def test_function_files_are_applied_in_prefix_order_then_by_name(tmp_path):
    files(tmp_path, {"001_a.sql": "CREATE TABLE a (x int);",
                     "functions/20_b_uses_a.sql": "-- b", "functions/05_z_first.sql": "-- z",
                     "functions/20_a_same_rank.sql": "-- a", "functions/100_x.txt": "not sql"})
    got = discover_functions(tmp_path)
    assert [(f.order, f.name) for f in got] == [(5, "z_first"), (20, "a_same_rank"), (20, "b_uses_a")]
    assert [m.version for m in discover(tmp_path)] == [1]  # functions/ is not a migration


def test_no_functions_folder_means_no_function_files(tmp_path):
    files(tmp_path, {"001_a.sql": "SELECT 1;"})
    assert discover_functions(tmp_path) == []


@pytest.mark.parametrize("name", ["cb_x.sql", "1_cb_x.sql", "010_cb_x.sql", "10_Cb-X.sql"])
def test_a_badly_named_function_file_is_refused(tmp_path, name):
    files(tmp_path, {f"functions/{name}": "-- x"})
    with pytest.raises(MigrationError, match="must be named NN_name.sql"):
        discover_functions(tmp_path)


def test_two_function_files_may_not_share_a_name(tmp_path):
    files(tmp_path, {"functions/10_cb_x.sql": "-- x", "functions/20_cb_x.sql": "-- x"})
    with pytest.raises(MigrationError, match="share the name cb_x"):
        discover_functions(tmp_path)


def test_stale_functions_are_the_new_and_the_changed_ones_in_order(tmp_path):
    files(tmp_path, {"001_a.sql": "SELECT 1;", "functions/10_one.sql": "-- one",
                     "functions/20_two.sql": "-- two", "functions/30_three.sql": "-- three"})
    one, two, three = discover_functions(tmp_path)
    assert stale_functions({}, 1, tmp_path) == [one, two, three]
    recorded = {"one": one.checksum(), "two": "an older checksum", "gone": "x"}
    assert stale_functions(recorded, 1, tmp_path) == [two, three]
    recorded.update(two=two.checksum(), three=three.checksum())
    assert stale_functions(recorded, 1, tmp_path) == []


def test_a_function_file_checksum_ignores_crlf_but_not_edits(tmp_path):
    files(tmp_path, {"functions/10_one.sql": "-- one\nSELECT 1;\n"})
    (before,) = discover_functions(tmp_path)
    checksum = before.checksum()
    before.path.write_bytes(b"-- one\r\nSELECT 1;\r\n")
    assert before.checksum() == checksum
    before.path.write_text("-- one\nSELECT 2;\n")
    assert before.checksum() != checksum


def test_the_functions_of_a_newer_database_are_left_alone(tmp_path):
    files(tmp_path, {"001_a.sql": "SELECT 1;", "002_b.sql": "SELECT 1;",
                     "functions/10_one.sql": "-- one"})
    assert required_version(tmp_path) == 2
    assert stale_functions({}, 3, tmp_path) == []
    check_functions({}, 3, tmp_path)  # no error: a newer cbserver owns them


def test_check_functions_names_the_stale_files_and_the_upgrade_command(tmp_path):
    files(tmp_path, {"001_a.sql": "SELECT 1;", "functions/10_one.sql": "-- one",
                     "functions/20_two.sql": "-- two"})
    one, _two = discover_functions(tmp_path)
    with pytest.raises(FunctionsOutOfDate) as caught:
        check_functions({"one": one.checksum()}, 1, tmp_path)
    assert isinstance(caught.value, SchemaTooOld)  # so the pool waits for an upgrade
    assert [f.name for f in caught.value.stale] == ["two"]
    assert "20_two.sql" in str(caught.value) and "cbserver db upgrade" in str(caught.value)
    check_functions({"one": one.checksum(), "two": _two.checksum()}, 1, tmp_path)


def test_a_superseded_checksum_of_031_to_033_is_not_a_change():
    shipped = {m.version: m for m in discover()}
    recorded = {v: next(iter(SUPERSEDED[v])) for v in SUPERSEDED}
    assert changed(None, recorded=recorded) == []
    recorded[1] = "edited"
    assert changed(None, recorded=recorded) == [shipped[1]]
    assert changed(None, recorded={31: "some other text"}) == [shipped[31]]


def test_a_migration_of_comments_only_has_no_statements(tmp_path):
    files(tmp_path, {"001_moved.sql": "-- moved elsewhere\n\n   -- really\n",
                     "002_real.sql": "-- a table\nCREATE TABLE t (x int);\n"})
    moved, real = discover(tmp_path)
    assert not moved.has_statements() and real.has_statements()


def test_the_shipped_function_files_are_in_dependency_order():
    # cb_node_alive is asked by the slot rule and the holds; the slot rule by cb_take_slot.
    order = [f.name for f in discover_functions()]
    assert order.index("cb_node_alive") < order.index("cb_slot_live") < order.index("cb_take_slot")
    assert order.index("cb_node_alive") < min(order.index("cb_reserve"),
                                              order.index("cb_account_for_call"))
    # and no numbered migration carries a function body any more, bar the trigger functions
    # created with their triggers
    for m in discover():
        for line in m.sql().splitlines():
            if line.startswith("CREATE") and "FUNCTION" in line:
                assert "RETURNS trigger" in line, f"{m.path.name}: {line}"


def test_the_node_alive_rule_is_stated_once():
    # cb_node_alive is the only place that judges server_nodes.last_seen/stopped_at; the
    # heartbeat (cbserver/db/pool.py) only writes them.
    root = sql_dir().parent
    places = [p for p in [*sql_dir().glob("*.sql"), *sql_dir().glob("functions/*.sql"),
                          *(root / "cbserver").rglob("*.py")]
              if "last_seen >" in p.read_text(encoding="utf-8")
              or "stopped_at IS NULL" in p.read_text(encoding="utf-8")]
    assert [p.name for p in places] == ["10_cb_node_alive.sql"]
