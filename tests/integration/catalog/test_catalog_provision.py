"""Declarative provisioning against the real PostgreSQL: the manual's example, idempotence, dry run."""

from __future__ import annotations

import csv
import os
import shutil

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import reactor

from cbserver.billing.provision import load, provision, provision_file_sync
from cbserver.billing.validation import ConflictError, ValidationError
from cbserver.db.stores import PostgresCatalogStore
from tests.integration.catalog.manual_example import DEMO, check_stored
from tests.integration.catalog.test_catalog_cli import cbs

pytestmark = pytest.mark.integration


def _count(dsn, table):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")  # table names are fixed in these tests
        return cur.fetchone()[0]


@pytest_twisted.ensureDeferred
async def test_demo_file_creates_the_manuals_example_and_twice_changes_nothing(db, pg_dsn, tmp_path):
    changes = await provision(PostgresCatalogStore(db), reactor, load(DEMO), csv_dir=tmp_path)
    assert [str(c) for c in changes][:2] == ["create destination 55", "create destination 1"]
    assert changes[-1].action == "generate" and changes[-1].key == "demo-cards"
    check_stored(pg_dsn)
    (csv_file,) = tmp_path.iterdir()
    assert os.stat(csv_file).st_mode & 0o777 == 0o600
    with open(csv_file, newline="") as f:
        assert len(list(csv.DictReader(f))) == 10
    assert await provision(PostgresCatalogStore(db), reactor, load(DEMO), csv_dir=tmp_path) == []
    assert len(list(tmp_path.iterdir())) == 1
    check_stored(pg_dsn)


@pytest_twisted.ensureDeferred
async def test_dry_run_lists_changes_and_writes_nothing(db, pg_dsn, tmp_path):
    changes = await provision(PostgresCatalogStore(db), reactor, load(DEMO), csv_dir=tmp_path, dry_run=True)
    assert "create tariff Callback" in [str(c) for c in changes]
    assert "generate batch demo-cards: 10 account(s)" in [str(c) for c in changes]
    for table in ("destinations", "tariffs", "rates", "products", "customers", "accounts", "batches"):
        assert _count(pg_dsn, table) == 0
    assert list(tmp_path.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_changed_file_updates_only_what_differs(db, pg_dsn, tmp_path):
    await provision(PostgresCatalogStore(db), reactor, load(DEMO), csv_dir=tmp_path)
    text = DEMO.read_text().replace('first_price = "0.0200"', 'first_price = "0.0250"') \
        .replace("demo-pass-2", "demo-pass-22").replace('credit_limit = "1000"', 'credit_limit = "900"')
    changed = tmp_path / "changed.toml"
    changed.write_text(text)
    dry = await provision(PostgresCatalogStore(db), reactor, load(changed), csv_dir=tmp_path, dry_run=True)
    assert [str(c) for c in dry] == ["update rate Callback/1@2026-01-01T00:00:00+00:00",
                                     "update customer Retail Callback: credit_limit",
                                     "update account cb1818000002: password"]
    assert [str(c) for c in await provision(PostgresCatalogStore(db),
                                            reactor, load(changed), csv_dir=tmp_path)] == \
        [str(c) for c in dry]
    assert await provision(PostgresCatalogStore(db), reactor, load(changed), csv_dir=tmp_path) == []


@pytest_twisted.ensureDeferred
async def test_a_bad_object_late_in_the_file_leaves_nothing_written(db, pg_dsn, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.read_text().replace('password = "Demo#Internal-2026!xQ"', 'password = "weak"'))
    with pytest.raises(ValidationError) as e:
        await provision(PostgresCatalogStore(db), reactor, load(bad), csv_dir=tmp_path)
    assert e.value.field == "account[2].password"
    for table in ("destinations", "tariffs", "rates", "products", "customers", "accounts"):
        assert _count(pg_dsn, table) == 0


@pytest_twisted.ensureDeferred
async def test_currency_change_in_the_file_is_a_conflict(db, tmp_path):
    await provision(PostgresCatalogStore(db), reactor, load(DEMO), csv_dir=tmp_path)
    euro = tmp_path / "euro.toml"
    euro.write_text(DEMO.read_text().replace('currency = "USD"                 # chosen',
                                             'currency = "EUR" #'))
    with pytest.raises(ConflictError, match=r"tariff\[0\]: currency cannot be changed"):
        await provision(PostgresCatalogStore(db), reactor, load(euro), csv_dir=tmp_path)


def test_rate_without_effective_from_and_naive_dates_are_refused(tmp_path, pg_dsn):
    f = tmp_path / "p.toml"
    f.write_text('[[destination]]\nprefix = "55"\n[[tariff]]\nname = "T"\ncurrency = "USD"\n'
                 '[[tariff.rate]]\nprefix = "55"\nfirst_interval = 60\nnext_interval = 6\n'
                 'first_price = "0.05"\nnext_price = "0.05"\n')
    proc = cbs("provision", str(f), "--dsn", pg_dsn, "--csv-dir", str(tmp_path), check=False)
    assert proc.returncode == 1 and "tariff[0].rate[0].effective_from: is required" in proc.stderr
    f.write_text(f.read_text() + "effective_from = 2026-01-01T00:00:00\n")
    proc = cbs("provision", str(f), "--dsn", pg_dsn, "--csv-dir", str(tmp_path), check=False)
    assert proc.returncode == 1 and "effective_from: must carry a time zone" in proc.stderr


def test_passwords_from_files_and_unknown_sections(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "internal").write_text("Vq7#mZ2!pL9x\n")
    f = tmp_path / "p.toml"
    f.write_text('[[account]]\nid = "cb-internal"\npassword_file = "secrets/internal"\n')
    assert load(f)["account"][0]["password"] == "Vq7#mZ2!pL9x"
    f.write_text('[[acount]]\nid = "x"\n')
    with pytest.raises(ValidationError) as e:
        load(f)
    assert e.value.field == "acount"


def test_cli_provision_twice_and_dry_run(tmp_path, pg_dsn):
    shutil.copy(DEMO, tmp_path / "demo.toml")
    args = (str(tmp_path / "demo.toml"), "--dsn", pg_dsn, "--csv-dir", str(tmp_path / "cards"))
    dry = cbs("provision", *args, "--dry-run").stdout
    assert "would create product Callback Services" in dry and _count(pg_dsn, "accounts") == 0
    first = cbs("provision", *args)
    assert "create account cb-internal" in first.stdout
    check_stored(pg_dsn)
    second = cbs("provision", *args)
    assert second.stdout.strip() == "nothing to change"


def test_provision_file_sync_for_the_demo_command(tmp_path, pg_dsn):
    out = provision_file_sync(pg_dsn, DEMO, csv_dir=tmp_path)
    assert "create tariff Callback" in out
    check_stored(pg_dsn)
    with pytest.raises(ValidationError):
        provision_file_sync(pg_dsn, tmp_path / "missing.toml", csv_dir=tmp_path)
