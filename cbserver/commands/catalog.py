"""``cbserver catalog``: create, show, list, update and delete any catalog object from the shell.

Also home of ``run_service``, which every catalog command (accounts, rates, provision) uses
to run the async service layer under ``twisted.internet.task.react`` with the same
``Database`` pool the server uses: one code path for the CLI and the admin API.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from cbserver.billing.accounts import Accounts
from cbserver.billing.applications import Applications
from cbserver.billing.audit import cli_actor
from cbserver.billing.catalog import Catalog, RowErrors
from cbserver.billing.validation import CatalogError, ValidationError, jsonable
from cbserver.cli import CommandError
from cbserver.commands.db import add_dsn_arguments, dsn_from_args
from cbserver.db.stores import PostgresCatalogStore

CONNECT_TIMEOUT = 15.0


class Services:
    """The service objects a command works with, over one started pool."""

    def __init__(self, db, reactor):
        self.db = db
        self.reactor = reactor
        # Every change a command makes is audited as made by the OS user, from the CLI.
        self.actor = cli_actor()
        self.catalog = Catalog(PostgresCatalogStore(db), reactor, self.actor)
        self.accounts = Accounts(PostgresCatalogStore(db), reactor, self.actor)
        self.applications = Applications(PostgresCatalogStore(db), reactor, self.actor)


def describe(error: CatalogError) -> str:
    """One line for a catalog error."""
    if isinstance(error, ValidationError):
        return f"{error.field}: {error.reason}"
    return str(error)


def run_service(args, fn: Callable[[Services], Awaitable[Any]]) -> Any:
    """Start a pool on the DSN of ``args``, run ``fn(services)`` under ``task.react``, stop.

    Catalog errors become ``CommandError`` (one line, exit 1); a bad import prints each bad
    row on stderr first.
    """
    from cbserver.db.pool import Database  # noqa: PLC0415 - keeps `cbserver --help` light

    dsn = dsn_from_args(args)
    outcome: dict[str, Any] = {}

    async def main(reactor):
        # register=False: a command is not a node (no server_nodes row, no heartbeat).
        db = Database(dsn, reactor, size=2, retry_max=2.0, register=False)
        db.startService()
        try:
            # Wait for the pool; give up after two failed attempts (a CLI should not hang on
            # a database that is not there) or CONNECT_TIMEOUT seconds.
            waited = 0.0
            while not db.ready and db.attempts < 3 and waited < CONNECT_TIMEOUT:
                await task.deferLater(reactor, 0.05, lambda: None)
                waited += 0.05
            if not db.ready:
                outcome["error"] = CommandError(f"cannot use the database: {db.reason}")
                return
            try:
                outcome["result"] = await fn(Services(db, reactor))
            except CatalogError as e:
                outcome["error"] = e
        finally:
            await db.stopService()

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    error = outcome.get("error")
    if isinstance(error, RowErrors):
        for line, field, reason in error.problems:
            print(f"line {line}: {field}: {reason}", file=sys.stderr)
        raise CommandError(f"{len(error.problems)} bad row(s): nothing was written")
    if isinstance(error, CatalogError):
        raise CommandError(describe(error))
    if error is not None:
        raise error
    return outcome.get("result")


def print_json(value: Any) -> None:
    """Print a catalog object as indented JSON."""
    print(json.dumps(jsonable(value), indent=2, sort_keys=True))


def load_json(text: str | None, path: str | None) -> Any:
    """The JSON object given inline (``--json``) or in a file (``--file``)."""
    try:
        source = Path(path).read_text(encoding="utf-8") if path else (text or "{}")
        from decimal import Decimal  # noqa: PLC0415

        return json.loads(source, parse_float=Decimal)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CommandError(f"cannot read the object: {e}") from None


#: kind -> (service attribute, method suffix) for the generic sub-commands.
KINDS = {
    "destination": ("catalog", "destination"),
    "tariff": ("catalog", "tariff"),
    "rate": ("catalog", "rate"),
    "product": ("catalog", "product"),
    "customer": ("accounts", "customer"),
    "batch": ("accounts", "batch"),
    "account": ("accounts", "account"),
    "application": ("applications", "application"),
}


def register(sub) -> None:
    """Add ``catalog create|show|list|update|delete KIND``."""
    p = sub.add_parser("catalog", help="create, show, list, update, delete catalog objects")
    s = p.add_subparsers(dest="action", metavar="ACTION")
    s.required = True
    create = s.add_parser("create", help="create a catalog object",
                          description="`cbserver catalog create KIND --help` lists KIND's fields.")
    kinds = create.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    for kind in sorted(KINDS):
        k = kinds.add_parser(kind, help=f"create {'an' if kind == 'account' else 'a'} {kind}",
                             epilog=fields_help(kind),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        if kind == "rate":
            k.add_argument("--tariff", help="the tariff to add the rate to (name or id)")
        g = k.add_mutually_exclusive_group(required=True)
        g.add_argument("--json", help="the fields as a JSON object")
        g.add_argument("--file", help="a file holding the fields as a JSON object")
        add_dsn_arguments(k)
        k.set_defaults(func=_run, action="create")
    for action in ("show", "list", "update", "delete"):
        a = s.add_parser(action, help=f"{action} a catalog object")
        a.add_argument("kind", choices=sorted(KINDS))
        if action in ("show", "update", "delete"):
            a.add_argument("key", help="id, name, prefix or account ID")
        if action == "update":
            g = a.add_mutually_exclusive_group(required=True)
            g.add_argument("--json", help="the fields as a JSON object")
            g.add_argument("--file", help="a file holding the fields as a JSON object")
        if action == "list":
            a.add_argument("--filter", action="append", default=[], metavar="NAME=VALUE")
            a.add_argument("--limit", default=50)
            a.add_argument("--offset", default=0)
        add_dsn_arguments(a)
        a.set_defaults(func=_run)


def _field_tables() -> dict:
    from cbserver.billing.accounts import ACCOUNT, BATCH, CUSTOMER  # noqa: PLC0415
    from cbserver.billing.catalog import DESTINATION, PRODUCT, RATE, RATING_ENTRY, TARIFF  # noqa: PLC0415

    return {"destination": (DESTINATION, None), "tariff": (TARIFF, None), "rate": (RATE, None),
            "product": (PRODUCT, ("rating_list", RATING_ENTRY)), "customer": (CUSTOMER, None),
            "batch": (BATCH, None), "account": (ACCOUNT, None)}


def _describe_fields(fields, indent: str = "  ") -> list[str]:
    out = []
    for name, spec in fields.items():
        notes = []
        if spec.required:
            notes.append("required")
        elif spec.default is not _missing():
            default = spec.default() if callable(spec.default) else spec.default
            notes.append(f"default {json.dumps(jsonable(default))}")
        if not spec.mutable:
            notes.append("cannot be changed later")
        out.append(f"{indent}{name:<28} {'; '.join(notes)}".rstrip())
    return out


def _missing():
    from cbserver.billing import validation  # noqa: PLC0415

    return validation._MISSING


def _application_help() -> str:
    """The fields of a voice application: the config's ``[[application]]`` keys."""
    import dataclasses  # noqa: PLC0415

    from cbserver.config import ApplicationConfig  # noqa: PLC0415

    lines = ["fields of an application (keys of the JSON object, as in [[application]]):"]
    for f in dataclasses.fields(ApplicationConfig):
        notes = []
        if f.name in ("name", "callback_page_address"):
            notes.append("required")
        elif f.default is not dataclasses.MISSING:
            notes.append(f"default {json.dumps(jsonable(f.default))}")
        if f.name == "name":
            notes.append("cannot be changed later")
        lines.append(f"  {f.name:<28} {'; '.join(notes)}".rstrip())
    return "\n".join(lines)


def fields_help(kind: str) -> str:
    """The fields of a ``kind`` object, one a line, for ``catalog create KIND --help``."""
    if kind == "application":
        return _application_help()
    fields, nested = _field_tables()[kind]
    article = "an" if kind == "account" else "a"
    lines = [f"fields of {article} {kind} (keys of the JSON object):", *_describe_fields(fields)]
    if nested is not None:
        lines += ["", f"each entry of {nested[0]}:", *_describe_fields(nested[1], "    ")]
    return "\n".join(lines)


def _run(args) -> int:
    """Call the service method the action and kind name."""
    owner, noun = KINDS[args.kind]
    data = load_json(args.json, args.file) if args.action in ("create", "update") else None
    filters = {}
    for item in getattr(args, "filter", []):
        name, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"--filter {item!r}: expected NAME=VALUE")
        filters[name] = value

    async def go(services: Services):
        target = getattr(services, owner)
        if args.action == "create":
            if args.kind == "rate":
                if not args.tariff:
                    raise ValidationError("tariff", "name the tariff with --tariff")
                return await target.create_rate(args.tariff, data)
            return await getattr(target, f"create_{noun}")(data)
        if args.action == "show":
            return await getattr(target, f"get_{noun}")(_key(args))
        if args.action == "list":
            plural = "batches" if noun == "batch" else f"{noun}s"
            return await getattr(target, f"list_{plural}")(filters, args.limit, args.offset)
        if args.action == "update":
            return await getattr(target, f"update_{noun}")(_key(args), data)
        await getattr(target, f"delete_{noun}")(_key(args))
        return {"deleted": args.key}

    print_json(run_service(args, go))
    return 0


def _key(args) -> Any:
    """Rate ids are numbers; other keys are passed as typed (digits mean an id)."""
    if args.kind == "rate":
        if not args.key.isdigit():
            raise ValidationError("key", "a rate is named by its numeric id")
        return int(args.key)
    return args.key
