"""Voice applications (the manual's WEB callback instances) as catalog objects.

An application has exactly the fields of an ``[[application]]`` table of the config
(``cbserver.config.ApplicationConfig``: the manual's "Configure the instance parameters"),
checked by the same code, so the config, the admin API, the CLI and provisioning files accept
the same values and a refusal names the field (``second_number``, ``hosts``...). Its key is its
``name``, which cannot change (a callback in progress and its xDRs refer to it).

``Applications(store, clock)`` creates, lists, changes and deletes them, each change audited
(``billing.audit``) and checked against the other applications: two may not share a page
path or a host name. The rows live in ``applications`` (sql/043); every node reads them
through ``cbserver.callback.app_directory`` and follows a change at the next callback.

The config's ``[[application]]`` tables meet the catalog in two ways: at start-up a node
``seed``s the applications the catalog has never had (no audit row names them), so that an
existing install keeps working and afterwards the database wins; and ``cbserver
applications import --config FILE`` makes the catalog match the config's tables (``sync``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from cbserver.billing import validation as v
from cbserver.billing.audit import Audited
from cbserver.billing.catalogrules import now
from cbserver.billing.validation import ConflictError, NotFound, ValidationError
from cbserver.config import ApplicationConfig
from cbserver.configschema import ConfigError, build

#: The fields of an application, in the manual's order (those of ``ApplicationConfig``).
FIELDS = tuple(f.name for f in dataclasses.fields(ApplicationConfig))
#: Fields holding lists.
LIST_FIELDS = ("hosts", "hosted_allowed_clients", "allowed_destinations", "denied_destinations")


def to_config(data: Mapping[str, Any], where: str = "") -> ApplicationConfig:
    """``data`` checked as an ``[[application]]`` table; ``ValidationError`` naming the field."""
    unknown = [k for k in data if k not in FIELDS]
    if unknown:
        raise ValidationError(unknown[0], f"unknown field (known: {', '.join(FIELDS)})")
    try:
        return build(ApplicationConfig, {k: (list(val) if isinstance(val, tuple) else val)
                                         for k, val in data.items() if val is not None})
    except ConfigError as e:
        field = e.path or "body"
        raise ValidationError(f"{where}{field}", e.problem) from None


def as_row(app: ApplicationConfig) -> dict:
    """The ``applications`` row of a checked application (lists as lists)."""
    return {k: (list(val) if isinstance(val, tuple) else val)
            for k, val in dataclasses.asdict(app).items()}


def from_row(row: Mapping[str, Any]) -> ApplicationConfig:
    """The ``ApplicationConfig`` of a stored row (already checked when it was written)."""
    return ApplicationConfig(**{k: (tuple(row[k] or ()) if k in LIST_FIELDS else row[k])
                                for k in FIELDS})


def _out(row: Mapping[str, Any]) -> dict:
    """An application as the API shows it: its fields, id and times, and its page path."""
    out = {k: row[k] for k in ("id", *FIELDS, "created_at", "updated_at") if k in row}
    for k in LIST_FIELDS:
        out[k] = list(out.get(k) or ())
    out["url_path"] = from_row(row).url_path
    return out


def _audited(row: Mapping[str, Any]) -> dict:
    """An application as the audit log keeps it: Hosted client tokens are secrets."""
    out = _out(row)
    out["hosted_allowed_clients"] = ["token:(set)" if c.startswith("token:") else c
                                     for c in out["hosted_allowed_clients"]]
    return out


def check_together(apps: Iterable[ApplicationConfig], changed: ApplicationConfig) -> None:
    """``ConflictError`` naming the field when ``changed`` takes another's path or host name."""
    for other in apps:
        if other.name == changed.name:
            continue
        if other.url_path == changed.url_path:
            raise ConflictError(f"page path {changed.url_path!r} is already used by application "
                                f"{other.name!r}", "path")
        shared = set(other.hosts) & set(changed.hosts)
        if shared:
            raise ConflictError(f"host name {sorted(shared)[0]!r} is already used by application "
                                f"{other.name!r}", "hosts")


class Applications(Audited):
    """The voice applications in the catalog (changes audited)."""

    def __init__(self, store, clock, actor=None):
        self.store = store  # ICatalogStore
        self.clock = clock
        if actor is not None:
            self.actor = actor

    async def _others(self, tx) -> list[ApplicationConfig]:
        """Every stored application, the table locked against concurrent changes."""
        return [from_row(r) for r in await tx.applications(lock=True)]

    async def _create(self, tx, app: ApplicationConfig) -> dict:
        check_together(await self._others(tx), app)
        if await tx.get_by("applications", "name", app.name) is not None:
            raise ConflictError(f"application {app.name!r} already exists", "name")
        new = await tx.insert("applications", as_row(app))
        await self._audit(tx, "application", app.name, "create", None, _audited(new))
        return _out(new)

    async def _update(self, tx, current: Mapping, changes: Mapping[str, Any]) -> dict:
        if "name" in changes and changes["name"] != current["name"]:
            raise ConflictError("an application's name cannot change (create a new one)", "name")
        merged = to_config({**{k: current[k] for k in FIELDS}, **changes})
        check_together(await self._others(tx), merged)
        row = as_row(merged)
        diff = {k: row[k] for k in FIELDS if row[k] != (list(current[k]) if k in LIST_FIELDS
                                                          else current[k])}
        if not diff:
            return _out(current)
        new = await tx.update("applications", current["id"], {**diff, "updated_at": now(self.clock)})
        await self._audit(tx, "application", current["name"], "update", _audited(current), _audited(new))
        return _out(new)

    async def create_application(self, data: Mapping) -> dict:
        """Create an application from its fields (``name`` and ``callback_page_address`` required)."""
        app = to_config(data)
        return await self.store.transaction(self._create, app)

    async def get_application(self, key: int | str) -> dict:
        """One application by name (or id)."""
        return _out(await self.store.transaction(_lookup, key))

    async def list_applications(self, filters: Mapping = {}, limit=50, offset=0) -> dict:  # noqa: B006
        """A page of applications by name; filter: name (contains)."""
        limit, offset = v.page_args(limit, offset)
        found = []
        for name, value in filters.items():
            if value in (None, ""):
                continue
            if name != "name":
                raise ValidationError(name, "unknown filter (known: name)")
            found.append(("name", "contains", value))

        async def run(tx):
            rows, total = await tx.page("applications", found, ["name"], limit, offset)
            return {"items": [_out(r) for r in rows], "total": total, "limit": limit, "offset": offset}

        return await self.store.transaction(run)

    async def update_application(self, key: int | str, data: Mapping) -> dict:
        """Change some fields of an application (the others are kept); checked as a whole."""
        if not isinstance(data, Mapping):
            raise ValidationError("body", "must be a JSON object")

        async def run(tx):
            return await self._update(tx, await _lookup(tx, key, lock=True), data)

        return await self.store.transaction(run)

    async def delete_application(self, key: int | str) -> None:
        """Delete an application: its page answers 404 from the next request on."""

        async def run(tx):
            current = await _lookup(tx, key, lock=True)
            await tx.delete("applications", current["id"])
            await self._audit(tx, "application", current["name"], "delete", _audited(current), None)

        await self.store.transaction(run)

    async def effective(self, config_apps: Iterable[ApplicationConfig] = ()) -> tuple:
        """What a node serves: the catalog's applications, and those of ``config_apps`` the
        catalog does not hold (not seeded yet), as ``ApplicationConfig``s by name."""
        rows = await self.store.transaction(lambda tx: tx.applications())
        found = {a.name: a for a in config_apps}
        found.update((r["name"], from_row(r)) for r in rows)
        return tuple(found[name] for name in sorted(found))

    async def upsert(self, tx, app: ApplicationConfig) -> str:
        """Make the stored application ``app.name`` equal to ``app`` on ``tx``: what was done."""
        current = await tx.get_by("applications", "name", app.name)
        if current is None:
            await self._create(tx, app)
            return "create"
        before = _out(current)
        after = await self._update(tx, current, as_row(app))
        return "update" if after != before else "unchanged"

    async def sync(self, apps: Iterable[ApplicationConfig]) -> list[tuple[str, str]]:
        """Make the catalog's applications named in ``apps`` match them, in one transaction.

        Returns ``[(action, name)]`` (create, update, unchanged). Others are left alone.
        """
        async def run(tx):
            return [(await self.upsert(tx, app), app.name) for app in apps]

        return await self.store.transaction(run)

    async def seed(self, apps: Iterable[ApplicationConfig]) -> list[str]:
        """Create those of ``apps`` the catalog has never had; the names created.

        "Never had": no audit row names the application, so one an operator deleted (or
        changed) is not brought back by a node's restart: after the first start the database
        wins. Each application is its own transaction, so two nodes starting together cannot
        fail each other (the second sees the first's row).
        """
        created = []
        for app in apps:
            async def run(tx, app=app):
                rows, total = await tx.audit_page({"kind": "application", "key": app.name}, 1, 0)
                if total or await tx.get_by("applications", "name", app.name) is not None:
                    return False
                await self._create(tx, app)
                return True

            try:
                if await self.store.transaction(run):
                    created.append(app.name)
            except ConflictError:
                continue  # another node created it meanwhile, or its path is taken
        return created


async def _lookup(tx, key: int | str, *, lock: bool = False) -> dict:
    """The row named by ``key``: a name, or digits for an id; else NotFound."""
    row = await tx.get_by("applications", "name", key) if isinstance(key, str) else None
    if row is None and (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
        row = await tx.get("applications", int(key), lock=lock)
    elif row is not None and lock:
        row = await tx.get("applications", row["id"], lock=True)
    if row is None:
        raise NotFound("application", key)
    return row
