"""The service catalog: the destination register, tariffs, their rates, and products.

``Catalog(store, clock)`` holds the rules (the manual's "Create a tariff", "Enter rates" and
"Create a product"); the admin API, the CLI and provisioning all call it. Every method is a
coroutine; input is a mapping of fields checked by ``validation.clean`` so that a refusal
names the field. Each write runs in one transaction (``ICatalogStore.transaction``), together
with its audit log row (``billing.audit``; bind the actor with ``catalog.as_actor(actor)``).
The fields, the row checks and the shared row look-ups are in ``catalogrules`` (imported from
here as before).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping, Sequence

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorThreads

from cbserver.billing import imports
from cbserver.billing import validation as v
from cbserver.billing.audit import Audited, audit_row
from cbserver.billing.catalogrules import (
    DESTINATION,
    PRODUCT,
    RATE,
    RATING_ENTRY,
    SERVICES,
    TARIFF,
    RowErrors,
    check_rate,
    check_services,
    check_tariff,
    delete_unused,
    lookup,
    now,
    page_filters,
    resolve,
    upsert_rate,
)
from cbserver.billing.validation import ConflictError, NotFound, ValidationError

# What ``from cbserver.billing.catalog import ...`` gave before the split.
__all__ = ["DESTINATION", "PRODUCT", "RATE", "RATING_ENTRY", "SERVICES", "TARIFF", "Catalog",
           "RowErrors", "check_rate", "delete_unused", "lookup", "now", "resolve", "upsert_rate"]


class Catalog(Audited):
    """Destinations, tariffs, rates and products over a ``Database`` pool."""

    def __init__(self, store, clock, actor=None):
        self.store = store  # ICatalogStore
        self.clock = clock
        if actor is not None:
            self.actor = actor

    async def _page(self, table, filters, order, limit, offset, allowed, shape=None) -> dict:
        limit, offset = v.page_args(limit, offset)
        found = page_filters(filters, allowed)

        async def run(tx):
            rows, total = await tx.page(table, found, order, limit, offset)
            if shape is not None:
                rows = [await shape(tx, r) for r in rows]
            return {"items": rows, "total": total, "limit": limit, "offset": offset}

        return await self.store.transaction(run)

    # -- destinations ---------------------------------------------------------------------

    async def create_destination(self, data: Mapping) -> dict:
        """Add a prefix (or the ``|`` wildcard) to the destination register."""
        row = v.clean(DESTINATION, data)

        async def run(tx):
            new = await tx.insert("destinations", row)
            await self._audit(tx, "destination", new["prefix"], "create", None, new)
            return new

        return await self.store.transaction(run)

    async def get_destination(self, prefix: str) -> dict:
        """One destination by prefix."""
        row = await self.store.transaction(lambda tx: tx.get("destinations", prefix))
        if row is None:
            raise NotFound("destination", prefix)
        return row

    async def list_destinations(self, filters: Mapping = {}, limit=50, offset=0) -> dict:  # noqa: B006
        """A page of destinations; filters: prefix (starts with), country."""
        return await self._page("destinations", filters, ["prefix"], limit, offset,
                                {"prefix": ("prefix", "prefix"), "country": ("country", "contains")})

    async def update_destination(self, prefix: str, data: Mapping) -> dict:
        """Change a destination's country or description."""
        changes = v.clean(DESTINATION, data, partial=True)

        async def run(tx):
            current = await tx.get("destinations", prefix, lock=True)
            if current is None:
                raise NotFound("destination", prefix)
            v.check_immutable(DESTINATION, changes, current)
            new = await tx.update("destinations", prefix, changes)
            await self._audit(tx, "destination", prefix, "update", current, new)
            return new

        return await self.store.transaction(run)

    async def delete_destination(self, prefix: str) -> None:
        """Remove a destination no rate uses (ConflictError naming the tariffs otherwise)."""

        async def run(tx):
            current = await tx.get("destinations", prefix, lock=True)
            if current is None:
                raise NotFound("destination", prefix)
            users = await tx.destination_users(prefix)
            if users:
                raise ConflictError(f"destination {prefix!r} is used by " + ", ".join(
                    f"tariff {u['tariff']!r} ({u['rates']} rate{'s' if u['rates'] != 1 else ''})"
                    for u in users), "prefix")
            await tx.delete("destinations", prefix)
            await self._audit(tx, "destination", prefix, "delete", current, None)

        await self.store.transaction(run)

    # -- tariffs --------------------------------------------------------------------------

    async def create_tariff(self, data: Mapping) -> dict:
        """Create a tariff; its currency is chosen here once and for all."""
        row = v.clean(TARIFF, data)
        check_tariff(row)

        async def run(tx):
            new = await tx.insert("tariffs", row)
            await self._audit(tx, "tariff", new["id"], "create", None, new)
            return new

        return await self.store.transaction(run)

    async def get_tariff(self, key: int | str) -> dict:
        """One tariff by id or name."""
        return await self.store.transaction(lookup, "tariffs", key, kind="tariff")

    async def list_tariffs(self, filters: Mapping = {}, limit=50, offset=0) -> dict:  # noqa: B006
        """A page of tariffs; filters: name (contains), currency."""
        return await self._page("tariffs", filters, ["name"], limit, offset,
                                {"name": ("name", "contains"), "currency": ("currency", "=")})

    async def update_tariff(self, key: int | str, data: Mapping) -> dict:
        """Change a tariff; changing its currency is a ``ConflictError``."""
        changes = v.clean(TARIFF, data, partial=True)

        async def run(tx):
            current = await lookup(tx, "tariffs", key, kind="tariff", lock=True)
            v.check_immutable(TARIFF, changes, current)
            check_tariff({**current, **changes})
            if changes.get("applied_to", "customer") != "customer" \
                    and await tx.tariff_in_rating_lists(current["id"]):
                raise ConflictError(f"tariff {current['name']!r} is in a product's rating list, "
                                    "which charges customers: it cannot become a vendor tariff",
                                    "applied_to")
            new = await tx.update("tariffs", current["id"], {**changes, "updated_at": now(self.clock)})
            await self._audit(tx, "tariff", current["id"], "update", current, new)
            return new

        return await self.store.transaction(run)

    async def delete_tariff(self, key: int | str) -> None:
        """Delete a tariff and its rates, unless a product's rating list uses it."""

        async def run(tx):
            current = await lookup(tx, "tariffs", key, kind="tariff", lock=True)
            users = await tx.tariff_users(current["id"])
            if users:
                raise ConflictError(f"tariff {current['name']!r} is used by " + ", ".join(
                    f"product {u['product']!r}'s rating list entry "
                    f"{u['access_code'] or '(any access code)'}/{u['node']}" for u in users),
                    "tariff")
            await tx.delete("tariffs", current["id"])
            await self._audit(tx, "tariff", current["id"], "delete", current, None)

        await self.store.transaction(run)

    # -- rates ----------------------------------------------------------------------------

    def _rate_row(self, data: Mapping, when: dt.datetime | None = None) -> dict:
        row = v.clean(RATE, data)
        row.setdefault("effective_from", when or now(self.clock))
        check_rate(row)
        return row

    async def create_rate(self, tariff: int | str, data: Mapping) -> dict:
        """Add a rate (one version) to a tariff; the prefix must be in the register."""
        row = self._rate_row(data)

        async def run(tx):
            t = await lookup(tx, "tariffs", tariff, kind="tariff")
            if await tx.missing_prefixes([row["prefix"]]):
                raise ValidationError("prefix", f"{row['prefix']!r} is not in the destination "
                                                "register (add the destination first)")
            new = await tx.insert("rates", {**row, "tariff_id": t["id"]})
            await self._audit(tx, "rate", new["id"], "create", None, new)
            return new

        return await self.store.transaction(run)

    async def get_rate(self, rate_id: int) -> dict:
        """One rate by id."""
        row = await self.store.transaction(lambda tx: tx.get("rates", int(rate_id)))
        if row is None:
            raise NotFound("rate", rate_id)
        return row

    async def list_rates(self, filters: Mapping = {}, limit=50, offset=0) -> dict:  # noqa: B006
        """A page of rates; filters: tariff (id or name), prefix (starts with)."""
        filters = dict(filters)
        if filters.get("tariff") not in (None, ""):
            t = await self.get_tariff(filters.pop("tariff"))
            filters["tariff_id"] = t["id"]
        filters.pop("tariff", None)
        return await self._page("rates", filters, ["tariff_id", "prefix", "effective_from"], limit,
                                offset, {"tariff_id": ("tariff_id", "="), "prefix": ("prefix", "prefix")})

    async def update_rate(self, rate_id: int, data: Mapping) -> dict:
        """Change a rate's fields (checked again as a whole)."""
        changes = v.clean(RATE, data, partial=True)

        async def run(tx):
            current = await tx.get("rates", int(rate_id), lock=True)
            if current is None:
                raise NotFound("rate", rate_id)
            merged = {k: current[k] for k in RATE} | changes
            check_rate(merged)
            if "prefix" in changes and await tx.missing_prefixes([changes["prefix"]]):
                raise ValidationError("prefix", f"{changes['prefix']!r} is not in the destination register")
            new = await tx.update("rates", current["id"], changes)
            await self._audit(tx, "rate", current["id"], "update", current, new)
            return new

        return await self.store.transaction(run)

    async def delete_rate(self, rate_id: int) -> None:
        """Remove one rate version."""

        async def run(tx):
            current = await tx.get("rates", int(rate_id), lock=True)
            if current is None or not await tx.delete("rates", current["id"]):
                raise NotFound("rate", rate_id)
            await self._audit(tx, "rate", current["id"], "delete", current, None)

        await self.store.transaction(run)

    def _in_thread(self, fn, *args) -> defer.Deferred:
        """Run blocking ``fn`` in the reactor's thread pool (inline when there is none)."""
        if IReactorThreads.providedBy(self.clock):
            return threads.deferToThreadPool(self.clock, self.clock.getThreadPool(), fn, *args)
        return defer.maybeDeferred(fn, *args)

    async def import_rates(self, tariff: int | str, rows: Sequence[tuple[int, Mapping]],
                           problems: Sequence[tuple[int, str, str]] = ()) -> dict:
        """Insert or replace many rates in one transaction: all of them or none.

        ``rows`` are (line number, fields); ``problems`` are rows the caller could not read.
        Every bad row is reported at once in a ``RowErrors`` naming the line, the field and
        the reason. The rows are checked here in slices that leave the reactor free, then
        written by the store with COPY and one set-based upsert (``billing.imports``); every
        way of importing rates (CLI, admin API, CSV or JSON) comes through this method.
        """
        when = now(self.clock)

        def convert(data):
            fast = imports.fast_rate(data, when) if isinstance(data, dict) else None
            if fast is not None:
                return fast
            row = self._rate_row(data, when)
            return ((row["prefix"], row["effective_from"]),
                    imports.copy_fields(row, imports.RATE_STAGE))

        lines, bad = await imports.check_rows(rows, convert, self.clock,
                                              duplicate="same prefix and effective_from")
        problems = list(problems) + bad
        if isinstance(tariff, str) and tariff.isdigit():
            tariff = int(tariff)
        data = await imports.copy_text(lines, self.clock)
        count = len(lines)
        await imports.release(lines, self.clock)
        # One audit row per import, with the counts (a 100,000-rate deck is one change the
        # operator made; the rates themselves are in the file and in `rates export`).
        def audit(tariff_id, counts):
            return audit_row(self.actor, "tariff", tariff_id, "import_rates", None,
                             {**counts, "rows": count})

        result = await self._in_thread(self.store.import_rates, tariff, data, count,
                                       not problems, audit)
        if isinstance(result, list):
            problems += result
        if problems:
            raise RowErrors(sorted(problems))
        return result

    async def import_rates_csv(self, tariff: int | str, data: bytes) -> dict:
        """``import_rates`` from the bytes of a rates CSV (see ``imports.RATE_COLUMNS``)."""
        problems: list = []
        rows = self._csv_rows(data, imports.RATE_COLUMNS, imports.RATE_REQUIRED, "rates", problems)
        return await self.import_rates(tariff, rows, problems)

    def _csv_rows(self, data: bytes, columns, required, what: str, problems: list):
        """The rows of a CSV, read as they are checked; header problems at once (RowErrors)."""
        try:
            items = imports.open_csv(data, columns, required)
        except imports.HeaderError as e:
            raise RowErrors(e.problems) from None
        first = next(items, None)
        if first is None:
            raise ValidationError("file", f"the file holds no {what}")
        return imports.split_rows(itertools.chain([first], items), problems)

    async def import_destinations(self, rows: Sequence[tuple[int, Mapping]],
                                  problems: Sequence[tuple[int, str, str]] = (),
                                  columns: Sequence[str] = imports.DESTINATION_COLUMNS) -> dict:
        """Add or change many destinations in one transaction: all of them or none.

        ``columns`` are the fields the input gives: a prefix already registered gets those
        replaced and keeps the others. Bad rows are reported as ``import_rates`` does.
        """
        fields = {k: f for k, f in DESTINATION.items() if k in columns}
        given = tuple(c for c in imports.DESTINATION_COLUMNS if c in fields)

        def convert(data):
            fast = imports.fast_destination(data, given) if isinstance(data, dict) else None
            if fast is not None:
                return fast
            row = v.clean(fields, data)
            return row["prefix"], imports.copy_fields(row, given)

        lines, bad = await imports.check_rows(rows, convert, self.clock, duplicate="same prefix")
        problems = list(problems) + bad
        if problems:
            raise RowErrors(sorted(problems))
        data = await imports.copy_text(lines, self.clock)
        count = len(lines)
        await imports.release(lines, self.clock)
        def audit(counts):
            return audit_row(self.actor, "destinations", "*", "import", None,
                             {**counts, "rows": count, "columns": list(given)})

        return await self._in_thread(self.store.import_destinations, given, data, count, audit)

    async def import_destinations_csv(self, data: bytes) -> dict:
        """``import_destinations`` from the bytes of a CSV (prefix, country, description)."""
        problems: list = []
        rows = self._csv_rows(data, imports.DESTINATION_COLUMNS, imports.DESTINATION_REQUIRED,
                              "destinations", problems)
        return await self.import_destinations(rows, problems, imports.header_of(data))

    async def export_rates(self, tariff: int | str) -> tuple[dict, list[dict]]:
        """A tariff and all its rate versions (prefix, then effective_from order)."""

        async def run(tx):
            t = await lookup(tx, "tariffs", tariff, kind="tariff")
            return t, await tx.rate_versions(t["id"])

        return await self.store.transaction(run)

    # -- products -------------------------------------------------------------------------

    async def _product_out(self, tx, row: dict) -> dict:
        entries = await tx.rating_entries(row["id"])
        return {**row, "services": await tx.product_services(row["id"]),
                "rating_list": [{k: e[k] for k in ("service", "node", "access_code", "tariff",
                                                   "tariff_id", "overdraft_protection")}
                                for e in entries]}

    async def _rating_list(self, tx, product: Mapping, entries: list[dict]) -> list[dict]:
        out, seen = [], set()
        for i, e in enumerate(entries):
            field = f"rating_list[{i}]"
            t = await resolve(tx, "tariffs", e["tariff"], f"{field}.tariff", kind="tariff")
            if t["applied_to"] != "customer":
                # A vendor tariff is what the operator pays a carrier; a product's rating list
                # charges end users, so only customer tariffs belong in it.
                raise ValidationError(f"{field}.tariff", f"tariff {t['name']!r} is applied to "
                                                         f"{t['applied_to']}s, not customers")
            if t["currency"] != product["currency"]:
                raise ValidationError(f"{field}.tariff", f"tariff {t['name']!r} is in {t['currency']}, "
                                                         f"the product in {product['currency']}")
            if e["service"] not in product["services"]:
                raise ValidationError(f"{field}.service", f"{e['service']!r} is not a service of the product")
            key = (e["service"], e["node"], e["access_code"])
            if key in seen:
                raise ValidationError(f"{field}.access_code", "the list already has an entry for this "
                                                              "service, node and access code")
            seen.add(key)
            out.append({**e, "tariff_id": t["id"]})
        return out

    async def create_product(self, data: Mapping) -> dict:
        """Create a product with its included services and rating list."""
        row = v.clean(PRODUCT, data)
        check_services(row["services"])

        async def run(tx):
            entries = await self._rating_list(tx, row, row["rating_list"])
            p = await tx.insert("products", row)
            await tx.replace_product_services(p["id"], sorted(set(row["services"])))
            await tx.replace_rating_entries(p["id"], entries)
            new = await self._product_out(tx, p)
            await self._audit(tx, "product", p["id"], "create", None, new)
            return new

        return await self.store.transaction(run)

    async def get_product(self, key: int | str) -> dict:
        """One product by id or name, with its services and rating list."""

        async def run(tx):
            return await self._product_out(tx, await lookup(tx, "products", key, kind="product"))

        return await self.store.transaction(run)

    async def list_products(self, filters: Mapping = {}, limit=50, offset=0) -> dict:  # noqa: B006
        """A page of products; filters: name (contains), currency."""
        return await self._page("products", filters, ["name"], limit, offset,
                                {"name": ("name", "contains"), "currency": ("currency", "=")},
                                shape=self._product_out)

    async def update_product(self, key: int | str, data: Mapping) -> dict:
        """Change a product; ``services`` and ``rating_list``, when given, replace the old ones."""
        changes = v.clean(PRODUCT, data, partial=True)
        if "services" in changes:
            check_services(changes["services"])

        async def run(tx):
            current = await self._product_out(tx, await lookup(tx, "products", key, kind="product",
                                                                lock=True))
            v.check_immutable(PRODUCT, changes, current)
            merged = {**current, **changes}
            given = changes.get("rating_list")
            if given is None:
                given = [{k: e[k] for k in RATING_ENTRY if k != "tariff"} | {"tariff": e["tariff_id"]}
                         for e in current["rating_list"]]
            entries = await self._rating_list(tx, merged, given)
            plain = {k: val for k, val in changes.items() if k not in ("services", "rating_list")}
            await tx.update("products", current["id"], {**plain, "updated_at": now(self.clock)})
            if "services" in changes:
                await tx.replace_product_services(current["id"], sorted(set(changes["services"])))
            if "rating_list" in changes:
                await tx.replace_rating_entries(current["id"], entries)
            new = await self._product_out(tx, await tx.get("products", current["id"]))
            await self._audit(tx, "product", current["id"], "update", current, new)
            return new

        return await self.store.transaction(run)

    async def delete_product(self, key: int | str) -> None:
        """Delete a product no account uses (ConflictError otherwise)."""

        async def run(tx):
            before = await self._product_out(tx, await lookup(tx, "products", key, kind="product"))
            await delete_unused(tx, "products", key, kind="product", column="product_id",
                                in_use="is used by accounts")
            await self._audit(tx, "product", before["id"], "delete", before, None)

        await self.store.transaction(run)
