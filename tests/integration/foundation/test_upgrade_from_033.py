"""An existing database upgrades cleanly: one built by migrations 001..033 as first shipped
(031-033 then carried the function bodies that now live in sql/functions/) is brought to the
current schema by ``upgrade`` and ends with the same functions as a fresh database."""

from __future__ import annotations

import hashlib
import shutil
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest

from cbserver.db.migrations import (
    SUPERSEDED,
    check_schema,
    discover,
    discover_functions,
    required_version,
    upgrade,
)
from tests.integration.xdr.helpers import query as rows

pytestmark = pytest.mark.integration

AT_033 = Path(__file__).resolve().parents[2] / "data" / "migrations_at_033"
NODE = "00000000-0000-0000-0000-0000000000aa"

# Every function of the public schema with its full definition, by signature.
FUNCTION_DEFS = """
SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public' ORDER BY 1
"""

ACCOUNT_FOR_CALL = "SELECT * FROM cb_account_for_call('cb1001', 'mine', 60, 'node1', ARRAY[''])"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()


def kept_files() -> dict[str, Path]:
    """The first-shipped 031..033, by their migration file name. They are stored with the
    ending ``.sql.as-shipped``: frozen data this test reads, not SQL anyone maintains (the
    live definitions are sql/functions/), so tools that look for copied code pass them over."""
    return {p.name.removesuffix(".as-shipped"): p for p in AT_033.glob("*.sql.as-shipped")}


def folder_at_033(tmp_path: Path) -> Path:
    """sql/ as it was at migration 033: the shipped 001..030 (never edited since: the runner
    refuses a changed applied migration) and the first-shipped 031..033."""
    out = tmp_path / "sql_at_033"
    out.mkdir()
    kept = kept_files()
    for m in discover():
        if m.version <= 33 and m.path.name not in kept:
            shutil.copy(m.path, out / m.path.name)
    for name, path in kept.items():
        shutil.copy(path, out / name)
    return out


def fill(dsn: str) -> None:
    """Some of everything the functions read: an account with a rating entry, a live node,
    a hold of another session, a callback session holding a concurrency slot, a payment."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO destinations (prefix) VALUES ('1')")
            cur.execute("INSERT INTO tariffs (name, currency) VALUES ('T', 'USD') RETURNING id")
            (tariff,) = cur.fetchone()
            cur.execute("INSERT INTO rates (tariff_id, prefix, first_interval, next_interval, "
                        "first_price, next_price) VALUES (%s, '1', 60, 60, 0.1, 0.1)", (tariff,))
            cur.execute("INSERT INTO products (name, currency) VALUES ('P', 'USD') RETURNING id")
            (product,) = cur.fetchone()
            cur.execute("INSERT INTO product_services VALUES (%s, 'voice')", (product,))
            cur.execute("INSERT INTO rating_entries (product_id, node, tariff_id) "
                        "VALUES (%s, 'node1', %s)", (product, tariff))
            cur.execute("INSERT INTO customers (name, currency) VALUES ('C', 'USD') RETURNING id")
            (customer,) = cur.fetchone()
            cur.execute("INSERT INTO accounts (id, customer_id, product_id, balance, "
                        "first_usage, last_usage) VALUES ('cb1001', %s, %s, 25.5, "
                        "'2026-01-01Z', '2026-02-01Z')", (customer, product))
            cur.execute("INSERT INTO payments (account_id, amount, currency, balance_after, "
                        "made_by) VALUES ('cb1001', 5, 'USD', 25.5, 'admin')")
            cur.execute("UPDATE accounts SET last_recharge = '2026-03-01Z' WHERE id = 'cb1001'")
            cur.execute("INSERT INTO server_nodes (node, instance_id, hostname, pid, version) "
                        "VALUES ('node1', %s, 'h', 1, 'x')", (NODE,))
            cur.execute("INSERT INTO balance_reservations (session_id, leg, account_id, owner_key, "
                        "amount, currency, instance_id, expires_at) VALUES ('other', 'A', 'cb1001', "
                        "'account:cb1001', 1.25, 'USD', %s, now() + interval '1 hour')", (NODE,))
            cur.execute("INSERT INTO callback_sessions (id, application, mode, account_id, phone, "
                        "status, state, node, instance_id) VALUES ('sess-1', 'A', 'simple', "
                        "'cb1001', '15550100', 'connected', '{}', 'node1', %s)", (NODE,))
            cur.execute("INSERT INTO callback_slots (slot_id, account_id, taken_at, callback_id) "
                        "VALUES ('00000000-0000-0000-0000-000000000001', 'cb1001', 100, 'sess-1')")
    finally:
        conn.close()


def test_the_kept_files_are_the_first_shipped_031_to_033():
    got = {int(name[:3]): sha(path) for name, path in kept_files().items()}
    assert sorted(got) == sorted(SUPERSEDED)
    assert all(got[v] in SUPERSEDED[v] for v in got)


def test_a_database_at_033_upgrades_to_the_current_schema_and_functions(
        tmp_path, empty_pg_dsn, pg_dsn):
    old = folder_at_033(tmp_path)
    upgrade(empty_pg_dsn, old, report=lambda _line: None)
    assert rows(empty_pg_dsn, "SELECT max(version) FROM schema_migrations") == [(33,)]
    assert rows(empty_pg_dsn, "SELECT to_regclass('schema_functions')") == [(None,)]
    fill(empty_pg_dsn)
    account_before = rows(empty_pg_dsn, ACCOUNT_FOR_CALL)
    slots_before = rows(empty_pg_dsn, "SELECT cb_count_slots('cb1001', 0, 60)")
    assert account_before[0][-3:-1] == (Decimal("1.25"), 1)  # the other session's hold

    said = []
    done = upgrade(empty_pg_dsn, report=said.append)

    functions = discover_functions()
    assert [d.path.name for d in done] == (
        [m.path.name for m in discover() if m.version > 33] + [f.path.name for f in functions])
    assert [line for line in said if "recorded the new checksum" in line] == [
        f"recorded the new checksum of {m.path.name} (its function bodies moved to sql/functions/)"
        for m in discover() if m.version in SUPERSEDED]
    assert f"applied functions/{functions[0].path.name}" in said
    # The schema is current, every recorded checksum is the shipped file's, and check_schema
    # (the server's start-up check) accepts it.
    assert rows(empty_pg_dsn, "SELECT max(version) FROM schema_migrations") == [(required_version(),)]
    assert dict(rows(empty_pg_dsn, "SELECT version, checksum FROM schema_migrations")) == {
        m.version: m.checksum() for m in discover()}
    assert dict(rows(empty_pg_dsn, "SELECT name, checksum FROM schema_functions")) == {
        f.name: f.checksum() for f in functions}
    conn = psycopg2.connect(empty_pg_dsn)
    try:
        assert check_schema(conn) == required_version()
    finally:
        conn.close()
    # The functions are exactly those a fresh database gets from the current files.
    upgraded = rows(empty_pg_dsn, FUNCTION_DEFS)
    assert upgraded == rows(pg_dsn, FUNCTION_DEFS)
    names = [sig.split("(")[0] for sig, _ in upgraded]
    assert "cb_node_alive" in names
    assert all("last_seen" not in body for sig, body in upgraded if sig.startswith("cb_")
               and not sig.startswith("cb_node_alive("))
    # The data survived, and the functions read it as the old ones did.
    # ... with one column more since (the account's fingerprint, sql/functions/48).
    after = rows(empty_pg_dsn, ACCOUNT_FOR_CALL)
    assert [r[:len(account_before[0])] for r in after] == account_before
    assert len(after[0]) == len(account_before[0]) + 1 and len(after[0][-1]) == 32
    assert rows(empty_pg_dsn, "SELECT cb_count_slots('cb1001', 0, 60)") == slots_before == [(1,)]
    assert rows(empty_pg_dsn, "SELECT count(*) FROM payments") == [(1,)]
    assert rows(empty_pg_dsn, "SELECT status FROM callback_sessions") == [("connected",)]
    # The status CHECK is there, validated, and refuses a status no callback goes through.
    assert rows(empty_pg_dsn, "SELECT convalidated FROM pg_constraint "
                              "WHERE conname = 'callback_sessions_status'") == [(True,)]
    with pytest.raises(psycopg2.errors.CheckViolation):
        rows(empty_pg_dsn, "UPDATE callback_sessions SET status = 'lost'")
    # Run again: nothing left to do.
    assert upgrade(empty_pg_dsn, report=lambda _line: None) == []
