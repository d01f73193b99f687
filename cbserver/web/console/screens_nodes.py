"""The Nodes and Reports screens.

**Nodes**: every node name with its drain state (``cbserver.db.nodes_store``, the rows
``cbserver node drain`` and ``/v1/nodes/<node>/drain`` write) and its processes (the calls
``Console.nodes``: alive, callbacks running, last seen), with Drain (an optional deadline in
seconds, checked as the API checks it) and Undrain for administrators.

**Reports**: callbacks and revenue per day, ASR/ACD and post-dial delay per destination
prefix, outcomes by cause, over a date range (``parse_report_range``, the API's), each a
table with its CSV; ``static/reports.js`` draws a Chart.js chart from each table (a script
file of our own: the console's CSP allows no inline script).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation

from cbserver.billing.validation import NotFound, ValidationError
from cbserver.callback.consolefilters import parse_report_range
from cbserver.db import nodes_store
from cbserver.web import admin_calls, admin_nodes
from cbserver.web.console.forms import Refused, form_fields, url
from cbserver.web.console.screens import F, field_errors
from cbserver.web.console.screens_calls import query_args

REPORT_FIELDS = (F("from", "From", hint="2026-06-01 (UTC); empty: 30 days before To"),
                 F("to", "To (before)", hint="empty: now"), F("account", "Account"))
# Per report: its title, the column its chart labels by, and the columns it draws.
CHARTS = {
    "daily": ("Callbacks and revenue per day", "day", ("callbacks", "revenue")),
    "destinations": ("ASR, ACD and post-dial delay per destination prefix", "prefix",
                     ("asr_percent", "acd_seconds", "pdd_seconds")),
    "causes": ("Outcomes by cause", "cause", ("callbacks",)),
}


def merge_nodes(names: list[dict], processes: list[dict]) -> list[dict]:
    """Each node name (drained or with a process) with its drain state and its processes,
    live and the last dead one (``Console.nodes``), by name."""
    by_name: dict[str, dict] = {}
    for n in names:
        by_name[n["node"]] = dict(n, procs=[])
    for p in processes:
        node = by_name.setdefault(p["node"], {"node": p["node"], "draining": False,
                                              "deadline": None, "active_callbacks": 0,
                                              "procs": []})
        node["procs"].append(p)
    return [by_name[k] for k in sorted(by_name)]


def deadline_field(text: str) -> float | None:
    """The drain form's deadline (seconds; empty: none), checked as the API checks it."""
    text = text.strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValidationError("deadline", "must be a number of seconds") from None
    if not value.is_finite():
        raise ValidationError("deadline", "must be a number of seconds")
    return admin_nodes.deadline_seconds(value)


def add_routes(console) -> None:
    """Register the Nodes and Reports screens on the console."""
    route, page = console.app.route, console.page
    admin = console.admin

    def calls():
        return admin_calls.calls_console(admin)

    async def nodes_page(request, session, status=200, errors=None, values=None, failed=""):
        names = await nodes_store.list_nodes(admin.db, calls().node_expiry)
        procs = (await calls().nodes())["nodes"]
        return console.render(request, session, "nodes.html", status, active="nodes",
                              title="Nodes", nodes=merge_nodes(names, procs),
                              errors=errors or {}, values=values or {}, failed=failed,
                              expiry=calls().node_expiry)

    async def show_nodes(request, session):
        """Every node, its drain state and processes."""
        return await nodes_page(request, session)

    async def drain(request, session, node):
        """Drain a node (a new deadline if it is drained already)."""
        values = form_fields(request)
        try:
            name = admin_nodes.node_name(node)
            deadline = deadline_field(values.get("deadline", ""))
        except ValidationError as e:
            return await nodes_page(request, session, 400, field_errors(e), values, node)
        await nodes_store.drain(admin.db, name, deadline, console.audit_actor(request, session))
        console.log.info("console drain node {node} deadline={deadline} by={actor}", node=name,
                         deadline=deadline, actor=console.actor(session))
        return console._redirect(request, url("/nodes"))

    async def undrain(request, session, node):
        """End a node's drain."""
        try:
            name = admin_nodes.node_name(node)
        except ValidationError:
            raise NotFound("node", node) from None
        if not await nodes_store.undrain(admin.db, name, console.audit_actor(request, session)):
            raise NotFound("drained node", name)
        console.log.info("console undrain node {node} by={actor}", node=name,
                         actor=console.actor(session))
        return console._redirect(request, url("/nodes"))

    def report_range(args):
        now = dt.datetime.fromtimestamp(admin.clock.seconds(), dt.UTC)
        return parse_report_range({k: args[k].strip() for k in ("from", "to", "account")
                                   if args.get(k, "").strip()}, now)

    async def reports(request, session):
        """The three reports over the range, each a chart, its table and its CSV."""
        args = query_args(request)
        values = {k: args.get(k, "") for k in ("from", "to", "account")}
        out, errors, rng = [], {}, None
        try:
            rng = report_range(args)
        except ValidationError as e:
            errors = field_errors(e)
        else:
            # The CSV covers exactly the range shown (an empty To would move on with the clock).
            q = {"from": rng.start.isoformat(), "to": rng.end.isoformat(), "account": rng.account}
            for name, (title, label, drawn) in CHARTS.items():
                report = await calls().report(name, rng)
                out.append({"name": name, "title": title, "label": label, "drawn": drawn,
                            "report": report, "csv": url(f"/reports/{name}.csv", **q)})
        return console.render(request, session, "reports.html", 400 if errors else 200,
                              active="reports", title="Reports", fields=REPORT_FIELDS,
                              values=values, errors=errors, reports=out, rng=rng)

    async def report_csv(request, session, name):
        """One report as CSV."""
        if name not in CHARTS:
            raise NotFound("report", name)
        try:
            rng = report_range(query_args(request))
        except ValidationError as e:
            raise Refused(400, f"{e.field}: {e.reason}") from None
        report = await calls().report(name, rng)
        request.setHeader(b"content-type", b"text/csv; charset=utf-8")
        request.setHeader(b"content-disposition", f'attachment; filename="{name}.csv"'.encode())
        return calls().report_csv(report).encode("utf-8")

    route("/nodes", methods=["GET"], endpoint="nodes")(page()(show_nodes))
    route("/nodes/<node>/drain", methods=["POST"], endpoint="node_drain")(page()(drain))
    route("/nodes/<node>/undrain", methods=["POST"], endpoint="node_undrain")(page()(undrain))
    route("/reports", methods=["GET"], endpoint="reports")(page()(reports))
    route("/reports/<name>.csv", methods=["GET"], endpoint="report_csv")(page()(report_csv))
