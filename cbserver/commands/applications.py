"""``cbserver applications import --config FILE``: make the catalog's voice applications match
the ``[[application]]`` tables of a configuration file.

At start-up a node adds only the config's applications the catalog never had, and the
database wins afterwards (docs/catalog.md); this command is the deliberate way to push the
config's tables again: each is created or updated to match (audited as
``provision:<file>``). Applications the config does not name are left alone. Prints one line
per application: create, update or unchanged.
"""

from __future__ import annotations

from pathlib import Path

from cbserver.billing.applications import Applications
from cbserver.billing.audit import provision_actor
from cbserver.cli import CommandError
from cbserver.commands.catalog import run_service
from cbserver.config import ConfigError, load_config
from cbserver.db.stores import PostgresCatalogStore


def register(sub) -> None:
    """Add ``applications import``."""
    p = sub.add_parser("applications", help="voice applications: import a config's [[application]] tables")
    s = p.add_subparsers(dest="action", metavar="ACTION")
    s.required = True
    a = s.add_parser("import", help="create or update the catalog's applications from a config file")
    a.add_argument("--config", required=True, help="the configuration file to read")
    a.add_argument("--dsn", help="libpq connection string (default: the config's [database] dsn)")
    a.set_defaults(func=_import)


def _import(args) -> int:
    """Sync the config's applications into the catalog and print what was done."""
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    if not cfg.application:
        raise CommandError(f"{args.config} has no [[application]] table")
    args.dsn = args.dsn or cfg.database.dsn
    actor = provision_actor(Path(args.config).resolve())

    async def go(services):
        return await Applications(PostgresCatalogStore(services.db), services.reactor,
                                  actor).sync(cfg.application)

    for action, name in run_service(args, go):
        print(f"{action} application {name}")
    return 0
