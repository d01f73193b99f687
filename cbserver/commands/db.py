"""``cbserver db upgrade|status``: apply or list schema migrations."""

from __future__ import annotations

import os
from pathlib import Path

from cbserver.cli import CommandError
from cbserver.config import ConfigError, load_config
from cbserver.db.migrations import MigrationError, applied, changed, discover, upgrade
from cbserver.db.sync import connect_sync
from cbserver.errors import DatabaseUnavailable


def register(sub) -> None:
    """Add the ``db`` sub-commands."""
    p = sub.add_parser("db", help="database schema: upgrade, status")
    s = p.add_subparsers(dest="action", metavar="ACTION")
    s.required = True
    for name, func, text in (("upgrade", _upgrade, "apply pending migrations"),
                             ("status", _status, "show applied and pending migrations")):
        a = s.add_parser(name, help=text)
        add_dsn_arguments(a)
        a.set_defaults(func=func)


# Where commands look for the configuration when neither --config nor --dsn is given.
CONFIG_ENV = "CBSERVER_CONFIG"
SYSTEM_CONFIG = "/etc/cbserver/cbserver.toml"


def add_dsn_arguments(parser) -> None:
    """``--dsn DSN`` or ``--config FILE`` (whose [database] dsn is used); without either, the
    file named by ``$CBSERVER_CONFIG``, else /etc/cbserver/cbserver.toml."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--dsn", help="libpq connection string")
    g.add_argument("--config", help=f"take the DSN from this configuration file (default: "
                                    f"${CONFIG_ENV}, else {SYSTEM_CONFIG})")


def find_config(environ=None) -> str:
    """The configuration file to use when ``--config`` is not given: ``$CBSERVER_CONFIG``
    (which must exist when set), else /etc/cbserver/cbserver.toml; a ``CommandError``
    naming the three places when there is none."""
    env = os.environ if environ is None else environ
    named = env.get(CONFIG_ENV, "")
    if named:
        if not Path(named).is_file():
            raise CommandError(f"{CONFIG_ENV}={named} names no file")
        return named
    if Path(SYSTEM_CONFIG).is_file():
        return SYSTEM_CONFIG
    raise CommandError(f"no configuration found: give --config FILE (or --dsn DSN), set "
                       f"{CONFIG_ENV}, or create {SYSTEM_CONFIG}")


def config_from_args(args):
    """The configuration named by ``--config``, else found by ``find_config``; None when a
    ``--dsn`` is given instead. A bad file is a one-line ``CommandError``."""
    if not getattr(args, "config", None):
        if getattr(args, "dsn", None):
            return None
        args.config = find_config()  # remembered: the command reads one file throughout
    try:
        return load_config(args.config)
    except ConfigError as e:
        raise CommandError(str(e)) from None


def dsn_from_args(args) -> str:
    """The DSN named by ``--dsn``, else that of the configuration (see config_from_args)."""
    return args.dsn or config_from_args(args).database.dsn


def _upgrade(args) -> int:
    """Apply pending migrations."""
    try:
        applied = upgrade(dsn_from_args(args))
    except MigrationError as e:
        raise CommandError(str(e)) from None
    if not applied:
        print("schema is up to date")
    return 0


def _status(args) -> int:
    """Print the current version and each pending migration."""
    dsn = dsn_from_args(args)
    try:
        conn = connect_sync(dsn, timeout=10)
    except DatabaseUnavailable as e:
        raise CommandError(f"cannot connect: {e}") from None
    try:
        recorded = applied(conn)
        have = max(recorded, default=0)
        edited = {m.version for m in changed(conn, recorded=recorded)}
    finally:
        conn.close()
    print(f"schema version {have}")
    for m in discover():
        state = ("CHANGED since it was applied" if m.version in edited
                 else "applied" if m.version <= have else "PENDING")
        print(f"  {m.version:03d} {m.name}: {state}")
    return 1 if edited else 0
