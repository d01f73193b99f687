"""``cbserver pg ...``: the private local PostgreSQL cluster, and a streaming standby of it."""

from __future__ import annotations

from cbserver.cli import CommandError
from cbserver.devtools.pgcluster import ClusterError, default_cluster, failover_dsn, standby_of


def register(sub) -> None:
    """Add the ``pg`` sub-commands."""
    p = sub.add_parser("pg", help="the local PostgreSQL cluster for the demo and tests")
    s = p.add_subparsers(dest="action", metavar="ACTION")
    s.required = True
    for name, text in (("start", "create (first time) and start the cluster"),
                       ("stop", "stop the cluster"),
                       ("status", "say whether it runs"),
                       ("dsn", "print the connection string of its 'cbserver' database"),
                       ("standby", "create (first time) and start a streaming standby of the "
                                   "cluster (next to it, '<root>-standby'); print the "
                                   "failover DSN"),
                       ("promote", "promote the standby to a primary (after a failover)"),
                       ("drop-standby", "stop and delete the standby; the cluster stops "
                                        "waiting for it (synchronous replication)")):
        a = s.add_parser(name, help=text)
        a.set_defaults(func=_run, pg_action=name)
        if name in ("stop", "status", "dsn"):
            a.add_argument("--standby", action="store_true",
                           help="act on the standby rather than on the cluster")
        if name == "dsn":
            a.add_argument("--database", default="cbserver",
                           help="the database named (cbserver; the demo's is cbserver_demo)")
            a.add_argument("--failover", action="store_true",
                           help="the multi-host DSN over the cluster and its standby "
                                "(target_session_attrs=read-write), see docs/failover.md")
        if name == "standby":
            a.add_argument("--async", dest="synchronous", action="store_false",
                           help="asynchronous replication (default: synchronous, so that "
                                "no committed xDR is lost by a failover)")


def _run(args) -> int:
    """Do what the action says."""
    primary = default_cluster()
    standby = standby_of(primary)
    cluster = standby if getattr(args, "standby", False) else primary
    try:
        if args.pg_action == "start":
            cluster.start()
            print(cluster.dsn())
        elif args.pg_action == "stop":
            cluster.stop()
        elif args.pg_action == "status":
            up = cluster.running()
            role = " (standby)" if cluster.is_standby() else ""
            print(f"{'running' if up else 'stopped'}: {cluster.root}{role}")
            return 0 if up else 3
        elif args.pg_action == "standby":
            if not primary.running():
                raise CommandError("the cluster is not running: cbserver pg start")
            standby.start_standby(primary, synchronous=args.synchronous)
            print(failover_dsn([primary, standby]))
        elif args.pg_action == "promote":
            if not standby.is_standby():
                raise CommandError(f"{standby.root} is not a standby (cbserver pg standby)")
            standby.promote()
        elif args.pg_action == "drop-standby":
            if not standby.initialised():
                raise CommandError(f"no standby at {standby.root}")
            standby.remove_standby(primary)
        elif args.failover:
            print(failover_dsn([primary, standby], args.database))
        else:
            print(cluster.dsn(args.database))
    except ClusterError as e:
        raise CommandError(str(e)) from None
    return 0
