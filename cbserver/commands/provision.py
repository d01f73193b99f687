"""``cbserver provision FILE.toml [--dry-run]``: make the catalog match a provisioning file.

Prints one line per change (create, update, generate); nothing when the catalog already
matches. ``--dry-run`` prints what would change and writes nothing.
"""

from __future__ import annotations

from pathlib import Path

from cbserver.billing.audit import provision_actor
from cbserver.billing.provision import load, provision
from cbserver.billing.validation import CatalogError
from cbserver.cli import CommandError
from cbserver.commands.accounts import csv_dir
from cbserver.commands.catalog import describe, run_service
from cbserver.commands.db import add_dsn_arguments, config_from_args
from cbserver.db.stores import PostgresCatalogStore
from cbserver.mail import Mailer


def register(sub) -> None:
    """Add the ``provision`` sub-command."""
    p = sub.add_parser("provision", help="create or update the catalog from a TOML file (idempotent)")
    p.add_argument("file", help="provisioning file (see docs/catalog.md, demo/demo.toml)")
    p.add_argument("--dry-run", action="store_true", help="list what would change, change nothing")
    p.add_argument("--csv-dir", help="folder for the CSVs of generator runs (default: "
                                     "[server] cards_dir with --config, else ./cards)")
    add_dsn_arguments(p)
    p.set_defaults(func=_provision)


def _provision(args) -> int:
    """Load, apply (or dry-run) and print the changes."""
    try:
        doc = load(args.file)
    except CatalogError as e:
        raise CommandError(describe(e)) from None
    cfg = config_from_args(args)
    folder = csv_dir(args, cfg)

    async def go(services):
        mailer = Mailer(cfg.notifications, services.reactor) if cfg is not None else None
        return await provision(PostgresCatalogStore(services.db), services.reactor, doc, csv_dir=folder,
                               dry_run=args.dry_run, mailer=mailer,
                               actor=provision_actor(Path(args.file).resolve()))

    changes = run_service(args, go)
    prefix = "would " if args.dry_run else ""
    for change in changes:
        print(prefix + str(change))
    if not changes:
        print("nothing to change")
    return 0
