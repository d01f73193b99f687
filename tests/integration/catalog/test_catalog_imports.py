"""Bulk CSV imports of rates and destinations (COPY, set-based checks) against PostgreSQL.

Every broken file is refused as a whole with its problems per line, and nothing is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import pytest_twisted

from cbserver.billing.catalog import RowErrors
from cbserver.billing.validation import NotFound, ValidationError

from .admin_client import AdminClient

pytestmark = pytest.mark.integration

RATES_HEADER = b"prefix,first_interval,next_interval,first_price,next_price,effective_from\n"
WHEN = "2026-01-01T00:00:00Z"


def _count(dsn, table):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - a fixed table name
        return cur.fetchone()[0]


def _deck(n: int) -> list[str]:
    """``n`` distinct synthetic prefixes (country code 99, then the row's number)."""
    return [f"99{i:07d}" for i in range(n)]


async def _tariff(catalog):
    return await catalog.create_tariff({"name": "Carrier", "currency": "USD"})


@pytest_twisted.ensureDeferred
async def test_destinations_then_rates_of_a_deck_then_again_unchanged(catalog, pg_dsn):
    prefixes = _deck(2000)
    dests = b"prefix,country,description\n" + b"".join(
        f"{p},Testland,route {i}\n".encode() for i, p in enumerate(prefixes))
    assert await catalog.import_destinations_csv(dests) == {"created": 2000, "updated": 0,
                                                            "unchanged": 0}
    await _tariff(catalog)
    rates = RATES_HEADER + b"".join(f"{p},60,6,0.0{i % 10},0.05,{WHEN}\n".encode()
                                    for i, p in enumerate(prefixes))
    assert await catalog.import_rates_csv("Carrier", rates) == {"created": 2000, "updated": 0,
                                                                "unchanged": 0}
    assert await catalog.import_rates_csv("Carrier", rates) == {"created": 0, "updated": 0,
                                                                "unchanged": 2000}
    changed = rates.replace(f"{prefixes[5]},60,6,0.05,".encode(), f"{prefixes[5]},60,6,0.55,".encode())
    assert await catalog.import_rates_csv("Carrier", changed) == {"created": 0, "updated": 1,
                                                                  "unchanged": 1999}
    rate = (await catalog.list_rates({"tariff": "Carrier", "prefix": prefixes[5]}))["items"][0]
    assert str(rate["first_price"]) == "0.55"
    assert _count(pg_dsn, "rates") == 2000


@pytest_twisted.ensureDeferred
async def test_destination_import_replaces_only_the_columns_given(catalog):
    await catalog.create_destination({"prefix": "44", "country": "UK", "description": "London"})
    counts = await catalog.import_destinations_csv(b"prefix,description\n44,United Kingdom\n45,Denmark\n")
    assert counts == {"created": 1, "updated": 1, "unchanged": 0}
    d = await catalog.get_destination("44")
    assert (d["country"], d["description"]) == ("UK", "United Kingdom")
    assert (await catalog.get_destination("45"))["country"] == ""
    # COPY's own special characters arrive as written (a backslash, a tab inside quotes)
    counts = await catalog.import_destinations_csv(b'prefix,description\n46,"C:\\x\tN"\n')
    assert counts["created"] == 1
    assert (await catalog.get_destination("46"))["description"] == "C:\\x\tN"


@pytest_twisted.ensureDeferred
async def test_a_bad_number_on_line_70000_is_named_and_nothing_is_written(catalog, pg_dsn):
    prefixes = _deck(69_999)  # with the header, the last row is line 70,000
    await catalog.import_destinations_csv(b"prefix\n" + "\n".join(prefixes).encode() + b"\n")
    await _tariff(catalog)
    lines = [f"{p},60,6,0.05,0.05,{WHEN}" for p in prefixes[:-1]] + [f"{prefixes[-1]},60,6,0.0x5,0.05,{WHEN}"]
    data = RATES_HEADER + "\n".join(lines).encode() + b"\n"
    with pytest.raises(RowErrors) as e:
        await catalog.import_rates_csv("Carrier", data)
    assert e.value.problems == [(70_000, "first_price", "'0.0x5' is not a number")]
    assert _count(pg_dsn, "rates") == 0


@pytest_twisted.ensureDeferred
async def test_every_broken_line_of_a_rates_file_is_reported_together(catalog, pg_dsn):
    await catalog.import_destinations_csv(b"prefix\n55\n1818\n")
    await _tariff(catalog)
    data = RATES_HEADER + (f"55,60,6,0.05,0.05,{WHEN}\n"          # 2: good
                           f"1818,60,6,0.05,0.05,{WHEN}\n"        # 3: good
                           f"55,30,6,0.07,0.07,{WHEN}\n"          # 4: same prefix and time as 2
                           f"77,60,6,0.05,0.05,{WHEN}\n"          # 5: not in the register
                           "1818,60\n"                            # 6: too few fields
                           f"1818,60,0,0.05,0.05,{WHEN}\n").encode()  # 7: bad interval
    with pytest.raises(RowErrors) as e:
        await catalog.import_rates_csv("Carrier", data)
    assert [(line, field) for line, field, _ in e.value.problems] == [
        (4, "prefix"), (5, "prefix"), (6, "columns"), (7, "next_interval")]
    assert e.value.problems[0][2] == "same prefix and effective_from as line 2"
    assert e.value.problems[1][2] == "'77' is not in the destination register"
    assert _count(pg_dsn, "rates") == 0


@pytest_twisted.ensureDeferred
async def test_files_that_cannot_be_read_are_one_problem_on_their_line(catalog, pg_dsn):
    await _tariff(catalog)
    with pytest.raises(RowErrors) as e:
        await catalog.import_rates_csv("Carrier",
                                       RATES_HEADER + "55,60,6,0.05,0.05,\n# S\xe3o\n".encode("latin-1"))
    assert e.value.problems[0][:2] == (3, "encoding")
    with pytest.raises(RowErrors) as e:
        await catalog.import_rates_csv("Carrier", b"prefix,first_interval,next_interval\n55,60,6\n")
    assert e.value.problems[0][:2] == (1, "header")
    assert "missing column(s) first_price, next_price" in e.value.problems[0][2]
    with pytest.raises(ValidationError):
        await catalog.import_rates_csv("Carrier", RATES_HEADER)
    with pytest.raises(NotFound):
        await catalog.import_rates_csv("Nope", RATES_HEADER + f"55,60,6,0.05,0.05,{WHEN}\n".encode())
    with pytest.raises(RowErrors) as e:
        await catalog.import_destinations_csv(b"prefix,country\n44,UK\n44a,UK\n44,GB\n")
    assert [p[:2] for p in e.value.problems] == [(3, "prefix"), (4, "prefix")]
    assert e.value.problems[1][2] == "same prefix as line 2"
    assert _count(pg_dsn, "destinations") == 0 and _count(pg_dsn, "rates") == 0


@pytest_twisted.ensureDeferred
async def test_admin_api_takes_csv_bodies(db, tmp_path):
    api = AdminClient(db, tmp_path)
    code, body = await api.call("POST", "/v1/destinations/import", raw=b"prefix,country\n55,Brazil\n",
                                content_type=b"text/csv; charset=utf-8")
    assert (code, body) == (200, {"created": 1, "updated": 0, "unchanged": 0})
    await api.ok("POST", "/v1/tariffs", {"name": "Carrier", "currency": "USD"})
    code, body = await api.call("POST", "/v1/tariffs/Carrier/rates/import",
                                raw=RATES_HEADER + f"55,60,6,0.05,0.05,{WHEN}\n66,1,1,1,1,{WHEN}\n".encode(),
                                content_type=b"text/csv")
    assert code == 400
    assert body["error"]["problems"] == [{"line": 3, "field": "prefix",
                                          "message": "'66' is not in the destination register"}]
    code, body = await api.call("POST", "/v1/tariffs/Carrier/rates/import",
                                raw=RATES_HEADER + f"55,60,6,0.05,0.05,{WHEN}\n".encode(),
                                content_type=b"text/csv")
    assert (code, body) == (200, {"created": 1, "updated": 0, "unchanged": 0})
    code, body = await api.call("POST", "/v1/destinations/import",
                                {"destinations": [{"prefix": "56"}, {"prefix": "x"}]})
    assert code == 400 and body["error"]["problems"][0]["line"] == 2


def test_cli_destinations_import(pg_dsn, tmp_path):
    f = tmp_path / "dest.csv"
    f.write_text("prefix,country,description\n55,Brazil,Mobile\n1,USA,\n")
    cli = str(Path(sys.executable).parent / "cbserver")
    out = subprocess.run([cli, "destinations", "import", str(f), "--dsn", pg_dsn], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2 destination(s) read: 2 created, 0 updated, 0 unchanged"
    f.write_text("prefix,country\n55,Brazil\n55,Brasil\n")
    out = subprocess.run([cli, "destinations", "import", str(f), "--dsn", pg_dsn], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.splitlines()[0] == "line 3: prefix: same prefix as line 2"
    shown = subprocess.run([cli, "catalog", "show", "destination", "55", "--dsn", pg_dsn],
                           capture_output=True, text=True, timeout=120)
    assert json.loads(shown.stdout)["country"] == "Brazil"
