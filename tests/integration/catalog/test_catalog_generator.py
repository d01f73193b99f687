"""The account generator against the real PostgreSQL: fields, CSV, all-or-nothing, feasibility."""

from __future__ import annotations

import csv
import datetime as dt
import os
from decimal import Decimal

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from cbserver.billing.generator import Generator
from cbserver.billing.passwords import verify_password
from cbserver.billing.validation import ConflictError, ValidationError
from cbserver.db.stores import PostgresCatalogStore

pytestmark = pytest.mark.integration


async def _setup(catalog, accounts):
    await catalog.create_tariff({"name": "Callback", "currency": "USD"})
    await catalog.create_product({"name": "Callback Services", "currency": "USD",
                                  "rating_list": [{"node": "node1", "tariff": "Callback"}]})
    await accounts.create_customer({"name": "Retail", "currency": "USD"})


def _count(pg_dsn, sql="SELECT count(*) FROM accounts"):
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchone()[0]


REQUEST = {"customer": "Retail", "product": "Callback Services", "quantity": 300, "batch": "cards-1",
           "prefix": "cb1818", "length": 9, "opening_balance": "20"}


@pytest_twisted.ensureDeferred
async def test_generates_every_field_and_an_owner_only_csv(catalog, accounts, db, tmp_path, pg_dsn):
    await _setup(catalog, accounts)
    progress = []
    result = await Generator(PostgresCatalogStore(db), reactor, tmp_path / "cards").generate({
        **REQUEST, "role": "universal", "account_type": "debit", "manual_activation": True,
        "method": "random", "service_password": "auto", "distributor": "Kiosk 7",
        "activation_date": "2026-01-01T00:00:00+00:00", "expiration_date": "2027-01-01T00:00:00+00:00",
        "avail_after_first_use_days": 90, "avail_after_last_use_days": 30, "ecommerce": False,
        "web_credentials": "auto", "time_zone": "America/Sao_Paulo", "language": "pt-BR"},
        progress=lambda *a: progress.append(a))
    assert result["quantity"] == 300 and result["status"] == "inactive"
    path = result["csv_path"]
    assert os.stat(path).st_mode & 0o777 == 0o600
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 300 and len({r["id"] for r in rows}) == 300
    assert set(rows[0]) == {"id", "service_password", "web_login", "web_password", "balance", "status",
                            "expiration_date"}
    for r in rows:
        assert r["id"].startswith("cb1818") and len(r["id"]) == 11 and r["web_login"] == r["id"]
        assert r["balance"] == "20" and r["status"] == "inactive"
        assert r["expiration_date"] == "2027-01-01T00:00:00+00:00"
    assert progress[-1] == ("writing", 300, 300)
    a = await accounts.get_account(rows[0]["id"])
    assert (a["batch"], a["customer"], a["product"], a["status"], a["balance"], a["opening_balance"]) == \
        ("cards-1", "Retail", "Callback Services", "inactive", Decimal("20"), Decimal("20"))
    assert (a["distributor"], a["time_zone"], a["language"], a["avail_after_first_use_days"],
            a["avail_after_last_use_days"], a["ecommerce"]) == \
        ("Kiosk 7", "America/Sao_Paulo", "pt-BR", 90, 30, False)
    assert a["expiration_date"] == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT password_hash, web_password_hash FROM accounts WHERE id = %s", [rows[0]["id"]])
        service_hash, web_hash = cur.fetchone()
    assert verify_password(rows[0]["service_password"], service_hash)
    assert verify_password(rows[0]["web_password"], web_hash)
    batch = await accounts.get_batch("cards-1")
    assert batch["accounts"] == {"inactive": 300}
    assert batch["generator_runs"][0]["csv_path"] == path
    assert "password" not in str(batch["generator_runs"][0]["parameters"]).replace("service_password", "")


@pytest_twisted.ensureDeferred
async def test_empty_web_credentials_and_no_manual_activation(catalog, accounts, db, tmp_path):
    await _setup(catalog, accounts)
    result = await Generator(PostgresCatalogStore(db), reactor, tmp_path).generate(
        {**REQUEST, "quantity": 5, "manual_activation": False, "web_credentials": "empty",
         "service_password": "none"})
    with open(result["csv_path"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(r["web_login"] == "" and r["web_password"] == "" and r["service_password"] == ""
               for r in rows)
    a = await accounts.get_account(rows[0]["id"])
    assert a["status"] == "active" and not a["has_password"] and a["web_login"] is None


@pytest_twisted.ensureDeferred
async def test_infeasible_batch_is_refused_before_anything_is_created(catalog, accounts, db, tmp_path,
                                                                     pg_dsn):
    await _setup(catalog, accounts)
    with pytest.raises(ValidationError) as e:
        await Generator(PostgresCatalogStore(db), reactor, tmp_path).generate(
            {**REQUEST, "quantity": 1000, "prefix": "55", "length": 4})
    assert e.value.field == "quantity" and "only 100 IDs are possible" in e.value.reason
    assert _count(pg_dsn) == 0 and _count(pg_dsn, "SELECT count(*) FROM batches") == 0
    assert list(tmp_path.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_existing_accounts_count_against_feasibility_and_are_never_reused(catalog, accounts, db,
                                                                               tmp_path, pg_dsn):
    await _setup(catalog, accounts)
    gen = Generator(PostgresCatalogStore(db), reactor, tmp_path)
    await gen.generate({**REQUEST, "quantity": 60, "prefix": "55", "length": 4, "batch": "b1"})
    with pytest.raises(ValidationError, match="only 40 IDs are possible"):
        await gen.generate({**REQUEST, "quantity": 41, "prefix": "55", "length": 4, "batch": "b2"})
    await gen.generate({**REQUEST, "quantity": 40, "prefix": "55", "length": 4, "batch": "b2"})
    assert _count(pg_dsn, "SELECT count(DISTINCT id) FROM accounts WHERE id LIKE '55__'") == 100


@pytest_twisted.ensureDeferred
async def test_existing_batch_is_extended_and_a_new_batch_name_must_be_free(catalog, accounts, db, tmp_path):
    await _setup(catalog, accounts)
    gen = Generator(PostgresCatalogStore(db), reactor, tmp_path)
    await gen.generate({**REQUEST, "quantity": 3})
    with pytest.raises(ConflictError):
        await gen.generate({**REQUEST, "quantity": 3})
    await gen.generate({**REQUEST, "quantity": 4, "new_batch": False})
    assert (await accounts.get_batch("cards-1"))["accounts"] == {"inactive": 7}


@pytest_twisted.ensureDeferred
async def test_debit_batch_with_a_credit_limit_is_refused(catalog, accounts, db, tmp_path):
    await _setup(catalog, accounts)
    with pytest.raises(ValidationError) as e:
        await Generator(PostgresCatalogStore(db),
                        reactor, tmp_path).generate({**REQUEST, "credit_limit": "5"})
    assert e.value.field == "credit_limit"


@pytest_twisted.ensureDeferred
async def test_failed_write_leaves_no_accounts_no_batch_and_no_csv(catalog, accounts, db, tmp_path, pg_dsn):
    await _setup(catalog, accounts)
    gen = Generator(PostgresCatalogStore(db), reactor, tmp_path)
    # A batch that appears after the checks: the COPY transaction fails on the batch name.
    real_check = gen.check

    async def racing_check(data):
        checked = await real_check(data)
        await accounts.create_batch({"name": "cards-1", "customer": "Retail"})
        return checked

    gen.check = racing_check
    with pytest.raises(ConflictError):
        await gen.generate({**REQUEST, "quantity": 50})
    assert _count(pg_dsn) == 0
    assert list(tmp_path.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_two_generators_racing_for_one_small_space_never_share_an_id(catalog, accounts, db, tmp_path,
                                                                           pg_dsn):
    await _setup(catalog, accounts)
    gen = Generator(PostgresCatalogStore(db), reactor, tmp_path)
    runs = [gen.generate({**REQUEST, "quantity": 50, "prefix": "55", "length": 4, "batch": f"b{i}",
                          "service_password": "none"}) for i in range(2)]
    results = await defer.gatherResults([defer.ensureDeferred(r) for r in runs], consumeErrors=True)
    assert sorted(r["quantity"] for r in results) == [50, 50]
    assert _count(pg_dsn, "SELECT count(DISTINCT id) FROM accounts WHERE id LIKE '55__'") == 100


@pytest_twisted.ensureDeferred
async def test_a_generator_write_waits_for_the_one_in_progress(catalog, accounts, db, tmp_path, pg_dsn):
    """Writes are serialised by an advisory lock, so two COPYs never deadlock on shared ids."""
    from cbserver.db.accounts_store import GENERATOR_LOCK

    await _setup(catalog, accounts)
    holder = psycopg2.connect(pg_dsn)
    try:
        holder.autocommit = False
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", GENERATOR_LOCK)
        run = defer.ensureDeferred(Generator(PostgresCatalogStore(db), reactor, tmp_path).generate(
            {**REQUEST, "quantity": 20, "service_password": "none"}))
        waiting = False
        for _ in range(100):
            await task.deferLater(reactor, 0.05, lambda: None)
            if _count(pg_dsn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                              "AND NOT granted AND classid = 21") == 1:
                waiting = True
                break
        assert waiting, "the generator's write never queued on the lock"
        assert not run.called
        assert _count(pg_dsn) == 0
        holder.rollback()
        result = await run
    finally:
        holder.close()
    assert result["quantity"] == 20
    assert _count(pg_dsn) == 20


@pytest_twisted.ensureDeferred
async def test_an_id_taken_between_draw_and_write_is_drawn_again(catalog, accounts, db, tmp_path, pg_dsn,
                                                                 monkeypatch):
    from cbserver.billing import generator as generator_module

    await _setup(catalog, accounts)
    await accounts.create_account({"id": "5500", "customer": "Retail", "product": "Callback Services"})
    real_draw = generator_module.draw_ids
    calls = []

    def stale_draw(space, quantity, taken, rng=None):
        calls.append(quantity)
        if len(calls) == 1:  # as if 5500 had been created by someone else just after the read
            return ["5500"] + real_draw(space, quantity - 1, taken | {"5500"}, rng)
        return real_draw(space, quantity, taken, rng)

    monkeypatch.setattr(generator_module, "draw_ids", stale_draw)
    result = await Generator(PostgresCatalogStore(db), reactor, tmp_path).generate(
        {**REQUEST, "quantity": 20, "prefix": "55", "length": 4, "service_password": "none"})
    assert len(calls) == 2 and result["quantity"] == 20
    assert _count(pg_dsn, "SELECT count(*) FROM accounts WHERE id LIKE '55__'") == 21
    assert [p.name for p in tmp_path.iterdir()] == [os.path.basename(result["csv_path"])]


@pytest_twisted.ensureDeferred
async def test_unwritable_csv_folder_is_refused_before_anything_is_created(catalog, accounts, db, tmp_path,
                                                                           pg_dsn):
    await _setup(catalog, accounts)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ValidationError) as e:
        await Generator(PostgresCatalogStore(db), reactor, blocker / "cards").generate(REQUEST)
    assert e.value.field == "csv_dir"
    assert _count(pg_dsn) == 0 and _count(pg_dsn, "SELECT count(*) FROM batches") == 0
