"""``cbserver config example`` and ``cbserver config check FILE``."""

from __future__ import annotations

import sys

from cbserver.cli import CommandError
from cbserver.config import ConfigError, example_path, load_config


def register(sub) -> None:
    """Add the ``config`` sub-commands."""
    p = sub.add_parser("config", help="print the example configuration or check a file")
    s = p.add_subparsers(dest="action", metavar="ACTION")
    s.required = True
    ex = s.add_parser("example", help="print the commented example configuration")
    ex.set_defaults(func=_example)
    ck = s.add_parser("check", help="validate a configuration file")
    ck.add_argument("file")
    ck.set_defaults(func=_check)


def _example(args) -> int:
    """Print the shipped example file."""
    sys.stdout.write(example_path().read_text(encoding="utf-8"))
    return 0


def _check(args) -> int:
    """Load the file; print a one-line summary or the first error."""
    try:
        cfg = load_config(args.file)
    except ConfigError as e:
        raise CommandError(str(e)) from None
    apps = ", ".join(f"{a.name!r} at {a.url_path}" for a in cfg.application)
    print(f"{args.file}: OK ({len(cfg.application)} application(s): {apps})")
    return 0
