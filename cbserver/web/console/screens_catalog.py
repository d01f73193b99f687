"""The service catalog's screens: Destinations, Tariffs with their rates, Products.

A tariff's page lists its rates (peak and off-peak prices, formula, effective date) with a
form to add one, the CSV export of every rate version and the CSV import (the rates CSV of
``cbserver rates import``, through the same ``Catalog.import_rates``: all rows or none, every
bad line listed with its reason). A product's page edits its rating list (node, tariff,
access code such as WEBCALLBACK or CALLBACK_FAIL, overdraft protection).
"""

from __future__ import annotations

import csv
import io
from urllib.parse import quote

from cbserver.billing.catalog import RowErrors
from cbserver.billing.currencies import ISO_4217
from cbserver.billing.imports import export_cell
from cbserver.billing.validation import ConflictError, ValidationError
from cbserver.commands.rates import COLUMNS, parse_csv
from cbserver.web.console.forms import form_fields, form_file, url
from cbserver.web.console.screens import F, Screen, field_errors, form_data, shown

CURRENCIES = tuple((c, c) for c in sorted(ISO_4217))
ACCESS_CODES = (("", "(none: every other call)"), ("WEBCALLBACK", "WEBCALLBACK"),
                ("CALLBACK_FAIL", "CALLBACK_FAIL"))
RATING_ROWS_FREE = 2  # empty rating-list rows offered below the product's entries

DESTINATION_FIELDS = [
    F("prefix", "Prefix", required=True, create_only=True,
      hint="digits the number starts with (1 to 20), or | for every number"),
    F("country", "Country"),
    F("description", "Description"),
]
TARIFF_FIELDS = [
    F("name", "Name", required=True),
    F("currency", "Currency", "select", required=True, options=CURRENCIES, create_only=True),
    F("applied_to", "Applied to", "select", options=(("customer", "Customer"),
                                                      ("vendor", "Vendor"))),
    F("offpeak_timezone", "Off-peak time zone", hint="e.g. America/Sao_Paulo"),
    F("offpeak_periods", "Off-peak periods", "lines",
      hint="one a line, e.g. mon-fri 18:00-23:59"),
    F("split_at_boundary", "Split a call at a peak/off-peak boundary", "checkbox"),
]
RATE_FIELDS = [
    F("prefix", "Prefix", required=True),
    F("rating_mode", "Rating mode", "select", options=(("flat", "Flat rate"),
                                                        ("peak_offpeak", "Peak / off-peak"))),
    F("first_interval", "First interval (s)", "number", required=True),
    F("next_interval", "Next interval (s)", "number", required=True),
    F("first_price", "First price", required=True),
    F("next_price", "Next price", required=True),
    F("offpeak_first_interval", "Off-peak first interval (s)", "number"),
    F("offpeak_next_interval", "Off-peak next interval (s)", "number"),
    F("offpeak_first_price", "Off-peak first price"),
    F("offpeak_next_price", "Off-peak next price"),
    F("formula", "Formula", hint="optional, see docs/rating.md"),
    F("effective_from", "Effective from", hint="ISO 8601 with its zone, e.g. "
                                                "2027-01-01T00:00:00+00:00 (empty: now)"),
]
PRODUCT_FIELDS = [
    F("name", "Name", required=True),
    F("end_user_name", "Name shown to end users"),
    F("currency", "Currency", "select", required=True, options=CURRENCIES, create_only=True),
]


def rating_rows(values: dict | None, row: dict | None) -> list[dict]:
    """The rating-list rows a product form shows: as typed, else as stored, plus empty ones."""
    rows = []
    if values and any(k.startswith("rl-") for k in values):
        i = 0
        while f"rl-{i}-node" in values:
            rows.append({"node": values.get(f"rl-{i}-node", ""),
                         "tariff": values.get(f"rl-{i}-tariff", ""),
                         "access_code": values.get(f"rl-{i}-access_code", ""),
                         "overdraft_protection": values.get(f"rl-{i}-overdraft") == "true"})
            i += 1
        return rows
    for e in (row or {}).get("rating_list", []):
        rows.append({"node": e["node"], "tariff": str(e["tariff_id"]),
                     "access_code": e["access_code"],
                     "overdraft_protection": e["overdraft_protection"]})
    return rows + [{"node": "", "tariff": "", "access_code": "", "overdraft_protection": False}
                   for _ in range(RATING_ROWS_FREE)]


def rating_list_data(values: dict) -> dict:
    """The ``rating_list`` of a product form (rows without a node are left out)."""
    entries = []
    for r in rating_rows(values, None):
        if not r["node"].strip():
            continue
        tariff = r["tariff"]
        entries.append({"node": r["node"].strip(), "service": "voice",
                        "tariff": int(tariff) if tariff.isdigit() else tariff,
                        "access_code": r["access_code"],
                        "overdraft_protection": r["overdraft_protection"]})
    return {"rating_list": entries, "services": ["voice"]}


def _rate_price(r: dict, first: str, nxt: str) -> str:
    """``0.10000 / 60 s, then 0.05000 / 60 s``-like text of a rate's prices."""
    if r.get(first + "_price") is None:
        return ""
    return (f"{shown(r[first + '_price'])}/{r[first + '_interval']}s, "
            f"{shown(r[nxt + '_price'])}/{r[nxt + '_interval']}s")


def add_routes(console) -> None:
    """Register the catalog screens on the console."""
    destinations = Screen(
        "destinations", "Destinations", "destination", key=lambda r: r["prefix"],
        columns=[("Prefix", lambda r: r["prefix"]), ("Country", lambda r: r["country"]),
                 ("Description", lambda r: r["description"])],
        fields=DESTINATION_FIELDS, service="catalog", ops=_ops("destination"),
        search="prefix", search_label="Prefix")

    async def tariff_extra(console, request, session, row, values):
        """A tariff's rates (a page of them) and the empty rate form."""
        if row is None:
            return {}
        args = {k.decode(): v[-1].decode("utf-8", "replace") for k, v in request.args.items()}
        try:
            offset = max(0, int(args.get("offset", "0") or 0))
        except ValueError:
            offset = 0
        cat = console.service("catalog", request, session)
        rates = await cat.list_rates({"tariff": row["id"]}, 50, offset)
        return {"template": "tariff.html", "rates": rates, "rate_fields": RATE_FIELDS,
                "rate_values": {"rating_mode": "flat"}, "rate_errors": {}, "problems": [],
                "price": _rate_price}

    tariffs = Screen(
        "tariffs", "Tariffs", "tariff", key=lambda r: str(r["id"]),
        columns=[("Name", lambda r: r["name"]), ("Currency", lambda r: r["currency"]),
                 ("Applied to", lambda r: r["applied_to"])],
        fields=TARIFF_FIELDS, service="catalog", ops=_ops("tariff"), search="name",
        search_label="Name", extra_fn=tariff_extra,
        defaults={"currency": "USD", "applied_to": "customer"})

    async def rate_extra(console, request, session, row, values):
        """A rate's page links back to its tariff."""
        return {"back": url(f"/tariffs/{row['tariff_id']}")} if row else {}

    rates = Screen(
        "rates", "Rates", "rate", key=lambda r: str(r["id"]),
        columns=[("Id", lambda r: str(r["id"])), ("Tariff", lambda r: str(r["tariff_id"])),
                 ("Prefix", lambda r: r["prefix"]),
                 ("Peak", lambda r: _rate_price(r, "first", "next")),
                 ("Off-peak", lambda r: _rate_price(r, "offpeak_first", "offpeak_next")),
                 ("Effective from", lambda r: shown(r["effective_from"]))],
        fields=RATE_FIELDS, service="catalog",
        ops={k: v for k, v in _ops("rate").items() if k != "create"}, key_arg=_int,
        search="prefix", search_label="Prefix",
        filters=("tariff",), extra_fn=rate_extra)

    async def product_extra(console, request, session, row, values):
        """The rating-list editor: the product's entries and the tariffs to choose from."""
        cat = console.service("catalog", request, session)
        tariffs_page = await cat.list_tariffs({}, 500, 0)
        options = [("", "(choose a tariff)")] + [
            (str(t["id"]), f"{t['name']} ({t['currency']})") for t in tariffs_page["items"]]
        return {"template": "product.html", "rating_rows": rating_rows(values, row),
                "tariff_options": options, "access_codes": ACCESS_CODES}

    products = Screen(
        "products", "Products", "product", key=lambda r: str(r["id"]),
        columns=[("Name", lambda r: r["name"]), ("Currency", lambda r: r["currency"]),
                 ("Rating list", lambda r: ", ".join(
                     f"{e['node']}/{e['access_code'] or '-'}: {e['tariff']}"
                     for e in r.get("rating_list", [])))],
        fields=PRODUCT_FIELDS, service="catalog", ops=_ops("product"), search="name",
        search_label="Name",
        extra_fn=product_extra, extra_data=rating_list_data, defaults={"currency": "USD"})

    for screen in (destinations, tariffs, rates, products):
        screen.register(console)
    _tariff_rate_routes(console, tariffs)


def _ops(kind: str, plural: str = "") -> dict[str, str]:
    """The service's method names for ``kind`` (``list_tariffs``, ``get_tariff``...)."""
    return {"list": f"list_{plural or kind + 's'}", "get": f"get_{kind}", "create": f"create_{kind}",
            "update": f"update_{kind}", "delete": f"delete_{kind}"}


def _int(key: str) -> int:
    """A numeric id from the URL (a ``ValidationError`` otherwise, shown as a page)."""
    if not key.isdigit():
        raise ValidationError("id", "must be a number")
    return int(key)


def _tariff_rate_routes(console, tariffs: Screen) -> None:
    """Adding a rate to a tariff, and its CSV export and import."""
    route, page = console.app.route, console.page

    async def again(request, session, key, status, **extra):
        """The tariff's page again with the rate form's or the import's problems."""
        row = await console.service("catalog", request, session).get_tariff(key)
        page_ = await tariffs.extra_fn(console, request, session, row, None)
        page_.update(extra)
        template = page_.pop("template")
        values = {f.name: shown(row.get(f.name)) for f in tariffs.fields}
        return console.render(request, session, template, status, active="tariffs",
                              screen=tariffs, row=row,
                              fields=list(tariffs.fields),
                              values=values, errors={}, extra=page_,
                              title=f"Tariff {row['name']}")

    async def add_rate(request, session, key):
        """Add a rate from the tariff page's form."""
        values = form_fields(request)
        try:
            await console.service("catalog", request, session).create_rate(
                key, form_data(RATE_FIELDS, values, partial=False))
        except (ValidationError, ConflictError) as e:
            return await again(request, session, key, 409 if isinstance(e, ConflictError) else 400,
                               rate_values=values, rate_errors=field_errors(e))
        console.log.info("console create rate tariff={tariff} by={actor}", tariff=key,
                         actor=console.actor(session))
        return console._redirect(request, url(f"/tariffs/{quote(key, safe='')}") + "#rates")

    async def export_csv(request, session, key):
        """Every rate version of the tariff as CSV (the columns ``rates import`` reads)."""
        tariff, rows = await console.service("catalog", request, session).export_rates(key)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in rows:
            writer.writerow([export_cell(r[c]) for c in COLUMNS])
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        name = "".join(c if c.isalnum() or c in "-_" else "_" for c in tariff["name"])
        request.setHeader(b"content-disposition",
                          f'attachment; filename="rates-{name}.csv"'.encode("ascii", "replace"))
        return out.getvalue().encode("utf-8")

    async def import_csv(request, session, key):
        """Import a rates CSV: all rows or none, the problems listed per line."""
        data = form_file(request)
        if not data:
            return await again(request, session, key, 400,
                               problems=[(0, "file", "choose a CSV file to import")])
        rows, problems = parse_csv(data)
        try:
            if problems and problems[0][1] in ("encoding", "header"):
                raise RowErrors(problems)
            counts = await console.service("catalog", request, session).import_rates(
                key, rows, problems)
        except RowErrors as e:
            return await again(request, session, key, 400, problems=e.problems)
        except (ValidationError, ConflictError) as e:
            return await again(request, session, key, 400,
                               problems=[(0, e.field or "", e.reason)])
        console.log.info("console import rates tariff={tariff} rows={rows} by={actor}",
                         tariff=key, rows=len(rows), actor=console.actor(session))
        return await again(request, session, key, 200, imported=counts, imported_rows=len(rows))

    route("/tariffs/<key>/rates", methods=["POST"], endpoint="tariff_add_rate")(page()(add_rate))
    route("/tariffs/<key>/rates.csv", methods=["GET"], endpoint="tariff_export")(
        page()(export_csv))
    route("/tariffs/<key>/import", methods=["POST"], endpoint="tariff_import")(
        page()(import_csv))
