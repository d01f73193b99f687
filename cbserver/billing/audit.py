"""The audit log: who changed what in the catalog, when, from where, before and after.

Every billing service that changes the catalog (``Catalog``, ``Accounts``, ``Payments``,
``Generator``, ``Applications``, and provisioning through them) is ``Audited``: it carries an
``Actor`` and, inside the very transaction that makes a change, calls ``self._audit(tx, ...)``
which writes one ``audit_log`` row (sql/044_audit_log.sql). The change and its row therefore
commit together or not at all. The store refuses to commit a transaction that wrote without
writing an audit row (``UnauditedChange``), so a forgotten path fails loudly in the tests
rather than silently changing the catalog unrecorded.

The actor is a parameter of the service layer: a service is built once, and a request binds
its actor with ``service.as_actor(Actor(...))`` (a cheap copy), e.g. the admin UI:
``catalog.as_actor(Actor(who="alice", source="ui", client="10.0.0.7")).create_tariff(data)``.
"""

from __future__ import annotations

import copy
import datetime as dt
import getpass
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cbserver.billing import validation as v
from cbserver.billing.validation import ValidationError, jsonable

#: Where a change can come from (``provision:<file>`` besides these).
SOURCES = ("api", "cli", "ui", "internal")
#: Columns never written to the audit log (secrets): replaced by whether they are set.
SECRET_KEYS = ("password_hash", "web_password_hash", "password", "web_password")
_SOURCE = re.compile(r"(api|cli|ui|internal|provision:.{1,400})", re.S)


class UnauditedChange(RuntimeError):
    """A transaction changed the catalog without writing an audit row (a bug: rolled back)."""


@dataclass(frozen=True)
class Actor:
    """Who makes a change: ``who`` (token name, OS user, operator), ``source``, ``client``."""

    who: str
    source: str
    client: str = ""

    def __post_init__(self):
        if not self.who or not isinstance(self.who, str):
            raise ValueError("an actor needs a name")
        if not _SOURCE.fullmatch(self.source or ""):
            raise ValueError(f"unknown audit source {self.source!r} (known: "
                             f"{', '.join(SOURCES)}, provision:<file>)")


def os_user() -> str:
    """The name of the operating-system user running this process."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no name for the uid (a container): the number will do
        import os  # noqa: PLC0415

        return f"uid:{os.getuid()}"


def cli_actor() -> Actor:
    """The actor of a ``cbserver`` command: the OS user, from the CLI."""
    return Actor(os_user(), "cli")


def provision_actor(path) -> Actor:
    """The actor of a provisioning file: the OS user, from ``provision:<file>``."""
    return Actor(os_user(), f"provision:{path}")


#: The actor of services nobody bound one to (tests, internal maintenance).
INTERNAL = Actor("cbserver", "internal")

#: Who a change through the admin API is made by: the bearer token's identity.
API_TOKEN_ACTOR = "api-token"


def api_actor(request) -> Actor:
    """The actor of an admin API request: the token's identity, at the client's address."""
    return Actor(API_TOKEN_ACTOR, "api", getattr(request.getClientAddress(), "host", "") or "")


def redact(value: Any) -> Any:
    """``value`` made JSON-ready, with secret fields replaced by whether they were set."""
    if isinstance(value, Mapping):
        out = {}
        for k, val in value.items():
            if k in SECRET_KEYS:
                out[k] = "(set)" if val is not None else None
            else:
                out[str(k)] = redact(val)
        return out
    return jsonable(value)


def audit_row(actor: Actor, kind: str, key: Any, action: str, before: Any = None,
              after: Any = None) -> dict:
    """The ``audit_log`` row of one change (the store adds the time)."""
    return {"who": actor.who, "source": actor.source, "client": actor.client or "",
            "kind": kind, "key": str(key), "action": action,
            "before": None if before is None else redact(before),
            "after": None if after is None else redact(after)}


class Audited:
    """Mixin of the services that change the catalog: an ``actor`` and ``_audit``."""

    actor: Actor = INTERNAL

    def as_actor(self, actor: Actor | None):
        """A copy of this service whose changes are recorded as made by ``actor``."""
        bound = copy.copy(self)
        bound.actor = actor or INTERNAL
        for name, value in list(vars(bound).items()):
            if isinstance(value, Audited) and value is not self:
                setattr(bound, name, value.as_actor(actor))  # inner services (Generator.accounts)
        return bound

    async def _audit(self, tx, kind: str, key: Any, action: str, before: Any = None,
                     after: Any = None) -> None:
        """Write the audit row of one change on the open transaction ``tx``."""
        await tx.audit(audit_row(self.actor, kind, key, action, before, after))


#: Filters of ``GET /v1/audit`` and ``cbserver audit list``.
AUDIT_FILTERS = ("since", "until", "who", "source", "kind", "key", "action")


def clean_filters(filters: Mapping[str, Any]) -> dict:
    """Check the audit list's filters (``since``/``until`` are ISO 8601 times)."""
    out: dict[str, Any] = {}
    for name, value in filters.items():
        if value is None or value == "":
            continue
        if name not in AUDIT_FILTERS:
            raise ValidationError(name, f"unknown filter (known: {', '.join(AUDIT_FILTERS)})")
        if name in ("since", "until"):
            value = v.aware_datetime(name, value)
        elif not isinstance(value, str) or len(value) > 500:
            raise ValidationError(name, "must be text of at most 500 characters")
        out[name] = value
    return out


class AuditLog:
    """Reads the audit log (it is written only by the services, through ``Audited``)."""

    def __init__(self, store):
        self.store = store  # ICatalogStore

    async def list(self, filters: Mapping = {}, limit=50, offset=0) -> dict:  # noqa: B006
        """A page of audit rows, newest first; filters: ``AUDIT_FILTERS``."""
        limit, offset = v.page_args(limit, offset)
        found = clean_filters(filters)
        if "since" in found and "until" in found and found["until"] < found["since"]:
            raise ValidationError("until", "is before since")

        async def run(tx):
            rows, total = await tx.audit_page(found, limit, offset)
            return {"items": rows, "total": total, "limit": limit, "offset": offset}

        return await self.store.transaction(run)


def utc(when: dt.datetime) -> str:
    """An audit time as shown by the CLI."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
