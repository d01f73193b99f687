"""The calls screens: xDRs (filter, keyset paging, streamed CSV), live and past callbacks
(hang up), a callback's page with its xDRs, and an account's latest xDRs.

Every screen asks the admin app's calls ``Console`` (``cbserver.callback.console``, through
``admin_calls.calls_console``) and parses its query with the admin API's own parsers
(``cbserver.callback.consolefilters``), so a filter means the same in the API, the CLI and
here; a bad value comes back as the form with the error beside its field (400), never a 500.
The CSV is the API's export (``admin_calls.stream_xdrs_csv``): streamed from a server-side
cursor, paced by the client's socket, at most ``MAX_EXPORTS`` at once.

Keyset paging only goes forward (``after``); "Previous" works by carrying the cursors of the
pages already seen (``trail``, the last ``MAX_TRAIL`` of them) in the link.
"""

from __future__ import annotations

from urllib.parse import urlencode

from cbserver.billing.validation import ConflictError, NotFound, ValidationError
from cbserver.callback.consolefilters import parse_callback_query, parse_xdr_filter
from cbserver.web import admin_calls
from cbserver.web.console.forms import Refused, url
from cbserver.web.console.screens import F, field_errors

PAGE = 50
MAX_TRAIL = 20  # pages "Previous" can go back through (then: the first page)
ACCOUNT_XDRS = 10
# The live list polls every 2 s; every poll is a use of the session, so an open page would
# keep it alive for ever: after MAX_POLLS (10 minutes) the polling stops and the idle
# timeout applies again (the Refresh link starts it anew).
MAX_POLLS = 300
XDR_FILTER = (
    F("from", "From", hint="2026-06-01 or 2026-06-01T10:00:00Z (UTC)"),
    F("to", "To (before)", hint="same form; empty: up to now"),
    F("account", "Account"),
    F("customer", "Customer"),
    F("prefix", "Destination starts with", hint="digits"),
    F("cause", "Cause", hint="e.g. legb_busy, operator_hangup"),
    F("node", "Node"),
    F("leg", "Leg", "select", options=(("", "Any"), ("A", "A (the caller)"),
                                       ("B", "B (the destination)"))),
)
FILTER_KEYS = tuple(f.name for f in XDR_FILTER)


def query_args(request) -> dict[str, str]:
    """The query string's arguments (last value of each) as text."""
    return {k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace")
            for k, v in (request.args or {}).items() if v}


def filter_values(args: dict) -> dict[str, str]:
    """The filter fields of ``args`` that are set (stripped)."""
    return {k: args[k].strip() for k in FILTER_KEYS if args.get(k, "").strip()}


def filter_query(values: dict) -> str:
    """The query string of a filter (the CSV link and paging carry it)."""
    return urlencode({k: values[k] for k in FILTER_KEYS if values.get(k)})


def _polls(text: str) -> int:
    """How many times the live list has polled (0 for anything but a small number)."""
    return int(text) if text.isdigit() and len(text) < 6 else 0


def pager_links(base: str, after: str, trail: list[str], next_cursor: str | None) -> dict:
    """The query strings of the xDR pager: ``next`` (the page after ``next_cursor``),
    ``previous`` and ``first`` (when not on the first page). ``trail`` holds the ``after`` of
    each page already passed, oldest first, ``-`` for the first page; only the last
    ``MAX_TRAIL`` are kept (further back, Previous ends at the first page)."""
    trail = [t for t in trail if t][-MAX_TRAIL:]

    def query(**paging) -> str:
        return "?" + "&".join(x for x in (base, urlencode({k: v for k, v in paging.items() if v}))
                              if x)

    nav = {}
    if next_cursor:
        nav["next"] = query(after=next_cursor, trail=".".join([*trail, after or "-"]))
    if after:
        back = trail[-1] if trail else "-"
        nav["previous"] = query(after="" if back == "-" else back, trail=".".join(trail[:-1]))
        nav["first"] = query()
    return nav


def add_routes(console) -> None:
    """Register the calls screens on the console."""
    route, page = console.app.route, console.page

    def calls():
        return admin_calls.calls_console(console.admin)

    async def xdrs(request, session):
        """The filter form and one page of xDRs."""
        args = query_args(request)
        values = filter_values(args)
        trail = args.get("trail", "").split(".")
        after = args.get("after", "")
        errors, result = {}, {"xdrs": [], "next": None}
        try:
            f = parse_xdr_filter(dict(values, limit=str(PAGE), after=after))
            result = await calls().xdrs(f)
        except ValidationError as e:
            errors = field_errors(e)
        base = filter_query(values)
        nav = pager_links(base, after, trail, result["next"])
        return console.render(request, session, "xdrs.html", 400 if errors else 200,
                              active="xdrs", title="xDRs", fields=XDR_FILTER, values=values,
                              errors=errors, xdrs=result["xdrs"], nav=nav,
                              csv_url=url("/xdrs.csv") + "?" + base)

    async def xdrs_csv(request, session):
        """Every xDR the filter selects, as the API's streamed CSV."""
        values = filter_values(query_args(request))
        try:
            f = parse_xdr_filter(values)
        except ValidationError as e:
            raise Refused(400, f"{e.field}: {e.reason}") from None
        try:
            return await admin_calls.stream_xdrs_csv(console.admin, request, f)
        except admin_calls.ExportsBusy:
            request.setHeader(b"retry-after", b"10")
            raise Refused(503, "Other exports are running; try again in a moment.") from None
        finally:
            console.log.info("console export xdrs {query} by={actor}",
                             query=filter_query(values), actor=console.actor(session))

    def callbacks_page(state: str):
        async def show(request, session):
            """Live (polled by htmx up to ``MAX_POLLS`` times, a Refresh link without
            JavaScript) or past callbacks."""
            args = query_args(request)
            errors, result = {}, {"callbacks": [], "next": None}
            try:
                q = parse_callback_query({"state": state, **{
                    k: args[k] for k in ("after", "account", "node") if args.get(k)}})
                result = await calls().callbacks(q)
            except ValidationError as e:
                errors = field_errors(e)
            fragment = request.getHeader(b"hx-request") == b"true"
            template = "callbacks_fragment.html" if fragment else "callbacks.html"
            return console.render(
                request, session, template, 400 if errors else 200, active=state, state=state,
                title="Live callbacks" if state == "live" else "Past callbacks", errors=errors,
                callbacks=result["callbacks"], next=result["next"],
                account=args.get("account", ""), node=args.get("node", ""),
                hungup=args.get("hungup", ""), polls=_polls(args.get("polls", "")),
                max_polls=MAX_POLLS)

        return show

    async def one_callback(request, session, cb_id):
        """A callback: its legs, cause, cost or charges, and its xDRs."""
        try:
            cb = await calls().callback(admin_calls.check_callback_id(cb_id))
        except ValidationError:
            raise NotFound("callback", cb_id) from None
        return console.render(request, session, "callback.html", active="live" if cb["live"]
                              else "past", title=f"Callback {cb['id']}", cb=cb)

    async def hangup(request, session, cb_id):
        """Ask the node running the callback to hang it up, as this operator."""
        try:
            await calls().hangup(admin_calls.check_callback_id(cb_id), console.actor(session),
                                 console.audit_actor(request, session))
        except ValidationError:
            raise NotFound("callback", cb_id) from None
        except ConflictError:
            raise Refused(409, f"Callback {cb_id} has ended already.") from None
        console.log.info("console hangup callback {id} by={actor}", id=cb_id,
                         actor=console.actor(session))
        return console._redirect(request, url("/callbacks/live", hungup=cb_id))

    route("/xdrs", methods=["GET"], endpoint="xdrs")(page()(xdrs))
    route("/xdrs.csv", methods=["GET"], endpoint="xdrs_csv")(page()(xdrs_csv))
    route("/callbacks/live", methods=["GET"], endpoint="callbacks_live")(
        page()(callbacks_page("live")))
    route("/callbacks/past", methods=["GET"], endpoint="callbacks_past")(
        page()(callbacks_page("past")))
    route("/callbacks/<cb_id>", methods=["GET"], endpoint="callback")(page()(one_callback))
    route("/callbacks/<cb_id>/hangup", methods=["POST"], endpoint="callback_hangup")(
        page()(hangup))


async def account_xdrs(console, account_id: str) -> dict:
    """An account's latest xDRs for its page, and the link to all of them in the xDR screen."""
    try:
        f = parse_xdr_filter({"account": account_id, "limit": str(ACCOUNT_XDRS)})
    except ValidationError:  # an ID the xDR filter cannot take has no xDRs
        return {"xdrs": [], "more": False, "all_url": url("/xdrs")}
    page = await admin_calls.calls_console(console.admin).xdrs(f)
    return {"xdrs": page["xdrs"], "more": page["next"] is not None,
            "all_url": url("/xdrs", account=account_id)}
