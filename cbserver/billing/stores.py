"""The stores the billing domain needs, declared as ``zope.interface`` interfaces.

``billing`` never imports ``cbserver.db``: it says here what it asks of storage, and the
classes under ``db/`` declare ``@implementer`` of these and speak SQL (DESIGN.md rule 9). The
wiring (``tap.py``, ``commands/``, the web apps, tests) hands the implementations in.

Every store turns the driver's errors into the project's own: ``DatabaseUnavailable`` when
PostgreSQL is away, ``ConcurrentWrite`` (``TransactionAborted`` for a deadlock or a
serialization failure) when a transaction lost a race and changed nothing,
and ``ValidationError``/``ConflictError`` when the catalog's constraints refuse a row.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

#: Columns of the accounts the generator writes in one batch (``ICatalogStore.write_accounts``),
#: in the order of each row.
ACCOUNT_COPY_COLUMNS = ("id", "customer_id", "product_id", "batch_id", "role", "account_type",
                        "balance_control", "balance", "opening_balance", "credit_limit", "status",
                        "activation_date", "expiration_date", "avail_after_first_use_days",
                        "avail_after_last_use_days", "password_hash", "web_login", "web_password_hash",
                        "time_zone", "language", "distributor", "ecommerce", "internal")

#: The filters ``ICatalogTransaction.account_page`` understands.
ACCOUNT_FILTERS = ("customer", "product", "batch", "status", "account_type", "internal", "id_prefix")


class ICatalogTransaction(Interface):
    """One open transaction on the catalog (tariffs, products, customers, accounts, payments).

    Every method is a coroutine function; rows are plain dicts keyed by column name.
    """

    def nested(fn, *args, **kwargs):
        """Run the coroutine function ``fn(this transaction, *args, **kwargs)`` inside it (no new
        transaction); fire with its result, constraint errors turned into the catalog's
        ``ValidationError``/``ConflictError`` as ``ICatalogStore.transaction`` does."""

    def insert(table, row):
        """Insert ``row`` into ``table``; return the stored row."""

    def get(table, key, *, lock=False):
        """The row of ``table`` with primary key ``key`` (locked FOR UPDATE with ``lock``), or None."""

    def get_by(table, column, value):
        """The row of ``table`` whose unique ``column`` is ``value``, or None."""

    def update(table, key, changes):
        """Apply ``changes`` to the row ``key`` of ``table``; return it, or None if absent."""

    def delete(table, key):
        """Delete the row ``key`` of ``table``; True if there was one."""

    def page(table, filters, order, limit, offset):
        """``(rows, total)`` of ``table`` matching ``filters`` ((column, op, value) triples)."""

    def product_services(product_id):
        """The services of a product, sorted."""

    def replace_product_services(product_id, services):
        """Make ``services`` the product's services."""

    def rating_entries(product_id):
        """The rating list of a product."""

    def replace_rating_entries(product_id, entries):
        """Make ``entries`` the product's rating list."""

    def tariff_in_rating_lists(tariff_id):
        """True when some product's rating list names the tariff."""

    def rating_entry_currencies(product_id):
        """The currencies of the tariffs a product's rating list names."""

    def count_accounts(column, value):
        """How many accounts have ``column`` (customer_id, product_id, batch_id) = ``value``."""

    def rate_versions(tariff_id):
        """Every rate of a tariff, all versions."""

    def find_rate(tariff_id, prefix, effective_from):
        """The rate of a tariff with that prefix and start, or None."""

    def tariff_users(tariff_id):
        """The rating list entries naming a tariff (product, service, node, access_code)."""

    def destination_users(prefix):
        """The tariffs with rates for a prefix (tariff, rates: how many versions)."""

    def missing_prefixes(prefixes):
        """The ``prefixes`` that are not destinations."""

    def account_view(account_id):
        """An account with its customer, product and batch names, or None."""

    def account_page(filters, limit, offset):
        """``(rows, total)`` of accounts matching ``filters`` (names of ``ACCOUNT_FILTERS``)."""

    def set_status(status, *, account_id=None, batch_id=None, when=None):
        """Set the status of one account or of a batch's accounts; return how many changed."""

    def account_holds(account_id):
        """The live holds on an account's balance: ``{"session_id", "leg", "amount", "currency",
        "created_at", "expires_at"}`` rows, oldest first."""

    def batch_counts(batch_id):
        """The number of accounts of a batch per status."""

    def generator_runs(batch_id):
        """The generator runs recorded for a batch."""

    def count_pattern(prefix, length):
        """How many account ids start with ``prefix`` and have ``length`` characters."""

    def ids_with_pattern(prefix, length):
        """The account ids that start with ``prefix`` and have ``length`` characters."""

    def lock_account(account_id):
        """Lock an account's row for a payment; its row, or None."""

    def move_account(account_id, delta, at, *, recharge):
        """Add ``delta`` to an account's balance; return the new balance."""

    def move_customer(customer_id, delta):
        """Add ``delta`` to a customer's balance; return the new balance."""

    def net_paid(owner, key):
        """Payments minus refunds of an ``account`` or ``customer``."""

    def held(owner_key, node_expiry):
        """What live calls hold on the balance ``owner_key``."""

    def insert_payment(row):
        """Record a payment; return it."""

    def payments_page(owner, key, limit, offset):
        """``(rows, total)`` of the payments of an ``account`` or ``customer``."""

    def audit(row):
        """Append ``row`` (``billing.audit.audit_row``) to the audit log in this transaction."""

    def audit_page(filters, limit, offset):
        """``(rows, total)`` of audit rows matching ``filters`` (``AUDIT_FILTERS``), newest first."""

    def applications(*, lock=False):
        """Every voice application row, by name (``lock``: the table, against concurrent changes)."""


class ICatalogStore(Interface):
    """The catalog's storage: transactions, and the generator's bulk write."""

    def transaction(fn, *args, **kwargs):
        """Run the coroutine function ``fn(tx, *args, **kwargs)`` in one transaction.

        ``tx`` provides ``ICatalogTransaction``. Fires with ``fn``'s result; a transaction
        PostgreSQL aborted (deadlock, serialization failure) is run again a few times before
        ``TransactionAborted`` is raised. A transaction that wrote without writing an audit
        row (``tx.audit``) is rolled back with ``billing.audit.UnauditedChange``.
        """

    def write_accounts(*, batch, batch_id, run, rows, progress=None, audit=None):
        """Blocking (run it in a thread): create ``batch`` (or use ``batch_id``), store
        ``rows`` (``ACCOUNT_COPY_COLUMNS`` order, batch id filled in here), the ``run``
        record and the ``audit`` row in one commit; return the batch id."""

    def import_rates(tariff, data, count, write=True, audit=None):
        """Blocking (run it in a thread): write ``count`` checked rates, given as COPY text
        (``billing.imports.copy_text`` in ``RATE_STAGE`` order), into the tariff named by id or
        name, all or nothing in one commit. Returns the counts ``created``/``updated``/
        ``unchanged``, or the list of (line, field, reason) refused (then nothing is written;
        nor when ``write`` is false: only the database's checks run). ``audit(tariff_id,
        counts)`` is the audit row written in the same commit (required)."""

    def import_destinations(columns, data, count, audit=None):
        """Blocking: the same for destinations (``columns``: those the file gave;
        ``audit(counts)``: the audit row)."""


class IAuthorizationStore(Interface):
    """Accounts, rating entries and balance reservations, for ``billing.authorize``."""

    instance_id = Attribute("The id of this server process (owner of its reservations)")

    def fetch_account(account_id):
        """Fire with the ``AccountInfo`` of ``account_id``, or None."""

    def fetch_account_and_entries(account_id, node, codes, session_id, expiry):
        """Fire with ``(AccountInfo, [RatingEntry], Balance)``, or ``(None, [], None)``."""

    def reserve(*, session_id, account, instance_id, decide, expiry, balance=None):
        """Lock the balance, call ``decide(Balance)``, store its ``ReservationDecision``;
        fire with the decision's result."""

    def reserve_again(*, session_id, account, node, codes, instance_id, decide, expiry, balance):
        """Store ``decide(balance)``'s decision for a session authorized before, in one round
        trip, only if the ``account`` (as ``fetch_account_and_entries`` read it, for ``node``
        and ``codes``) is unchanged and the locked balance passes ``reserve``'s rules; fire
        with the result, or with None when nothing was stored (optional: a store without it
        is always asked afresh)."""

    def fetch_and_reserve(*, session_id, account_id, node, codes, instance_id, guess, decide,
                          balance, expiry):
        """``fetch_account_and_entries`` and, in the same round trip, ``decide(balance)``'s
        decision stored by ``reserve``'s rules only if the account still fingerprints as
        ``guess`` (an earlier read for the same ``node`` and ``codes``); fire with
        ``(account, entries, balance, result)``, ``result`` None when nothing was stored
        (optional: a store without it is read, then reserved, in two round trips)."""

    def release(session_id):
        """Drop every reservation of ``session_id``."""


class ITariffSource(Interface):
    """Loaded tariffs by id."""

    def get(tariff_id):
        """Fire with the ``LoadedTariff`` (``TariffNotFound`` if there is none)."""


class IReadinessStore(Interface):
    """What the readiness checks read from the catalog."""

    def fetch_account(account_id):
        """Fire with the ``AccountInfo`` of ``account_id``, or None."""

    def voice_entries(node):
        """Fire with ``[(product_id, RatingEntry)]``: the voice rating entries in force at
        ``node``: per product and access code, the entry naming ``node``, else the one for any
        node (``*``)."""

    def products():
        """Fire with ``[(id, name, has_voice, active_accounts)]`` of every product."""

    def offpeak_orphans():
        """Fire with ``[(tariff name, count)]`` of peak/off-peak rates in tariffs without an
        off-peak period."""

    def load_tariff(tariff_id):
        """Fire with the ``LoadedTariff`` (``TariffNotFound`` if there is none)."""


class IXdrStore(Interface):
    """Where the xDR writer stores legs."""

    ready = Attribute("True while PostgreSQL can be used")

    def when_ready():
        """A Deferred that fires when PostgreSQL can be used again."""

    def write_batch(legs):
        """Store ``legs`` (``LegRecord``) and apply their charges in one transaction.

        Fires with the keys stored; fails with ``DatabaseUnavailable`` (spool them),
        ``ConcurrentWrite`` (another writer raced, or ``TransactionAborted``: a deadlock or
        serialization failure; run again) or another error (the data is refused).
        """


class IReportSource(Interface):
    """Runs an operator report's SQL."""

    def run(sql, params):
        """Return ``(column names, rows)`` of ``sql`` run with ``params``."""
