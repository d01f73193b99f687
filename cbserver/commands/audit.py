"""``cbserver audit list``: read the audit log (who changed what, when, from where).

One line a change, newest first: time (UTC), who, source, client, action, kind/key; with
``--json`` the rows as JSON with their before and after. Filters as the admin API's
``GET /v1/audit``: ``--since``/``--until`` (ISO 8601), ``--who``, ``--source``, ``--kind``,
``--key``, ``--action``; ``--limit``/``--offset`` page.
"""

from __future__ import annotations

from cbserver.billing.audit import AUDIT_FILTERS, AuditLog, utc
from cbserver.commands.catalog import print_json, run_service
from cbserver.commands.db import add_dsn_arguments
from cbserver.db.stores import PostgresCatalogStore


def register(sub) -> None:
    """Add ``audit list``."""
    p = sub.add_parser("audit", help="read the audit log of catalog changes")
    s = p.add_subparsers(dest="action", metavar="ACTION")
    s.required = True
    a = s.add_parser("list", help="list audit rows, newest first")
    for name in AUDIT_FILTERS:
        a.add_argument(f"--{name}", help=f"only rows with this {name}"
                       if name not in ("since", "until") else
                       f"rows {'at or after' if name == 'since' else 'before'} this ISO 8601 time")
    a.add_argument("--limit", default=50)
    a.add_argument("--offset", default=0)
    a.add_argument("--json", action="store_true", help="print the rows as JSON, before/after included")
    add_dsn_arguments(a)
    a.set_defaults(func=_list)


def _list(args) -> int:
    """Print one page of the audit log."""
    filters = {name: getattr(args, name) for name in AUDIT_FILTERS}

    async def go(services):
        return await AuditLog(PostgresCatalogStore(services.db)).list(filters, args.limit, args.offset)

    page = run_service(args, go)
    if args.json:
        print_json(page)
        return 0
    for row in page["items"]:
        client = f" ({row['client']})" if row["client"] else ""
        print(f"{utc(row['at'])}  {row['who']}@{row['source']}{client}  {row['action']} "
              f"{row['kind']}/{row['key']}")
    print(f"{len(page['items'])} of {page['total']} row(s)")
    return 0
