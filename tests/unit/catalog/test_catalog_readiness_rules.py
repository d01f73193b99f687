"""The readiness rules over hand-built facts (no database): which gaps are reported, for whom."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import SimpleNamespace

from cbserver.billing.domain import LoadedTariff, RatingEntry
from cbserver.billing.model import Rate, TariffRates
from cbserver.billing.readiness import Facts, Product, evaluate

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
SINCE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _tariff(tid: int, name: str, *prefixes: str, since: dt.datetime = SINCE) -> LoadedTariff:
    rates = tuple(Rate(p, 60, 6, Decimal("0.05"), Decimal("0.05"), since) for p in prefixes)
    return LoadedTariff(tid, TariffRates(currency="USD", rates=rates, name=name))


def _product(pid: int, name: str, voice: bool, accounts: int, entries: dict) -> Product:
    """A product whose rating entries at the node are ``{access code: tariff id}``."""
    return Product(pid, name, voice, accounts,
                   [RatingEntry(code, tid, False) for code, tid in entries.items()])


def _app(name="cb", code="WEBCALLBACK", second="18005550100", internal="", hosted=(), special=False):
    return SimpleNamespace(name=name, access_code=code, second_number=second, internal_account=internal,
                           hosted_allowed_clients=hosted, special_charge_if_legb_fails=special)


def _facts(*products: Product, tariffs=None) -> Facts:
    return Facts("node1", {p.id: p for p in products},
                 tariffs if tariffs is not None else {1: _tariff(1, "Callback", "1", "55")}, {}, [])


def test_a_product_nobody_calls_through_is_not_reported():
    idle = _product(1, "Idle", True, 0, {})
    assert evaluate(_facts(idle), [_app()], NOW) == []


def test_the_empty_access_code_entry_is_the_fallback():
    product = _product(1, "P", True, 3, {"": 1})
    assert evaluate(_facts(product), [_app()], NOW) == []
    other = _product(1, "P", True, 3, {"OTHER": 1})
    [finding] = evaluate(_facts(other), [_app()], NOW)
    assert (finding.code, finding.severity) == ("no_rating_entry", "warning")
    assert "callbacks of its 3 active accounts are refused" in finding.message


def test_two_instances_with_one_access_code_report_a_gap_once_each_own_gap_separately():
    product = _product(1, "P", True, 1, {"WEBCALLBACK": 1})
    apps = [_app("a", second="4420000000"), _app("b", second="4420000000"), _app("c", second="3310000000")]
    found = evaluate(_facts(product), apps, NOW)
    assert [(f.code, f.details["number"]) for f in found] == [
        ("second_number_unrated", "4420000000"), ("second_number_unrated", "3310000000")]
    assert "1 active account)" in found[0].message


def test_a_tariff_that_cannot_be_loaded_is_an_error_reported_once():
    product = _product(1, "P", True, 2, {"WEBCALLBACK": 7})
    found = evaluate(_facts(product, tariffs={7: ValueError("bad formula")}), [_app(), _app("b")], NOW)
    assert [(f.severity, f.code, f.subject) for f in found] == [
        ("error", "tariff_unusable", "tariff id 7")]
    assert "bad formula" in found[0].message


def test_rates_only_in_the_future_are_not_in_effect():
    product = _product(1, "P", True, 2, {"WEBCALLBACK": 1})
    later = {1: _tariff(1, "Callback", "1", since=dt.datetime(2026, 7, 1, tzinfo=dt.UTC))}
    [finding] = evaluate(_facts(product, tariffs=later), [_app()], NOW)
    assert finding.code == "no_rate_in_effect"
    assert evaluate(_facts(product, tariffs=later), [_app()], dt.datetime(2026, 7, 2, tzinfo=dt.UTC)) == []


def test_simple_mode_off_means_no_number_to_rate():
    product = _product(1, "P", True, 2, {"WEBCALLBACK": 1})
    assert evaluate(_facts(product, tariffs={1: _tariff(1, "T", "55")}), [_app(second="")], NOW) == []


def test_the_callback_fail_entry_and_its_rates():
    special = _app(special=True)
    tariffs = {1: _tariff(1, "Callback", "1", "55"),
               2: _tariff(2, "Fail", "|", since=dt.datetime(2026, 7, 1, tzinfo=dt.UTC))}
    without = _product(1, "P", True, 2, {"WEBCALLBACK": 1})
    assert [f.code for f in evaluate(_facts(without, tariffs=tariffs), [special], NOW)] == [
        "no_callback_fail_entry"]
    assert evaluate(_facts(without, tariffs=tariffs), [_app()], NOW) == []  # not asked for
    later = _product(1, "P", True, 2, {"WEBCALLBACK": 1, "CALLBACK_FAIL": 2})
    [finding] = evaluate(_facts(later, tariffs=tariffs), [special], NOW)
    assert (finding.code, finding.subject) == ("no_rate_in_effect", "tariff 'Fail'")
    assert "falls back to tariff 'Callback'" in finding.message
    assert evaluate(_facts(later, tariffs=tariffs), [special], dt.datetime(2026, 8, 1, tzinfo=dt.UTC)) == []
