"""``node_catalog_state``: the catalog part of ``/readyz`` over a store of hand-built facts.

Ready when some product somebody calls through is rated at this node; not ready on an error
finding, or when nothing can be rated here; the reason names codes and the node only.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from types import SimpleNamespace

from twisted.internet import defer

from cbserver.billing.domain import LoadedTariff, RatingEntry
from cbserver.billing.model import Rate, TariffRates
from cbserver.billing.readiness import node_catalog_state

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


class Store:
    """``IReadinessStore`` over lists: products ``(id, name, voice, active)``, entries."""

    def __init__(self, products, entries, since=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)):
        self._products, self._entries, self.since = products, entries, since

    def fetch_account(self, account_id):
        return defer.succeed(None)

    def voice_entries(self, node):
        return defer.succeed(self._entries)

    def products(self):
        return defer.succeed(self._products)

    def load_tariff(self, tariff_id):
        rates = (Rate("1", 60, 6, Decimal("0.05"), Decimal("0.05"), self.since),)
        return defer.succeed(LoadedTariff(tariff_id, TariffRates(currency="USD", rates=rates,
                                                                 name="Callback")))

    def offpeak_orphans(self):
        return defer.succeed([])


def _cfg(node="edge1"):
    app = SimpleNamespace(name="cb", access_code="WEBCALLBACK", second_number="", internal_account="",
                          hosted_allowed_clients=(), special_charge_if_legb_fails=False)
    return SimpleNamespace(server=SimpleNamespace(node=node), application=[app])


def _state(store, node="edge1"):
    out = []
    node_catalog_state(store, _cfg(node), NOW).addBoth(out.append)
    return out[0]


def test_a_product_rated_here_makes_the_node_ready():
    store = Store([(1, "Retail", True, 5)], [(1, RatingEntry("WEBCALLBACK", 1, False))])
    assert _state(store) == (True, "")


def test_no_entry_for_this_node_nor_any_node_is_not_ready():
    ok, reason = _state(Store([(1, "Retail", True, 5)], []))
    assert not ok and "no product can be rated at node 'edge1'" in reason
    assert "Retail" not in reason


def test_rates_not_in_effect_yet_are_not_ready():
    store = Store([(1, "Retail", True, 5)], [(1, RatingEntry("", 1, False))],
                  since=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    assert _state(store)[0] is False


def test_a_product_nobody_calls_through_does_not_count():
    store = Store([(1, "Idle", True, 0)], [(1, RatingEntry("WEBCALLBACK", 1, False))])
    assert _state(store)[0] is False
