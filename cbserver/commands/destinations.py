"""``cbserver destinations import``: the destination register from a CSV file.

The CSV has a header row naming its columns: ``prefix`` (required), ``country`` and
``description``. A prefix not yet registered is added; a registered one gets the columns the
file gives replaced (the others keep their value). All rows or none: every bad row is
reported with its line number, field and reason, and then nothing is written. The file goes
to the database with COPY (see ``cbserver.billing.imports``), tens of thousands of rows a
second, so a carrier's deck can be registered before its rates are imported.
"""

from __future__ import annotations

from cbserver.commands.catalog import run_service
from cbserver.commands.db import add_dsn_arguments
from cbserver.commands.rates import print_counts, read_file


def register(sub) -> None:
    """Add ``destinations import``."""
    p = sub.add_parser("destinations", help="import the destination register from CSV")
    s = p.add_subparsers(dest="action", metavar="ACTION")
    s.required = True
    imp = s.add_parser("import", help="add or change destinations from a CSV file (all or nothing)",
                       description="Columns: prefix (required), country, description.")
    imp.add_argument("file", help="CSV file (UTF-8) with a header row")
    add_dsn_arguments(imp)
    imp.set_defaults(func=_import)


def _import(args) -> int:
    """Read, check and import the file (``Catalog.import_destinations_csv``)."""
    data = read_file(args.file)

    async def go(services):
        return await services.catalog.import_destinations_csv(data)

    print_counts(run_service(args, go), "destination(s)")
    return 0
