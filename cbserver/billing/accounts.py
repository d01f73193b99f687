"""Customers, batches and accounts: the manual's "Create a customer" and "Create an internal account".

``Accounts(store, clock)`` holds the rules; the admin API, the CLI and provisioning call it.
An account's service and web passwords arrive in plain text and are stored only as salted
scrypt hashes (hashed in a worker thread when the clock is a reactor with threads, so the
reactor never waits on scrypt). Balance convention: for a debit account ``balance`` is the
money left; for a credit account it is the amount owed (spend allowed: credit_limit - balance).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorThreads

from cbserver.billing import passwords
from cbserver.billing import validation as v
from cbserver.billing.audit import Audited
from cbserver.billing.catalogrules import delete_unused, lookup, now, resolve
from cbserver.billing.stores import ACCOUNT_FILTERS
from cbserver.billing.validation import Field, NotFound, ValidationError

CUSTOMER = {
    "name": Field(v.text(100), required=True),
    "balance_control": Field(v.choice("prepaid", "postpaid"), default="postpaid"),
    "currency": Field(v.currency, required=True, mutable=False),
    "credit_limit": Field(v.optional(v.decimal(Decimal(0))), default=None),
    "business_model": Field(v.choice("universal"), default="universal"),
    "customer_class": Field(v.text(100, allow_empty=True), default=""),
    "billing_period": Field(v.choice("daily", "weekly", "semimonthly", "monthly"), default="monthly"),
    "billing_period_timezone": Field(v.timezone, default="UTC"),
}

BATCH = {
    "name": Field(v.text(100), required=True),
    "customer": Field(v.reference, required=True, mutable=False),
}

ACCOUNT_ID = v.text(64, pattern=r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_DAYS = v.optional(v.integer(1, 36500))
ACCOUNT = {
    "id": Field(ACCOUNT_ID, required=True, mutable=False),
    "customer": Field(v.reference, required=True, mutable=False),
    "product": Field(v.reference, required=True),
    "batch": Field(v.optional(v.reference), default=None),
    "role": Field(v.choice("universal"), default="universal"),
    "account_type": Field(v.choice("debit", "credit"), default="debit", mutable=False),
    "balance_control": Field(v.choice("individual", "subordinate"), default="individual"),
    "opening_balance": Field(v.decimal(Decimal(0)), default=Decimal(0), mutable=False),
    "credit_limit": Field(v.optional(v.decimal(Decimal(0))), default=None),
    "status": Field(v.choice("active", "inactive"), default="active"),
    "activation_date": Field(v.optional(v.aware_datetime), default=None),
    "expiration_date": Field(v.optional(v.aware_datetime), default=None),
    "avail_after_first_use_days": Field(_DAYS, default=None),
    "avail_after_last_use_days": Field(_DAYS, default=None),
    "password": Field(v.optional(v.text(128)), default=None),
    "web_login": Field(v.optional(v.text(64)), default=None),
    "web_password": Field(v.optional(v.text(128)), default=None),
    "time_zone": Field(v.timezone, default="UTC"),
    "language": Field(v.language, default="en"),
    "distributor": Field(v.optional(v.text(100)), default=None),
    "ecommerce": Field(v.boolean, default=False),
    "internal": Field(v.boolean, default=False),
}

#: Fields of an account that the output never shows.
SECRET_COLUMNS = ("password_hash", "web_password_hash")


def account_out(row: Mapping[str, Any]) -> dict:
    """An account as shown to operators: no hashes, but whether each password is set."""
    out = {k: val for k, val in row.items() if k not in SECRET_COLUMNS}
    out["has_password"] = row.get("password_hash") is not None
    out["has_web_password"] = row.get("web_password_hash") is not None
    return out


def check_account(row: Mapping[str, Any]) -> None:
    """The rules that tie an account's fields together (the merged row of an update too)."""
    if row["account_type"] == "debit" and row.get("credit_limit") is not None:
        raise ValidationError("credit_limit", "a debit account has no credit limit (use a credit account)")
    if row["account_type"] == "credit" and row.get("opening_balance"):
        raise ValidationError("opening_balance", "only a debit account has an opening balance")
    start, end = row.get("activation_date"), row.get("expiration_date")
    if start is not None and end is not None and end <= start:
        raise ValidationError("expiration_date", "must be after the activation date")
    if row.get("web_password") is not None and row.get("web_login") is None:
        raise ValidationError("web_login", "is required when a web password is given")


def check_passwords(row: Mapping[str, Any], *, has_password: bool) -> None:
    """Refuse weak passwords; an internal account needs a strong service password."""
    if row.get("password") is not None:
        passwords.check_password("password", row["password"], strong=bool(row.get("internal")),
                                 account_id=row["id"])
    elif row.get("internal") and not has_password:
        raise ValidationError("password", "an internal account needs a strong service password")
    if row.get("web_password") is not None:
        passwords.check_password("web_password", row["web_password"])


class Accounts(Audited):
    """Customers, batches and accounts over a ``Database`` pool (changes audited)."""

    def __init__(self, store, clock, actor=None):
        self.store = store  # ICatalogStore
        self.clock = clock
        if actor is not None:
            self.actor = actor

    def in_thread(self, fn: Callable, *args) -> defer.Deferred:
        """Run blocking ``fn`` in the reactor's thread pool (inline when there is none)."""
        if IReactorThreads.providedBy(self.clock):
            return threads.deferToThreadPool(self.clock, self.clock.getThreadPool(), fn, *args)
        return defer.maybeDeferred(fn, *args)

    async def _hashes(self, row: Mapping[str, Any]) -> dict:
        out = {}
        for plain, column in (("password", "password_hash"), ("web_password", "web_password_hash")):
            if plain in row:
                out[column] = (None if row[plain] is None
                               else await self.in_thread(passwords.hash_password, row[plain]))
        return out

    # -- customers ------------------------------------------------------------------------

    async def create_customer(self, data: Mapping) -> dict:
        """Create a customer (owner of accounts)."""
        row = v.clean(CUSTOMER, data)

        async def run(tx):
            new = await tx.insert("customers", row)
            await self._audit(tx, "customer", new["id"], "create", None, new)
            return new

        return await self.store.transaction(run)

    async def get_customer(self, key: int | str) -> dict:
        """One customer by id or name."""
        return await self.store.transaction(lookup, "customers", key, kind="customer")

    async def list_customers(self, filters: Mapping = {}, limit=50, offset=0) -> dict:  # noqa: B006
        """A page of customers; filters: name (contains), currency."""
        limit, offset = v.page_args(limit, offset)
        allowed = {"name": ("name", "contains"), "currency": ("currency", "=")}
        found = [(allowed[k][0], allowed[k][1], val) for k, val in _known(filters, allowed).items()]

        async def run(tx):
            rows, total = await tx.page("customers", found, ["name"], limit, offset)
            return {"items": rows, "total": total, "limit": limit, "offset": offset}

        return await self.store.transaction(run)

    async def update_customer(self, key: int | str, data: Mapping) -> dict:
        """Change a customer; its currency is fixed (ConflictError)."""
        changes = v.clean(CUSTOMER, data, partial=True)

        async def run(tx):
            current = await lookup(tx, "customers", key, kind="customer", lock=True)
            v.check_immutable(CUSTOMER, changes, current)
            new = await tx.update("customers", current["id"], {**changes, "updated_at": now(self.clock)})
            await self._audit(tx, "customer", current["id"], "update", current, new)
            return new

        return await self.store.transaction(run)

    async def delete_customer(self, key: int | str) -> None:
        """Delete a customer that owns no account and no batch."""

        async def run(tx):
            before = await delete_unused(tx, "customers", key, kind="customer", column="customer_id",
                                         in_use="owns accounts")
            await self._audit(tx, "customer", before["id"], "delete", before, None)

        await self.store.transaction(run)

    # -- batches --------------------------------------------------------------------------

    async def create_batch(self, data: Mapping) -> dict:
        """Create an (empty) batch for a customer."""
        row = v.clean(BATCH, data)

        async def run(tx):
            c = await resolve(tx, "customers", row["customer"], "customer", kind="customer")
            new = await tx.insert("batches", {"name": row["name"], "customer_id": c["id"]})
            await self._audit(tx, "batch", new["id"], "create", None, new)
            return new

        return await self.store.transaction(run)

    async def get_batch(self, key: int | str) -> dict:
        """One batch with its counts of active and inactive accounts and its generator runs."""

        async def run(tx):
            b = await lookup(tx, "batches", key, kind="batch")
            return {**b, "accounts": await tx.batch_counts(b["id"]),
                    "generator_runs": await tx.generator_runs(b["id"])}

        return await self.store.transaction(run)

    async def list_batches(self, filters: Mapping = {}, limit=50, offset=0) -> dict:  # noqa: B006
        """A page of batches; filters: name (contains), customer_id."""
        limit, offset = v.page_args(limit, offset)
        allowed = {"name": ("name", "contains"), "customer_id": ("customer_id", "=")}
        found = [(allowed[k][0], allowed[k][1], val) for k, val in _known(filters, allowed).items()]

        async def run(tx):
            rows, total = await tx.page("batches", found, ["name"], limit, offset)
            return {"items": rows, "total": total, "limit": limit, "offset": offset}

        return await self.store.transaction(run)

    async def delete_batch(self, key: int | str) -> None:
        """Delete a batch that holds no account."""

        async def run(tx):
            before = await delete_unused(tx, "batches", key, kind="batch", column="batch_id",
                                         in_use="holds accounts")
            await self._audit(tx, "batch", before["id"], "delete", before, None)

        await self.store.transaction(run)

    async def activate_batch(self, key: int | str) -> int:
        """Activate every inactive account of a batch in one statement; returns how many."""

        async def run(tx):
            b = await lookup(tx, "batches", key, kind="batch", lock=True)
            before = await tx.batch_counts(b["id"])
            n = await tx.set_status("active", batch_id=b["id"], when=now(self.clock))
            if n:
                await self._audit(tx, "batch", b["id"], "activate", {**b, "accounts": before},
                                  {**b, "accounts": await tx.batch_counts(b["id"]), "activated": n})
            return n

        return await self.store.transaction(run)

    # -- accounts -------------------------------------------------------------------------

    async def _links(self, tx, row: Mapping[str, Any], customer: Mapping | None = None) -> dict:
        """Resolve customer/product/batch references of ``row`` into ids, checking they fit."""
        links: dict[str, Any] = {}
        if customer is None:
            customer = await resolve(tx, "customers", row["customer"], "customer", kind="customer")
            links["customer_id"] = customer["id"]
        if "product" in row:
            product = await resolve(tx, "products", row["product"], "product", kind="product")
            if product["currency"] != customer["currency"]:
                raise ValidationError("product", f"product {product['name']!r} is in {product['currency']}, "
                                                 f"the customer in {customer['currency']}")
            links["product_id"] = product["id"]
        if row.get("batch") is not None:
            batch = await resolve(tx, "batches", row["batch"], "batch", kind="batch")
            if batch["customer_id"] != customer["id"]:
                raise ValidationError("batch", f"batch {batch['name']!r} belongs to another customer")
            links["batch_id"] = batch["id"]
        elif "batch" in row:
            links["batch_id"] = None
        return links

    async def create_account(self, data: Mapping) -> dict:
        """Create one account with a given ID (e.g. the internal account)."""
        row = v.clean(ACCOUNT, data)
        check_account(row)
        check_passwords(row, has_password=False)
        hashes = await self._hashes(row)

        async def run(tx):
            links = await self._links(tx, row)
            plain = {k: val for k, val in row.items()
                     if k not in ("customer", "product", "batch", "password", "web_password")}
            plain["balance"] = row["opening_balance"] if row["account_type"] == "debit" else Decimal(0)
            await tx.insert("accounts", {**plain, **links, **hashes})
            new = account_out(await tx.account_view(row["id"]))
            await self._audit(tx, "account", row["id"], "create", None, new)
            return new

        return await self.store.transaction(run)

    async def get_account(self, account_id: str) -> dict:
        """One account (without its password hashes)."""
        row = await self.store.transaction(lambda tx: tx.account_view(account_id))
        if row is None:
            raise NotFound("account", account_id)
        return account_out(row)

    async def account_holds(self, account_id: str) -> dict:
        """What calls in progress hold on an account's balance: ``{"items", "held"}``."""
        await self.get_account(account_id)  # NotFound for an unknown account
        rows = await self.store.transaction(lambda tx: tx.account_holds(account_id))
        return {"items": rows, "held": sum((r["amount"] for r in rows), Decimal(0))}

    async def list_accounts(self, filters: Mapping = {}, limit=50, offset=0) -> dict:  # noqa: B006
        """A page of accounts; filters: customer, product, batch (names), status, account_type,
        internal, id_prefix."""
        limit, offset = v.page_args(limit, offset)
        found = _known(filters, dict.fromkeys(ACCOUNT_FILTERS))
        if "internal" in found:
            found["internal"] = v.boolean("internal", found["internal"])

        async def run(tx):
            rows, total = await tx.account_page(found, limit, offset)
            return {"items": [account_out(r) for r in rows], "total": total, "limit": limit,
                    "offset": offset}

        return await self.store.transaction(run)

    async def update_account(self, account_id: str, data: Mapping) -> dict:
        """Change what the manual lets change; ID, customer, type and opening balance are fixed."""
        changes = v.clean(ACCOUNT, data, partial=True)
        hashes = await self._hashes(changes)

        async def run(tx):
            current = await tx.account_view(account_id)
            if current is None:
                raise NotFound("account", account_id)
            if changes.get("customer") in (current["customer"], current["customer_id"]):
                del changes["customer"]
            v.check_immutable(ACCOUNT, changes, current)
            merged = {**current, **changes}
            check_account(merged)
            check_passwords({**merged, "password": changes.get("password")},
                            has_password=current["password_hash"] is not None
                            and ("password" not in changes or changes["password"] is not None))
            customer = await tx.get("customers", current["customer_id"])
            links = await self._links(tx, changes, customer)
            plain = {k: val for k, val in changes.items()
                     if k not in ("customer", "product", "batch", "password", "web_password")}
            await tx.update("accounts", account_id,
                               {**plain, **links, **hashes, "updated_at": now(self.clock)})
            new = account_out(await tx.account_view(account_id))
            # A password change shows in the audit as a flag, never the secret or its hash.
            changed = {f"{c.removesuffix('_hash')}_changed": True for c in hashes}
            await self._audit(tx, "account", account_id, "update", account_out(current),
                              {**new, **changed})
            return new

        return await self.store.transaction(run)

    async def delete_account(self, account_id: str) -> None:
        """Delete an account nothing refers to (ConflictError once it has call records)."""

        async def run(tx):
            current = await tx.account_view(account_id)
            if current is None or not await tx.delete("accounts", account_id):
                raise NotFound("account", account_id)
            await self._audit(tx, "account", account_id, "delete", account_out(current), None)

        await self.store.transaction(run)

    async def activate_account(self, account_id: str) -> int:
        """Activate one account; returns 1 if it was inactive, 0 if it was already active."""

        async def run(tx):
            current = await tx.account_view(account_id)
            if current is None:
                raise NotFound("account", account_id)
            n = await tx.set_status("active", account_id=account_id, when=now(self.clock))
            if n:
                await self._audit(tx, "account", account_id, "activate", account_out(current),
                                  account_out(await tx.account_view(account_id)))
            return n

        return await self.store.transaction(run)

    async def check_service_password(self, account_id: str, password: str) -> bool:
        """True when ``password`` is the account's service password (scrypt in a thread)."""
        row = await self.store.transaction(lambda tx: tx.get("accounts", account_id))
        if row is None or row["password_hash"] is None:
            return False
        return await self.in_thread(passwords.verify_password, password, row["password_hash"])


def _known(filters: Mapping[str, Any], allowed: Mapping[str, Any]) -> dict:
    out = {}
    for name, value in filters.items():
        if value is None or value == "":
            continue
        if name not in allowed:
            raise ValidationError(name, f"unknown filter (known: {', '.join(sorted(allowed))})")
        out[name] = value
    return out
