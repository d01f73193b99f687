"""The ``cbserver`` command: one sub-command per operator task.

Each sub-command lives in a module of ``cbserver.commands`` with ``register(subparsers)``;
errors a user can fix end with one line on stderr and a non-zero exit code, never a
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from cbserver import __version__

# Modules of cbserver.commands that add sub-commands, in the order `--help` lists them.
COMMAND_MODULES = ("config", "db", "pg", "demo", "catalog", "accounts", "rates", "destinations",
                   "provision", "quote", "report", "calls", "check", "audit", "applications", "node",
                   "operator")


# `cbserver --help` ends with this: the command runs operator tasks, not the server.
SERVER_HELP = """\
The server itself is started by twistd, not by this command:
  twistd -n --pidfile= cbserver --config /etc/cbserver/cbserver.toml
(in the foreground; under systemd, one node per core: deploy/systemd/cbserver@.service,
see docs/deploy.md). `twistd cbserver --help` lists its options.

Commands that use the database take --config FILE or --dsn DSN; with neither they read
the file named by $CBSERVER_CONFIG, else /etc/cbserver/cbserver.toml."""


class CommandError(Exception):
    """A user-facing failure of a sub-command: printed as one line, exit code 1."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="cbserver", description="cbserver operator tool",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SERVER_HELP)
    parser.add_argument("--version", action="version", version=f"cbserver {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"cbserver.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"cbserver.commands.{name}":
                continue  # that part of cbserver is not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cbserver`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except CommandError as e:
        print(f"cbserver {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
