"""Declarative provisioning: make the catalog match one TOML file, idempotently.

The file lists destinations, tariffs with their rates, products with their rating lists,
customers, accounts (given IDs) and generator runs (see docs/catalog.md). ``provision``
compares each object with what is stored and creates or updates only what differs, through
the same ``Catalog`` and ``Accounts`` services as the admin API and the CLI, all inside ONE
transaction: either the whole file is applied or nothing is. Generator runs (bulk COPY on
a connection of their own) follow after that commit, each all-or-nothing by itself; a run
whose batch already exists counts as done. ``dry_run`` does the same work and rolls it back,
returning the list of changes it would make. Applying a file twice changes nothing.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from cbserver.billing import passwords
from cbserver.billing import validation as v
from cbserver.billing.accounts import ACCOUNT, CUSTOMER, Accounts
from cbserver.billing.applications import Applications, to_config
from cbserver.billing.audit import INTERNAL
from cbserver.billing.catalog import (
    DESTINATION,
    PRODUCT,
    RATE,
    TARIFF,
    Catalog,
    check_rate,
    upsert_rate,
)
from cbserver.billing.generator import Generator
from cbserver.billing.stores import ICatalogStore
from cbserver.billing.validation import ConflictError, NotFound, ValidationError

SECTIONS = ("destination", "tariff", "product", "customer", "account", "application", "generate")


@dataclass(frozen=True)
class Change:
    """One line of the plan: ``action`` (create, update, generate, unchanged) on an object."""

    action: str
    kind: str
    key: str
    detail: str = ""

    def __str__(self) -> str:
        tail = f": {self.detail}" if self.detail else ""
        return f"{self.action} {self.kind} {self.key}{tail}"


class _DryRun(Exception):
    """Raised at the end of a dry run to roll the transaction back."""


@implementer(ICatalogStore)
class _Bound:
    """An ``ICatalogStore`` whose every transaction runs on one open transaction ``tx``."""

    def __init__(self, tx, store):
        self.tx = tx
        self.store = store

    def transaction(self, fn, *args, **kwargs) -> defer.Deferred:
        """Run ``fn`` on the shared transaction (no new one)."""
        return self.tx.nested(fn, *args, **kwargs)

    def write_accounts(self, **kwargs):
        """The outer store's bulk write (its own connection and commit)."""
        return self.store.write_accounts(**kwargs)

    def import_rates(self, tariff, data, count, write=True):
        """The outer store's bulk import (its own connection and commit)."""
        return self.store.import_rates(tariff, data, count, write)

    def import_destinations(self, columns, data, count):
        """The outer store's bulk import (its own connection and commit)."""
        return self.store.import_destinations(columns, data, count)


def _missing_prefixes(tx, prefixes):
    """The ``prefixes`` that are not destinations (a transaction body)."""
    return tx.missing_prefixes(prefixes)


def load(path: str | Path) -> dict:
    """Read a provisioning file; ``password_file``/``web_password_file`` are read relative to it."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"), parse_float=v.parse_decimal)
    except OSError as e:
        raise ValidationError("file", f"cannot read {path}: {e.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValidationError("file", f"{path}: {e}") from None
    except ValueError as e:  # from parse_decimal: a number beyond Decimal's range
        raise ValidationError("file", f"{path}: {e}") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively (found by fuzzing).
        raise ValidationError("file", f"{path}: arrays or tables nested too deeply") from None
    for key in doc:
        if key not in SECTIONS:
            raise ValidationError(key, f"unknown section (known: {', '.join(SECTIONS)})")
    for i, account in enumerate(doc.get("account", [])):
        for plain in ("password", "web_password"):
            name = f"{plain}_file"
            if isinstance(account, dict) and name in account:
                if plain in account:
                    raise ValidationError(f"account[{i}].{name}", f"give {plain} or {name}, not both")
                secret = path.parent / str(account.pop(name))
                try:
                    account[plain] = secret.read_text(encoding="utf-8").strip("\r\n")
                except OSError as e:
                    raise ValidationError(f"account[{i}].{name}",
                                          f"cannot read {secret}: {e.strerror}") from None
                except ValueError:
                    # A NUL in the name ("embedded null byte", found by fuzzing), or a file
                    # that is not UTF-8 text.
                    raise ValidationError(f"account[{i}].{name}", f"cannot read {str(secret)!r}") from None
    return doc


def _items(doc: Mapping, section: str) -> list:
    items = doc.get(section, [])
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise ValidationError(section, f"must be an array of tables ([[{section}]])")
    return items


def _diff(fields: Mapping, wanted: Mapping, current: Mapping) -> dict:
    """The fields of ``wanted`` whose value differs from ``current``."""
    return {k: val for k, val in wanted.items() if k in fields and current.get(k) != val}


def _where(where: str, error: ValidationError) -> ValidationError:
    field = error.field if error.field.startswith("[") else f".{error.field}"
    return ValidationError(f"{where}{field}", error.reason)


class Provisioner:
    """Applies one provisioning document on a transaction-bound ``ICatalogStore``."""

    def __init__(self, store, clock, actor=None):
        self.store = store  # ICatalogStore
        self.actor = actor or INTERNAL
        self.catalog = Catalog(store, clock, self.actor)
        self.accounts = Accounts(store, clock, self.actor)
        self.applications = Applications(store, clock, self.actor)
        self.changes: list[Change] = []

    def _note(self, action: str, kind: str, key: Any, detail: str = "") -> None:
        self.changes.append(Change(action, kind, str(key), detail))

    async def apply(self, doc: Mapping) -> None:
        """Create or update every object of ``doc`` (not the generator runs)."""
        for section, step in (("destination", self._destination), ("tariff", self._tariff),
                              ("product", self._product), ("customer", self._customer),
                              ("account", self._account), ("application", self._application)):
            for i, item in enumerate(_items(doc, section)):
                try:
                    await step(item)
                except ValidationError as e:
                    raise _where(f"{section}[{i}]", e) from None
                except ConflictError as e:
                    raise ConflictError(f"{section}[{i}]: {e}", e.field) from None

    async def _upsert(self, kind: str, fields, item, key_field, get, create, update):
        wanted = v.clean(fields, item)
        key = wanted[key_field]
        try:
            current = await get(key)
        except NotFound:
            await create(item)
            self._note("create", kind, key)
            return
        changes = _diff(fields, v.clean(fields, item, partial=True), current)
        if changes:
            await update(key, changes)
            self._note("update", kind, key, ", ".join(sorted(changes)))

    async def _destination(self, item):
        c = self.catalog
        await self._upsert("destination", DESTINATION, item, "prefix", c.get_destination,
                           c.create_destination, c.update_destination)

    async def _tariff(self, item):
        item = dict(item)
        rates = item.pop("rate", [])
        c = self.catalog
        await self._upsert("tariff", TARIFF, item, "name", c.get_tariff, c.create_tariff, c.update_tariff)
        tariff = await c.get_tariff(v.clean(TARIFF, item)["name"])
        for j, rate in enumerate(rates):
            try:
                row = v.clean(RATE, rate)
                if "effective_from" not in row:
                    raise ValidationError("effective_from", "is required in a provisioning file (so that "
                                                            "applying it twice changes nothing)")
                check_rate(row)
                if await self.store.transaction(_missing_prefixes, [row["prefix"]]):
                    raise ValidationError("prefix", f"{row['prefix']!r} is not in the destination register")
            except ValidationError as e:
                raise _where(f"rate[{j}]", e) from None
            done = await self.store.transaction(upsert_rate, tariff["id"], row, self.actor)
            if done != "unchanged":
                when = row["effective_from"].isoformat()
                self._note(done[:-1], "rate", f"{tariff['name']}/{row['prefix']}@{when}")

    async def _product(self, item):
        c = self.catalog
        wanted = v.clean(PRODUCT, item)
        try:
            current = await c.get_product(wanted["name"])
        except NotFound:
            await c.create_product(item)
            self._note("create", "product", wanted["name"])
            return
        changes = _diff(PRODUCT, v.clean(PRODUCT, item, partial=True), current)
        changes.pop("rating_list", None)
        if "services" in changes and sorted(set(changes["services"])) == current["services"]:
            del changes["services"]
        if "rating_list" in item:
            have = sorted((e["service"], e["node"], e["access_code"], e["tariff_id"],
                           e["overdraft_protection"]) for e in current["rating_list"])
            want = []
            for j, e in enumerate(wanted["rating_list"]):
                try:
                    tariff = await c.get_tariff(e["tariff"])
                except NotFound:
                    raise ValidationError(f"rating_list[{j}].tariff", f"no tariff {e['tariff']!r}") from None
                want.append((e["service"], e["node"], e["access_code"], tariff["id"],
                             e["overdraft_protection"]))
            if have != sorted(want):
                changes["rating_list"] = item["rating_list"]
        if changes:
            await c.update_product(wanted["name"], {k: item[k] for k in changes})
            self._note("update", "product", wanted["name"], ", ".join(sorted(changes)))

    async def _customer(self, item):
        a = self.accounts
        await self._upsert("customer", CUSTOMER, item, "name", a.get_customer, a.create_customer,
                           a.update_customer)

    async def _account(self, item):
        a = self.accounts
        wanted = v.clean(ACCOUNT, item)
        try:
            current = await a.get_account(wanted["id"])
        except NotFound:
            await a.create_account(item)
            self._note("create", "account", wanted["id"])
            return
        given = v.clean(ACCOUNT, item, partial=True)
        secret = {k: given.pop(k) for k in ("password", "web_password") if k in given}
        changes = _diff(ACCOUNT, given, current)
        for name in ("customer", "product", "batch"):
            if name in changes and changes[name] == current.get(f"{name}_id"):
                del changes[name]  # named by id rather than by name: same object
        row = await self.store.transaction(lambda tx: tx.get("accounts", wanted["id"]))
        for plain, column in (("password", "password_hash"), ("web_password", "web_password_hash")):
            if plain in secret:
                value = secret[plain]
                same = (row[column] is None if value is None else
                        await a.in_thread(passwords.verify_password, value, row[column]))
                if not same:
                    changes[plain] = value
        if changes:
            await a.update_account(wanted["id"], changes)
            self._note("update", "account", wanted["id"], ", ".join(sorted(changes)))


    async def _application(self, item):
        """A voice application (the fields of a config's ``[[application]]`` table)."""
        app = to_config(item)
        done = await self.store.transaction(self.applications.upsert, app)
        if done != "unchanged":
            self._note(done, "application", app.name)


async def provision(store, clock, doc: Mapping, *, csv_dir: str | Path, dry_run: bool = False,
                    mailer=None, actor=None) -> list[Change]:
    """Apply ``doc`` (see ``load``): one transaction for the objects, then the generator runs
    (whose CSVs are mailed through ``mailer``, as ``Generator`` does). Every change is audited
    as made by ``actor`` (``audit.provision_actor(path)`` for a file)."""
    runs = _items(doc, "generate")
    found: dict[str, list[Change]] = {}

    async def objects(tx):
        bound = _Bound(tx, store)
        p = Provisioner(bound, clock, actor)
        await p.apply(doc)
        pending = []
        gen = Generator(bound, clock, csv_dir, mailer, actor)
        for i, run in enumerate(runs):
            batch = run.get("batch")
            if isinstance(batch, str) and await tx.get_by("batches", "name", batch.strip()):
                continue  # that run was applied before
            try:
                req, _space, _links = await gen.check(run)
            except ValidationError as e:
                raise _where(f"generate[{i}]", e) from None
            pending.append(run)
            p._note("generate", "batch", req["batch"], f"{req['quantity']} account(s)")
        found["changes"], found["pending"] = p.changes, pending
        if dry_run:
            raise _DryRun()

    try:
        await store.transaction(objects)
    except _DryRun:
        return found["changes"]
    generator = Generator(store, clock, csv_dir, mailer, actor)
    for run in found["pending"]:
        result = await generator.generate(run)
        for change in found["changes"]:
            if change.action == "generate" and change.key == result["batch"]:
                found["changes"][found["changes"].index(change)] = Change(
                    "generate", "batch", result["batch"], f"{result['quantity']} account(s), "
                                                          f"CSV {result['csv_path']}")
    return found["changes"]


def provision_file_sync(dsn: str, path: str | Path, csv_dir: str | Path | None = None,
                        dry_run: bool = False) -> str:
    """Blocking: apply a provisioning file by running ``cbserver provision`` in a child process.

    For callers without a running reactor (``cbserver demo`` before it starts the server).
    Returns the command's output; a refusal raises ``ValidationError`` with its message.
    """
    import subprocess  # noqa: PLC0415 - only this blocking helper needs it
    import sys  # noqa: PLC0415

    from cbserver.resources import checkout_dir  # noqa: PLC0415

    folder = Path(csv_dir) if csv_dir is not None else checkout_dir() / "var" / "cards"
    argv = ["provision", str(path), "--dsn", dsn, "--csv-dir", str(folder)]
    if dry_run:
        argv.append("--dry-run")
    code = f"import sys; from cbserver.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ValidationError("file", (proc.stderr.strip() or f"exit code {proc.returncode}"))
    return proc.stdout
