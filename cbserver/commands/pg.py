"""``cbserver pg start|stop|status|dsn``: the private local PostgreSQL cluster."""

from __future__ import annotations

from cbserver.cli import CommandError
from cbserver.devtools.pgcluster import ClusterError, default_cluster


def register(sub) -> None:
    """Add the ``pg`` sub-commands."""
    p = sub.add_parser("pg", help="the local PostgreSQL cluster for the demo and tests")
    s = p.add_subparsers(dest="action", metavar="ACTION")
    s.required = True
    for name, text in (("start", "create (first time) and start the cluster"),
                       ("stop", "stop the cluster"),
                       ("status", "say whether it runs"),
                       ("dsn", "print the connection string of its 'cbserver' database")):
        s.add_parser(name, help=text).set_defaults(func=_run, pg_action=name)


def _run(args) -> int:
    """Do what the action says."""
    cluster = default_cluster()
    try:
        if args.pg_action == "start":
            cluster.start()
            print(cluster.dsn())
        elif args.pg_action == "stop":
            cluster.stop()
        elif args.pg_action == "status":
            up = cluster.running()
            print(f"{'running' if up else 'stopped'}: {cluster.root}")
            return 0 if up else 3
        else:
            print(cluster.dsn())
    except ClusterError as e:
        raise CommandError(str(e)) from None
    return 0
