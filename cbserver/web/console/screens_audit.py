"""The Audit log screen: every change, who made it, from where, before and after.

Reads ``AuditLog`` (``billing/audit.py``), the same reader as ``GET /v1/audit`` and
``cbserver audit list``, newest first, 50 a page, with the same filters (time range, who,
source, kind, key, action). Each entry's before and after are shown as a per-field diff: for
a change only the fields that changed, for a create what was set, for a delete what was
there. Read-only operators see it all; nothing here changes anything (the table refuses
UPDATE and DELETE anyway).
"""

from __future__ import annotations

import datetime as dt
import json
import re

from cbserver.billing.audit import AuditLog, utc
from cbserver.billing.validation import ValidationError
from cbserver.db.stores import PostgresCatalogStore
from cbserver.web.console.screens import F, field_errors

SOURCES = (("", "(any)"), ("ui", "ui (console)"), ("api", "api"), ("cli", "cli"),
           ("internal", "internal"))
ACTIONS = ("create", "update", "delete", "activate", "payment", "refund", "generate",
           "import", "import_rates")
FILTER_FIELDS = [
    F("since", "From", hint="a time, e.g. 2027-01-31 08:00 (UTC unless a zone is given)"),
    F("until", "Until (exclusive)"),
    F("who", "Who", hint="an operator, an OS user, api-token"),
    F("source", "Source", hint="ui, api, cli, internal or provision:<file>"),
    F("kind", "Kind", hint="tariff, rate, product, account, application..."),
    F("key", "Key", hint="the object's id, prefix, account ID or name"),
    F("action", "Action", "select", options=(("", "(any)"), *((a, a) for a in ACTIONS))),
]
_NO_ZONE = re.compile(r"\d{4}-\d\d-\d\d([ T]\d\d:\d\d(:\d\d(\.\d+)?)?)?")


def _time(name: str, text: str) -> str:
    """A time filter as ``AuditLog`` takes it: without a zone it is UTC (the screen shows UTC).

    ``datetime-local`` inputs and people type times without a zone; the API insists on one.
    """
    text = text.strip()
    if _NO_ZONE.fullmatch(text):
        try:
            when = dt.datetime.fromisoformat(text.replace(" ", "T"))
        except ValueError:
            raise ValidationError(name, "is not a date and time (e.g. 2027-01-31 08:00)") from None
        return when.replace(tzinfo=dt.UTC).isoformat()
    return text


def _cell(value) -> str:
    """A value of a before/after as one line of text (lists and objects as compact JSON)."""
    if value is None:
        return "(none)"
    if isinstance(value, str):
        return value if value != "" else '""'
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def diff(before, after) -> list[tuple[str, str, str]]:
    """``[(field, before, after)]`` of an entry: the fields that differ, in a stable order.

    A create shows each field it set (before ""), a delete each field there was (after "").
    Values that are not objects (a payment's amount) are one row named "value".
    """
    if not isinstance(before, dict) and not isinstance(after, dict):
        if before == after:
            return []
        return [("value", "" if before is None else _cell(before),
                 "" if after is None else _cell(after))]
    b = before if isinstance(before, dict) else {}
    a = after if isinstance(after, dict) else {}
    rows = []
    for name in list(b) + [k for k in a if k not in b]:
        if name in ("updated_at",):
            continue  # changes with every update: noise beside the real change
        old, new = b.get(name), a.get(name)
        if before is not None and after is not None and old == new:
            continue
        rows.append((name, "" if before is None else _cell(old),
                     "" if after is None else _cell(new)))
    return rows


def add_routes(console) -> None:
    """Register the Audit log screen on the console."""

    async def audit(request, session):
        """A page of audit entries, newest first, filtered."""
        args = {k.decode(): v[-1].decode("utf-8", "replace") for k, v in request.args.items()}
        values = {f.name: args.get(f.name, "").strip() for f in FILTER_FIELDS}
        try:
            offset = max(0, int(args.get("offset", "0") or 0))
        except ValueError:
            offset = 0
        page, errors, status = {"items": [], "total": 0, "limit": 50, "offset": 0}, {}, 200
        try:
            filters = {k: v for k, v in values.items() if v}
            for name in ("since", "until"):
                if name in filters:
                    filters[name] = _time(name, filters[name])
            page = await AuditLog(PostgresCatalogStore(console.admin.db)).list(
                filters, 50, offset)
        except ValidationError as e:
            errors, status = field_errors(e), 400
        entries = [{**row, "when": utc(row["at"]), "diff": diff(row["before"], row["after"])}
                   for row in page["items"]]
        return console.render(request, session, "audit.html", status, active="audit",
                              title="Audit log", fields=FILTER_FIELDS, values=values,
                              errors=errors, page=page, entries=entries,
                              query={k: v for k, v in values.items() if v})

    console.app.route("/audit", methods=["GET"], endpoint="audit")(console.page()(audit))
