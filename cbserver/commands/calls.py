"""``cbserver xdrs`` and ``cbserver callbacks``: the admin API's calls, from the shell.

``cbserver xdrs [filters] [--csv]`` lists xDRs with the filters of ``GET /v1/xdrs``
(``--csv``: every row selected, streamed from a server-side cursor, the same CSV as the
API's); ``cbserver callbacks list [--past]``, ``show ID``, ``hangup ID`` (the request the
node running the callback picks up, as ``DELETE /v1/callbacks/{id}``), and
``report daily|destinations|causes``. The same ``Console`` shapes the answers as for the API.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import sys

from twisted.internet import defer

from cbserver.billing.audit import cli_actor
from cbserver.billing.reports import format_table
from cbserver.billing.validation import CatalogError, ValidationError, jsonable
from cbserver.callback.console import REPORT_NAMES, Console
from cbserver.callback.consolefilters import parse_callback_query, parse_report_range, parse_xdr_filter
from cbserver.cli import CommandError
from cbserver.commands.db import add_dsn_arguments, dsn_from_args
from cbserver.db.calls_store import SyncCallsStore
from cbserver.db.sync import sync_cursor
from cbserver.errors import DatabaseError, DatabaseUnavailable

_TABLE = ("id", "disconnect_time", "session_id", "leg", "account_id", "cld", "duration", "amount",
          "currency", "cause", "node")


def register(sub) -> None:
    """Add the ``xdrs`` and ``callbacks`` sub-commands."""
    p = sub.add_parser("xdrs", help="list xDRs by filter (--csv: every row, as GET /v1/xdrs?format=csv)")
    for name, text in (("from", "disconnect time from (ISO date or date-time, UTC)"),
                       ("to", "disconnect time before"), ("account", "account ID"),
                       ("customer", "customer ID"), ("prefix", "destination starts with these digits"),
                       ("cause", "the callback's cause code"), ("node", "node name"), ("leg", "A or B"),
                       ("limit", "rows in the table (default 50, at most 1000)"),
                       ("after", "the cursor printed after the previous table")):
        p.add_argument(f"--{name}", dest=f"f_{name}", metavar=name.upper(), help=text)
    p.add_argument("--csv", action="store_true", help="every row selected, as CSV, to stdout")
    add_dsn_arguments(p)
    p.set_defaults(func=run_xdrs)

    c = sub.add_parser("callbacks", help="live and past callbacks; hang one up; call reports")
    csub = c.add_subparsers(dest="action", metavar="ACTION")
    csub.required = True
    lp = csub.add_parser("list", help="callbacks in progress on every node (--past: ended ones)")
    lp.add_argument("--past", action="store_true")
    lp.add_argument("--limit", default="50")
    lp.add_argument("--account")
    lp.add_argument("--node")
    sp = csub.add_parser("show", help="one callback as JSON, with its xDRs")
    sp.add_argument("id")
    hp = csub.add_parser("hangup", help="ask the node running a callback to hang it up")
    hp.add_argument("id")
    rp = csub.add_parser("report", help=f"a report: {', '.join(REPORT_NAMES)}")
    rp.add_argument("name", choices=REPORT_NAMES)
    rp.add_argument("--from", dest="start")
    rp.add_argument("--to", dest="end")
    rp.add_argument("--account")
    rp.add_argument("--csv", action="store_true")
    for parser in (lp, sp, hp, rp):
        add_dsn_arguments(parser)
    c.set_defaults(func=run_callbacks)


def _run(args, work):
    """``work(console, cursor)`` on a blocking connection; errors as one line."""
    try:
        with sync_cursor(dsn_from_args(args), timeout=10) as cur:
            d = defer.ensureDeferred(work(Console(SyncCallsStore(cur)), cur))
            failure = []
            d.addErrback(failure.append)
            if failure:
                failure[0].raiseException()
            return d.result
    except ValidationError as e:
        raise CommandError(f"--{e.field}: {e.reason}") from None
    except CatalogError as e:
        raise CommandError(str(e)) from None
    except DatabaseUnavailable as e:
        raise CommandError(f"cannot connect: {str(e).splitlines()[0]}") from None
    except DatabaseError as e:
        raise CommandError(f"database error: {str(e).splitlines()[0]} "
                           "(is the schema current? `cbserver db upgrade`)") from None


def run_xdrs(args) -> int:
    """Print a page of xDRs as a table, or every row selected as CSV."""
    filters = {k[2:]: v for k, v in vars(args).items() if k.startswith("f_") and v is not None}
    try:
        f = parse_xdr_filter(filters)  # checked before connecting
    except ValidationError as e:
        raise CommandError(f"--{e.field}: {e.reason}") from None

    def write(data: bytes) -> None:
        sys.stdout.buffer.write(data)

    async def work(console, _cur):
        if args.csv:
            return await console.export_xdrs(f, write)
        page = await console.xdrs(f)
        rows = [[r[c] for c in _TABLE] for r in page["xdrs"]]
        sys.stdout.write(format_table(_TABLE, rows))
        if page["next"]:
            sys.stdout.write(f"more: --after {page['next']}\n")
        return len(rows)

    _run(args, work)
    sys.stdout.flush()
    return 0


def run_callbacks(args) -> int:
    """list, show, hangup, report."""

    async def work(console, _cur):
        if args.action == "list":
            q = parse_callback_query({k: v for k, v in (("state", "past" if args.past else "live"),
                                                         ("limit", args.limit), ("account", args.account),
                                                         ("node", args.node)) if v})
            page = await console.callbacks(q)
            cols = ("id", "created_at", "status", "account_id", "phone", "destination", "node",
                    "node_alive", "cost", "cause")
            rows = [[c["id"], c["created_at"], c["status"], c["account_id"], c["phone"], c["destination"],
                     c["node"], c["node_alive"],
                     (c["cost_so_far"] or c["charges"] or {}).get("amount") or
                     (c["charges"] or {}).get("total"), (c["cause"] or {}).get("code")]
                    for c in page["callbacks"]]
            sys.stdout.write(format_table(cols, rows))
        elif args.action == "show":
            print(json.dumps(jsonable(await console.callback(args.id)), indent=2, sort_keys=True))
        elif args.action == "hangup":
            cb = await console.hangup(args.id, f"cli {getpass.getuser()}", cli_actor())
            print(f"hang-up requested for callback {cb['id']} on node {cb['node']}"
                  + ("" if cb["node_alive"] else " (that node is not alive: crash recovery will end it)"))
        else:
            params = {k: v for k, v in (("from", args.start), ("to", args.end),
                                        ("account", args.account)) if v}
            report = await console.report(args.name, parse_report_range(params, dt.datetime.now(dt.UTC)))
            if args.csv:
                sys.stdout.write(Console.report_csv(report))
            else:
                cols = report["columns"]
                sys.stdout.write(format_table(cols, [[r[c] for c in cols] for r in report["rows"]]))

    _run(args, work)
    return 0

