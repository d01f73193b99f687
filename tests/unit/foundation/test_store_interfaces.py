"""The db stores implement the interfaces billing declares (issue 12), and agree with them."""

import pytest
from zope.interface.verify import verifyClass

from cbserver.billing import stores as iface
from cbserver.db import accounts_store
from cbserver.db import stores as impl
from cbserver.db.tariff_loader import TariffCache


@pytest.mark.parametrize(("interface", "cls"), [
    (iface.ICatalogStore, impl.PostgresCatalogStore),
    (iface.ICatalogTransaction, impl.CatalogTransaction),
    (iface.IAuthorizationStore, impl.PostgresAuthorizationStore),
    (iface.IReadinessStore, impl.PostgresReadinessStore),
    (iface.IXdrStore, impl.PostgresXdrStore),
    (iface.IReportSource, impl.CursorReports),
    (iface.ITariffSource, TariffCache),
])
def test_each_db_store_implements_the_interface_billing_declares(interface, cls):
    assert verifyClass(interface, cls)


def test_the_account_filters_billing_offers_are_those_the_store_understands():
    assert tuple(accounts_store._FILTERS) == iface.ACCOUNT_FILTERS


def test_the_generator_writes_columns_in_the_order_billing_builds_them():
    assert accounts_store.COPY_COLUMNS == iface.ACCOUNT_COPY_COLUMNS
