"""``cbserver node``: the cluster's nodes from the shell: ``list``, ``drain``, ``undrain``.

``drain NAME`` writes a ``node_drains`` row (``cbserver.db.nodes_store``): within a poll
(2 s) the node takes no new callback (503 ``draining``) and answers ``/readyz`` 503, so the
balancer stops sending it any; calls in progress run to their end, or until ``--deadline``
seconds, when the node ends them (cause ``drain_deadline``, billed). ``--wait`` then waits
until the node runs no callback, so that a script can stop it next (SIGTERM) without cutting
a call. ``undrain NAME`` reverses it. See the README, "Draining a node and rolling upgrades".
"""

from __future__ import annotations

import json
import time

from cbserver.billing.audit import cli_actor
from cbserver.cli import CommandError
from cbserver.commands.db import add_dsn_arguments, config_from_args, dsn_from_args
from cbserver.config import NODE_STALE_AFTER, check_node_name
from cbserver.db import nodes_store
from cbserver.db.sync import sync_cursor
from cbserver.errors import DatabaseError, DatabaseUnavailable

# Before --wait trusts a count of zero: the node sees the drain within one poll (2 s), and a
# callback it admitted just before shows in callback_sessions once its status is written.
NOTICE_SECONDS = 5.0
WAIT_POLL = 1.0


def register(sub) -> None:
    """Add the ``node`` sub-command and its actions."""
    p = sub.add_parser("node", help="the cluster's nodes: list, drain, undrain")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    ls = actions.add_parser("list", help="nodes with a live process or a drain, their callbacks")
    ls.add_argument("--json", action="store_true", help="one JSON object per node")
    add_dsn_arguments(ls)
    ls.set_defaults(func=_list)
    dr = actions.add_parser("drain", help="take a node out: no new callbacks, calls run to their end")
    dr.add_argument("name", help="the node's name ([server] node)")
    dr.add_argument("--deadline", type=float, metavar="SECONDS",
                    help="end calls still running after this many seconds (default: never)")
    dr.add_argument("--wait", action="store_true",
                    help="then wait until the node runs no callback (exit 0), to stop it safely")
    dr.add_argument("--wait-timeout", type=float, metavar="SECONDS",
                    help="with --wait: give up after this many seconds (exit 1)")
    add_dsn_arguments(dr)
    dr.set_defaults(func=_drain)
    un = actions.add_parser("undrain", help="put a drained node back: it takes callbacks again")
    un.add_argument("name", help="the node's name")
    add_dsn_arguments(un)
    un.set_defaults(func=_undrain)


def _name(text: str) -> str:
    try:
        return check_node_name(text)
    except ValueError as e:
        raise CommandError(f"node name: {e}") from None


def _run(args, fn):
    """``fn(cursor)`` in one transaction; database errors as one line."""
    try:
        with sync_cursor(dsn_from_args(args), timeout=10) as cur:
            return fn(cur)
    except DatabaseUnavailable as e:
        raise CommandError(f"cannot connect: {str(e).splitlines()[0]}") from None
    except DatabaseError as e:
        raise CommandError(f"database error: {str(e).splitlines()[0]} "
                           "(is the schema current? `cbserver db upgrade`)") from None


def _expiry(args) -> int:
    """The staleness rule of the lists: the configuration's ``[recovery] stale_after`` (its
    default with ``--dsn`` and no ``--config``), as crash recovery and the admin API apply it."""
    cfg = config_from_args(args)
    return NODE_STALE_AFTER if cfg is None else cfg.recovery.stale_after


def _list(args) -> int:
    """Print the nodes: name, drain state, live processes, callbacks in progress."""
    nodes = _run(args, lambda cur: nodes_store.list_nodes_sync(cur, _expiry(args)))
    for n in nodes:
        if args.json:
            print(json.dumps(n, sort_keys=True))
            continue
        drain = "running"
        if n["draining"]:
            drain = "draining" + (f" (deadline {n['deadline']})" if n["deadline"] else "")
        print(f"{n['node']}\t{drain}\tprocesses={n['processes']}\tcallbacks={n['active_callbacks']}")
    return 0


def _active(args, name: str) -> int:
    nodes = _run(args, lambda cur: nodes_store.list_nodes_sync(cur, _expiry(args)))
    return next((n["active_callbacks"] for n in nodes if n["node"] == name), 0)


def _drain(args) -> int:
    """Drain a node; with ``--wait``, return once it runs no callback."""
    name = _name(args.name)
    if args.deadline is not None and not 0 < args.deadline <= 7 * 86400:
        raise CommandError("--deadline: expected seconds, more than 0 and at most a week")
    row = _run(args, lambda cur: nodes_store.drain_sync(cur, name, args.deadline, cli_actor()))
    print(f"node {name}: draining" + (f", calls end by {row['deadline']}" if row["deadline"] else ""))
    if not args.wait:
        return 0
    started = time.monotonic()
    time.sleep(NOTICE_SECONDS)
    while True:
        active = _active(args, name)
        if active == 0:
            print(f"node {name}: no callback in progress; it can be stopped (SIGTERM)")
            return 0
        if args.wait_timeout is not None and time.monotonic() - started > args.wait_timeout:
            raise CommandError(f"node {name}: still {active} callback(s) in progress after "
                               f"{args.wait_timeout:g} s")
        time.sleep(WAIT_POLL)


def _undrain(args) -> int:
    """Undrain a node (exit 1 if it was not drained)."""
    name = _name(args.name)
    if not _run(args, lambda cur: nodes_store.undrain_sync(cur, name, cli_actor())):
        raise CommandError(f"node {name} is not drained")
    print(f"node {name}: taking callbacks again")
    return 0
