"""The catalog service against the real PostgreSQL: destinations, tariffs, rates, products."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import psycopg2
import pytest
import pytest_twisted

from cbserver.billing.catalog import RowErrors
from cbserver.billing.validation import ConflictError, NotFound, ValidationError

pytestmark = pytest.mark.integration

RATE = {"prefix": "55", "first_interval": 60, "next_interval": 6, "first_price": "0.05",
        "next_price": "0.05", "effective_from": "2026-01-01T00:00:00+00:00"}


async def _basics(catalog):
    await catalog.create_destination({"prefix": "55", "country": "Brazil", "description": "Brazil"})
    await catalog.create_destination({"prefix": "1818", "country": "USA", "description": "Los Angeles"})
    await catalog.create_destination({"prefix": "|", "description": "any destination"})
    return await catalog.create_tariff({"name": "Callback", "currency": "USD"})


@pytest_twisted.ensureDeferred
async def test_destination_register_holds_digits_and_the_wildcard(catalog):
    await _basics(catalog)
    page = await catalog.list_destinations({}, limit=2)
    assert page["total"] == 3 and len(page["items"]) == 2
    assert (await catalog.get_destination("|"))["description"] == "any destination"
    assert [d["prefix"] for d in (await catalog.list_destinations({"prefix": "18"}))["items"]] == ["1818"]
    with pytest.raises(ValidationError) as e:
        await catalog.create_destination({"prefix": "55a"})
    assert e.value.field == "prefix"
    with pytest.raises(ConflictError):
        await catalog.create_destination({"prefix": "55"})


@pytest_twisted.ensureDeferred
async def test_destination_used_by_a_rate_cannot_be_deleted(catalog):
    await _basics(catalog)
    await catalog.create_rate("Callback", RATE)
    with pytest.raises(ConflictError):
        await catalog.delete_destination("55")
    await catalog.delete_destination("1818")
    with pytest.raises(NotFound):
        await catalog.get_destination("1818")


@pytest_twisted.ensureDeferred
async def test_tariff_fields_are_stored_and_its_currency_never_changes(catalog, pg_dsn):
    t = await catalog.create_tariff({
        "name": "Callback", "currency": "USD", "service": "Voice calls", "applied_to": "Customer",
        "managed_by": "Administrator only", "offpeak_timezone": "America/Sao_Paulo",
        "offpeak_periods": ["Mon-Fri 19:00-23:59", "sat-sun 00:00-23:59"], "split_at_boundary": True})
    assert (t["currency"], t["service"], t["applied_to"], t["managed_by"]) == \
        ("USD", "voice", "customer", "administrator")
    assert t["offpeak_periods"] == ["mon-fri 19:00-23:59", "sat-sun 00:00-23:59"]
    with pytest.raises(ConflictError) as e:
        await catalog.update_tariff("Callback", {"currency": "EUR"})
    assert e.value.field == "currency"
    renamed = await catalog.update_tariff(t["id"], {"name": "Callback A", "split_at_boundary": False})
    assert renamed["name"] == "Callback A" and renamed["currency"] == "USD"
    # The database refuses it too, whoever asks.
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.CheckViolation):
            cur.execute("UPDATE tariffs SET currency = 'EUR'")


@pytest_twisted.ensureDeferred
async def test_tariff_list_filters_and_paginates(catalog):
    for i in range(5):
        await catalog.create_tariff({"name": f"T{i}", "currency": "USD" if i % 2 else "EUR"})
    page = await catalog.list_tariffs({"currency": "EUR"}, limit=2, offset=1)
    assert page["total"] == 3 and [t["name"] for t in page["items"]] == ["T2", "T4"]
    with pytest.raises(ValidationError):
        await catalog.list_tariffs({"colour": "red"})


@pytest_twisted.ensureDeferred
async def test_rate_needs_its_prefix_in_the_register(catalog):
    await _basics(catalog)
    with pytest.raises(ValidationError) as e:
        await catalog.create_rate("Callback", {**RATE, "prefix": "44"})
    assert e.value.field == "prefix" and "register" in e.value.reason


@pytest_twisted.ensureDeferred
async def test_rate_versions_including_future_ones_are_kept(catalog):
    await _basics(catalog)
    await catalog.create_rate("Callback", RATE)
    future = await catalog.create_rate("Callback", {**RATE, "first_price": "0.04",
                                                    "effective_from": "2030-01-01T00:00:00-03:00"})
    assert future["effective_from"] == dt.datetime(2030, 1, 1, 3, tzinfo=dt.UTC)
    assert (await catalog.list_rates({"tariff": "Callback", "prefix": "55"}))["total"] == 2
    with pytest.raises(ConflictError):
        await catalog.create_rate("Callback", RATE)  # same prefix and effective_from


@pytest_twisted.ensureDeferred
async def test_rate_update_is_checked_as_a_whole(catalog):
    await _basics(catalog)
    r = await catalog.create_rate("Callback", RATE)
    with pytest.raises(ValidationError) as e:
        await catalog.update_rate(r["id"], {"rating_mode": "peak_offpeak"})
    assert e.value.field.startswith("offpeak_")
    r2 = await catalog.update_rate(r["id"], {"rating_mode": "peak_offpeak", "offpeak_first_interval": 60,
                                             "offpeak_next_interval": 60, "offpeak_first_price": "0.02",
                                             "offpeak_next_price": "0.02", "formula": "amount + 0.1"})
    assert r2["offpeak_first_price"] == Decimal("0.02") and r2["formula"] == "amount + 0.1"
    await catalog.delete_rate(r["id"])
    with pytest.raises(NotFound):
        await catalog.get_rate(r["id"])


@pytest_twisted.ensureDeferred
async def test_rate_import_is_all_or_nothing_and_reports_every_bad_line(catalog):
    await _basics(catalog)
    rows = [(2, RATE), (3, {**RATE, "prefix": "44"}), (4, {**RATE, "prefix": "1818", "next_interval": 0}),
            (5, {**RATE, "prefix": "1818"})]
    with pytest.raises(RowErrors) as e:
        await catalog.import_rates("Callback", rows)
    assert [(line, field) for line, field, _ in e.value.problems] == [(3, "prefix"), (4, "next_interval")]
    assert (await catalog.list_rates({"tariff": "Callback"}))["total"] == 0
    counts = await catalog.import_rates("Callback", [(2, RATE), (5, {**RATE, "prefix": "1818"})])
    assert counts == {"created": 2, "updated": 0, "unchanged": 0}
    again = await catalog.import_rates("Callback", [(2, RATE), (5, {**RATE, "prefix": "1818",
                                                                    "next_price": "0.07"})])
    assert again == {"created": 0, "updated": 1, "unchanged": 1}


@pytest_twisted.ensureDeferred
async def test_product_with_the_manuals_two_rating_entries(catalog):
    await _basics(catalog)
    await catalog.create_tariff({"name": "Callback fail", "currency": "USD"})
    p = await catalog.create_product({
        "name": "Callback Services", "end_user_name": "Web callback", "product_type": "Main product",
        "currency": "USD", "managed_by": "Administrator only", "default_acl": "Account self-care",
        "account_role": "universal", "services": ["Voice calls"],
        "rating_list": [
            {"service": "voice", "node": "node1", "access_code": "WEBCALLBACK", "tariff": "Callback"},
            {"service": "voice", "node": "node1", "access_code": "CALLBACK_FAIL", "tariff": "Callback fail",
             "overdraft_protection": True}]})
    assert p["services"] == ["voice"]
    got = await catalog.get_product("Callback Services")
    assert [(e["access_code"], e["tariff"], e["overdraft_protection"]) for e in got["rating_list"]] == \
        [("CALLBACK_FAIL", "Callback fail", True), ("WEBCALLBACK", "Callback", False)]
    with pytest.raises(ConflictError):
        await catalog.delete_tariff("Callback")  # used by the rating list
    updated = await catalog.update_product("Callback Services", {
        "end_user_name": "Callback", "rating_list": [{"node": "node1", "tariff": "Callback"}]})
    assert updated["end_user_name"] == "Callback"
    assert [(e["access_code"], e["tariff"]) for e in updated["rating_list"]] == [("", "Callback")]


@pytest_twisted.ensureDeferred
async def test_rating_entry_tariff_of_another_currency_is_refused(catalog):
    await _basics(catalog)
    await catalog.create_tariff({"name": "Euro", "currency": "EUR"})
    with pytest.raises(ValidationError) as e:
        await catalog.create_product({"name": "P", "currency": "USD",
                                      "rating_list": [{"node": "node1", "tariff": "Euro"}]})
    assert e.value.field == "rating_list[0].tariff" and "EUR" in e.value.reason
    assert (await catalog.list_products())["total"] == 0


@pytest_twisted.ensureDeferred
async def test_a_vendor_tariff_never_charges_customers(catalog):
    await _basics(catalog)
    await catalog.create_tariff({"name": "Carrier cost", "currency": "USD", "applied_to": "Vendor"})
    with pytest.raises(ValidationError) as e:
        await catalog.create_product({"name": "P", "currency": "USD",
                                      "rating_list": [{"node": "node1", "tariff": "Carrier cost"}]})
    assert e.value.field == "rating_list[0].tariff" and "vendors" in e.value.reason
    # Nor can a tariff in a rating list become a vendor tariff later; one in no list can.
    await catalog.create_product({"name": "P", "currency": "USD",
                                  "rating_list": [{"node": "node1", "tariff": "Callback"}]})
    with pytest.raises(ConflictError) as c:
        await catalog.update_tariff("Callback", {"applied_to": "vendor"})
    assert c.value.field == "applied_to"
    assert (await catalog.get_tariff("Callback"))["applied_to"] == "customer"
    spare = await catalog.create_tariff({"name": "Spare", "currency": "USD"})
    assert (await catalog.update_tariff(spare["id"], {"applied_to": "vendor"}))["applied_to"] == "vendor"


@pytest_twisted.ensureDeferred
async def test_product_without_services_is_refused(catalog):
    with pytest.raises(ValidationError) as e:
        await catalog.create_product({"name": "P", "currency": "USD", "services": []})
    assert e.value.field == "services"


@pytest_twisted.ensureDeferred
async def test_duplicate_rating_entries_and_unknown_tariffs_are_refused(catalog):
    await _basics(catalog)
    entry = {"node": "node1", "access_code": "WEBCALLBACK", "tariff": "Callback"}
    with pytest.raises(ValidationError) as e:
        await catalog.create_product({"name": "P", "currency": "USD", "rating_list": [entry, entry]})
    assert e.value.field == "rating_list[1].access_code"
    with pytest.raises(ValidationError) as e:
        await catalog.create_product({"name": "P", "currency": "USD",
                                      "rating_list": [{**entry, "tariff": "Nope"}]})
    assert e.value.field == "rating_list[0].tariff"


@pytest_twisted.ensureDeferred
async def test_product_currency_is_fixed(catalog):
    await catalog.create_product({"name": "P", "currency": "USD"})
    with pytest.raises(ConflictError):
        await catalog.update_product("P", {"currency": "EUR"})
    await catalog.delete_product("P")
    with pytest.raises(NotFound):
        await catalog.get_product("P")
