"""PostgreSQL implementations of the store interfaces ``cbserver.billing.stores`` declares.

Each class wraps the connection pool (``cbserver.db.pool``) and the SQL modules beside this
one; the wiring (``tap.py``, ``commands/``, the web apps, tests) builds them and hands them to
the billing services. Driver errors become the project's own here
(``cbserver.errors``, the catalog's ``ValidationError``/``ConflictError``), so nothing above
``db/`` needs psycopg2.
"""

from __future__ import annotations

import psycopg2
import psycopg2.errors
from twisted.internet import defer
from txpostgres.txpostgres import RollbackFailed
from zope.interface import implementer

from cbserver.billing.audit import UnauditedChange
from cbserver.billing.domain import RatingEntry
from cbserver.billing.stores import (
    IAuthorizationStore,
    ICatalogStore,
    ICatalogTransaction,
    IReadinessStore,
    IReportSource,
    IXdrStore,
)
from cbserver.db import (
    accounts_store,
    audit_store,
    authz_store,
    catalog_store,
    import_store,
    payments_store,
    tariff_loader,
    xdr_store,
)
from cbserver.errors import ConcurrentWrite, DatabaseError, DatabaseUnavailable, TransactionAborted


@implementer(ICatalogTransaction)
class CatalogTransaction:
    """``ICatalogTransaction`` on one open txpostgres cursor.

    It counts the writes made and the audit rows written, so that the store can refuse to
    commit a change nobody recorded (``UnauditedChange``).
    """

    def __init__(self, cur):
        self.cur = cur
        self.writes = 0
        self.audits = 0

    async def _wrote(self, pending, *, always: bool = False):
        """Await a write; count it when it changed something (a row, a count above 0)."""
        result = await pending
        if always or (result is not None and result is not False and result != 0):
            self.writes += 1
        return result

    def audit(self, row):
        """See ``ICatalogTransaction``."""
        self.audits += 1
        return audit_store.insert(self.cur, row)

    def audit_page(self, filters, limit, offset):
        """See ``ICatalogTransaction``."""
        return audit_store.page(self.cur, filters, limit, offset)

    def applications(self, *, lock=False):
        """See ``ICatalogTransaction``."""
        return catalog_store.applications(self.cur, lock=lock)

    def nested(self, fn, *args, **kwargs):
        """See ``ICatalogTransaction``."""

        def failed(f):
            f.trap(psycopg2.IntegrityError, psycopg2.DataError)
            raise catalog_store.translate(f.value)

        return defer.ensureDeferred(fn(self, *args, **kwargs)).addErrback(failed)

    def insert(self, table, row):
        """See ``ICatalogTransaction``."""
        return self._wrote(catalog_store.insert(self.cur, table, row))

    def get(self, table, key, *, lock=False):
        """See ``ICatalogTransaction``."""
        return catalog_store.get(self.cur, table, key, lock=lock)

    def get_by(self, table, column, value):
        """See ``ICatalogTransaction``."""
        return catalog_store.get_by(self.cur, table, column, value)

    def update(self, table, key, changes):
        """See ``ICatalogTransaction``."""
        return self._wrote(catalog_store.update(self.cur, table, key, changes))

    def delete(self, table, key):
        """See ``ICatalogTransaction``."""
        return self._wrote(catalog_store.delete(self.cur, table, key))

    def page(self, table, filters, order, limit, offset):
        """See ``ICatalogTransaction``."""
        return catalog_store.page(self.cur, table, filters, order, limit, offset)

    def product_services(self, product_id):
        """See ``ICatalogTransaction``."""
        return catalog_store.product_services(self.cur, product_id)

    def replace_product_services(self, product_id, services):
        """See ``ICatalogTransaction``."""
        return self._wrote(catalog_store.replace_product_services(self.cur, product_id, services),
                           always=True)

    def rating_entries(self, product_id):
        """See ``ICatalogTransaction``."""
        return catalog_store.rating_entries(self.cur, product_id)

    def replace_rating_entries(self, product_id, entries):
        """See ``ICatalogTransaction``."""
        return self._wrote(catalog_store.replace_rating_entries(self.cur, product_id, entries), always=True)

    def tariff_in_rating_lists(self, tariff_id):
        """See ``ICatalogTransaction``."""
        return catalog_store.tariff_in_rating_lists(self.cur, tariff_id)

    def rating_entry_currencies(self, product_id):
        """See ``ICatalogTransaction``."""
        return catalog_store.rating_entry_currencies(self.cur, product_id)

    def count_accounts(self, column, value):
        """See ``ICatalogTransaction``."""
        return catalog_store.count_accounts(self.cur, column, value)

    def rate_versions(self, tariff_id):
        """See ``ICatalogTransaction``."""
        return catalog_store.rate_versions(self.cur, tariff_id)

    def find_rate(self, tariff_id, prefix, effective_from):
        """See ``ICatalogTransaction``."""
        return catalog_store.find_rate(self.cur, tariff_id, prefix, effective_from)

    def tariff_users(self, tariff_id):
        """See ``ICatalogTransaction``."""
        return catalog_store.tariff_users(self.cur, tariff_id)

    def destination_users(self, prefix):
        """See ``ICatalogTransaction``."""
        return catalog_store.destination_users(self.cur, prefix)

    def missing_prefixes(self, prefixes):
        """See ``ICatalogTransaction``."""
        return catalog_store.missing_prefixes(self.cur, prefixes)

    def account_view(self, account_id):
        """See ``ICatalogTransaction``."""
        return accounts_store.account_view(self.cur, account_id)

    def account_page(self, filters, limit, offset):
        """See ``ICatalogTransaction``."""
        return accounts_store.account_page(self.cur, filters, limit, offset)

    def set_status(self, status, *, account_id=None, batch_id=None, when=None):
        """See ``ICatalogTransaction``."""
        return self._wrote(accounts_store.set_status(self.cur, status, account_id=account_id,
                                                     batch_id=batch_id, when=when))

    def account_holds(self, account_id):
        """See ``ICatalogTransaction``."""
        return accounts_store.account_holds(self.cur, account_id)

    def batch_counts(self, batch_id):
        """See ``ICatalogTransaction``."""
        return accounts_store.batch_counts(self.cur, batch_id)

    def generator_runs(self, batch_id):
        """See ``ICatalogTransaction``."""
        return accounts_store.generator_runs(self.cur, batch_id)

    def count_pattern(self, prefix, length):
        """See ``ICatalogTransaction``."""
        return accounts_store.count_pattern(self.cur, prefix, length)

    def ids_with_pattern(self, prefix, length):
        """See ``ICatalogTransaction``."""
        return accounts_store.ids_with_pattern(self.cur, prefix, length)

    def lock_account(self, account_id):
        """See ``ICatalogTransaction``."""
        return payments_store.lock_account(self.cur, account_id)

    def move_account(self, account_id, delta, at, *, recharge):
        """See ``ICatalogTransaction``."""
        return self._wrote(payments_store.move_account(self.cur, account_id, delta, at, recharge=recharge))

    def move_customer(self, customer_id, delta):
        """See ``ICatalogTransaction``."""
        return self._wrote(payments_store.move_customer(self.cur, customer_id, delta))

    def net_paid(self, owner, key):
        """See ``ICatalogTransaction``."""
        return payments_store.net_paid(self.cur, owner, key)

    def held(self, owner_key, node_expiry):
        """See ``ICatalogTransaction``."""
        return payments_store.held(self.cur, owner_key, node_expiry)

    def insert_payment(self, row):
        """See ``ICatalogTransaction``."""
        return self._wrote(payments_store.insert(self.cur, row))

    def payments_page(self, owner, key, limit, offset):
        """See ``ICatalogTransaction``."""
        return payments_store.page(self.cur, owner, key, limit, offset)


@implementer(ICatalogStore)
class PostgresCatalogStore:
    """``ICatalogStore`` on the pool ``db`` (its ``dsn`` is used for the generator's COPY)."""

    def __init__(self, db):
        self.db = db

    def transaction(self, fn, *args, **kwargs):
        """See ``ICatalogStore``."""
        return catalog_store.transaction(self.db, _audited, fn, *args, **kwargs)

    def write_accounts(self, *, batch, batch_id, run, rows, progress=None, audit=None):
        """See ``ICatalogStore``."""
        if audit is None:
            raise UnauditedChange("the generator's write has no audit row")
        return accounts_store.write_batch(self.db.dsn, batch=batch, batch_id=batch_id, run=run,
                                          rows=rows, progress=progress, audit=audit)

    def import_rates(self, tariff, data, count, write=True, audit=None):
        """See ``ICatalogStore``."""
        if audit is None:
            raise UnauditedChange("the rates import has no audit row")
        return import_store.import_rates(self.db.dsn, tariff, data, count, write, audit)

    def import_destinations(self, columns, data, count, audit=None):
        """See ``ICatalogStore``."""
        if audit is None:
            raise UnauditedChange("the destinations import has no audit row")
        return import_store.import_destinations(self.db.dsn, columns, data, count, audit)


async def _audited(cur, fn, *args, **kwargs):
    """Run ``fn`` on a ``CatalogTransaction``; refuse to commit writes without an audit row."""
    tx = CatalogTransaction(cur)
    result = await fn(tx, *args, **kwargs)
    if tx.writes and not tx.audits:
        # Raised inside the transaction, so the unrecorded change is rolled back.
        raise UnauditedChange(f"{getattr(fn, '__qualname__', fn)} changed the catalog without "
                              "writing an audit row")
    return result


@implementer(IAuthorizationStore)
class PostgresAuthorizationStore:
    """``IAuthorizationStore`` on the pool ``db``."""

    def __init__(self, db):
        self.db = db

    @property
    def instance_id(self) -> str:
        """This process's id, as the pool registered it in ``server_nodes``."""
        return self.db.instance_id

    def fetch_account(self, account_id):
        """See ``IAuthorizationStore``."""
        return authz_store.fetch_account(self.db, account_id)

    def fetch_account_and_entries(self, account_id, node, codes, session_id, expiry):
        """See ``IAuthorizationStore``."""
        return authz_store.fetch_account_and_entries(self.db, account_id, node, codes, session_id, expiry)

    def reserve(self, *, session_id, account, instance_id, decide, expiry, balance=None):
        """See ``IAuthorizationStore``."""
        return authz_store.reserve(self.db, session_id=session_id, account=account,
                                   instance_id=instance_id, decide=decide, expiry=expiry,
                                   balance=balance)

    def reserve_again(self, *, session_id, account, node, codes, instance_id, decide, expiry,
                      balance):
        """See ``IAuthorizationStore``."""
        return authz_store.reserve_again(self.db, session_id=session_id, account=account,
                                         node=node, codes=codes, instance_id=instance_id,
                                         decide=decide, expiry=expiry, balance=balance)

    def fetch_and_reserve(self, *, session_id, account_id, node, codes, instance_id, guess,
                          decide, balance, expiry):
        """See ``IAuthorizationStore``."""
        return authz_store.fetch_and_reserve(self.db, session_id=session_id,
                                             account_id=account_id, node=node, codes=codes,
                                             instance_id=instance_id, guess=guess,
                                             decide=decide, balance=balance, expiry=expiry)

    def release(self, session_id):
        """See ``IAuthorizationStore``."""
        return authz_store.release(self.db, session_id)


# Products with the active accounts that would place callbacks through them (internal
# accounts are checked on their own, per instance).
_PRODUCTS = (
    "SELECT p.id, p.name, "
    "EXISTS (SELECT 1 FROM product_services s WHERE s.product_id = p.id AND s.service = 'voice'), "
    "(SELECT count(*) FROM accounts a WHERE a.product_id = p.id AND a.status = 'active' "
    "        AND NOT a.internal) "
    "FROM products p ORDER BY p.name")
# The entries in force at the node: its own, else those for any node ('*'), one per code.
_ENTRIES = ("SELECT product_id, access_code, tariff_id, overdraft_protection "
            "FROM cb_node_entries(%s) WHERE service = 'voice'")
# Peak/off-peak rates in a tariff without an off-peak period: every call is peak, so their
# off-peak prices never apply (the manual lets the mode be set before the period, so the
# catalog accepts it; readiness is where the operator hears of it).
_OFFPEAK_ORPHANS = (
    "SELECT t.name, count(*) FROM rates r JOIN tariffs t ON t.id = r.tariff_id "
    "WHERE r.rating_mode = 'peak_offpeak' AND t.offpeak_timezone IS NULL "
    "GROUP BY t.name ORDER BY t.name")


@implementer(IReadinessStore)
class PostgresReadinessStore:
    """``IReadinessStore`` on the pool ``db``."""

    def __init__(self, db):
        self.db = db

    def fetch_account(self, account_id):
        """See ``IReadinessStore``."""
        return authz_store.fetch_account(self.db, account_id)

    def voice_entries(self, node):
        """See ``IReadinessStore``."""
        return self.db.runQuery(_ENTRIES, (node,)).addCallback(
            lambda rows: [(product_id, RatingEntry(*entry)) for product_id, *entry in rows])

    def products(self):
        """See ``IReadinessStore``."""
        return self.db.runQuery(_PRODUCTS)

    def offpeak_orphans(self):
        """See ``IReadinessStore``."""
        return self.db.runQuery(_OFFPEAK_ORPHANS)

    def load_tariff(self, tariff_id):
        """See ``IReadinessStore`` (loaded in slices: the check runs inside the server)."""
        from twisted.internet import reactor  # noqa: PLC0415

        return defer.ensureDeferred(tariff_loader.cooperative_tariff(self.db, tariff_id, reactor))


def _xdr_failure(failure):
    """Turn a driver failure of an xDR batch into the project's errors.

    A lost connection, or a transaction whose rollback failed (txpostgres ``RollbackFailed``:
    it lost its connection), is ``DatabaseUnavailable``. A deadlock or a serialization failure
    is ``TransactionAborted``; a duplicate leg another writer stored first is
    ``ConcurrentWrite`` (both: the batch was rolled back). Anything else is the data's fault
    and goes up unchanged.
    """
    # First: psycopg2 files deadlocks and serialization failures under OperationalError too.
    if failure.check(psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure):
        raise TransactionAborted(failure.getErrorMessage()) from failure.value
    if failure.check(psycopg2.errors.UniqueViolation):
        raise ConcurrentWrite(failure.getErrorMessage()) from failure.value
    if failure.check(psycopg2.OperationalError, psycopg2.InterfaceError, RollbackFailed):
        raise DatabaseUnavailable(failure.getErrorMessage()) from failure.value
    return failure


@implementer(IXdrStore)
class PostgresXdrStore:
    """``IXdrStore`` on the pool ``db``."""

    def __init__(self, db):
        self.db = db

    @property
    def ready(self) -> bool:
        """True while the pool is connected with a current schema."""
        return self.db.ready

    def when_ready(self):
        """See ``IXdrStore``."""
        return self.db.when_ready()

    def write_batch(self, legs):
        """See ``IXdrStore``."""
        return defer.maybeDeferred(self.db.runInteraction, xdr_store.write_batch, legs).addErrback(
            _xdr_failure)


@implementer(IReportSource)
class CursorReports:
    """``IReportSource`` on an open psycopg2 cursor (the CLI's blocking path)."""

    def __init__(self, cursor):
        self.cursor = cursor

    def run(self, sql, params):
        """See ``IReportSource``; a refused query raises ``DatabaseError``."""
        try:
            self.cursor.execute(sql, params)
            return [c.name for c in self.cursor.description], self.cursor.fetchall()
        except psycopg2.Error as e:
            raise DatabaseError(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__) from e
