"""``cbserver check``: would this node's callbacks work? The readiness findings, one per line.

Reads the configuration (its instances, node and database) and the catalog, and lists what
would refuse callbacks: a product without a rating entry for the instance's access code, a
Simple-mode number without a rate, an unusable Hosted internal account, ... (see
``cbserver.billing.readiness``). Exit status 1 when any finding is an error, else 0.
"""

from __future__ import annotations

import dataclasses
import json

from cbserver.billing import readiness
from cbserver.commands.catalog import run_service
from cbserver.commands.db import config_from_args
from cbserver.commands.quote import parse_time
from cbserver.db.stores import PostgresReadinessStore


def register(sub) -> None:
    """Add the ``check`` sub-command."""
    p = sub.add_parser("check", help="list what in the catalog would refuse this node's callbacks")
    p.add_argument("--config", help="the server's configuration file (default: "
                                    "$CBSERVER_CONFIG, else /etc/cbserver/cbserver.toml)")
    p.add_argument("--at", metavar="ISO-8601", help="check as of this time (default: now)")
    p.add_argument("--json", action="store_true", help="print the findings as one JSON array")
    p.set_defaults(func=run, dsn=None)


def run(args) -> int:
    """Print the findings; 1 if any is an error."""
    cfg = config_from_args(args)
    at = parse_time(args.at)

    async def go(services):
        # The voice applications are catalog objects: check those, and the config's own.
        apps = await services.applications.effective(cfg.application)
        return await readiness.check_readiness(PostgresReadinessStore(services.db),
                                               dataclasses.replace(cfg, application=apps), at)

    findings = run_service(args, go)
    if args.json:
        print(json.dumps([f.to_json() for f in findings], indent=2))
    elif findings:
        for f in findings:
            print(f)
    else:
        print(f"ready: every instance of node {cfg.server.node!r} can rate its callbacks")
    return 1 if any(f.severity == readiness.ERROR for f in findings) else 0
