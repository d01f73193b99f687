"""The operator console's calls (issue 15): xDRs, live and past callbacks, nodes, reports.

``Console`` is what the admin API, the CLI and the web UI ask; it turns the store's rows
(``ICallsStore``, implemented in ``cbserver.db.calls_store``) into the shapes they show:
JSON-ready dicts, and CSV whose cells are exactly the JSON values written as text (``null``
empty, ``true``/``false``, numbers and amounts as the JSON shows them), RFC 4180 lines.

A live callback's cost so far is priced here from its crash-recovery row (migration 039),
which holds, per answered leg, its answer time and the rate selected at connect: each
answered leg is charged from its answer up to the database's now as its xDR would be
(``cbserver.callback.recovery.pricer_from_dict``). A callback with no leg answered costs 0.

Hanging up (``hangup``) stores a request in PostgreSQL (``callback_hangups``); the node
running the callback picks it up (``cbserver.callback.hangups``) and ends it with the cause
``operator_hangup``: both legs ended, both xDRs written as for any other end.
"""

from __future__ import annotations

import csv
import io
import json
import math
from decimal import Decimal

from twisted.internet import defer
from zope.interface import Interface, classImplements

from cbserver.billing.audit import INTERNAL
from cbserver.billing.validation import ConflictError, NotFound
from cbserver.callback.causes import describe
from cbserver.callback.consolefilters import encode_cursor
from cbserver.callback.recovery import pricer_from_dict
from cbserver.config import NODE_STALE_AFTER
from cbserver.db.calls_store import CALLBACK_COLUMNS, NODE_COLUMNS, REPORTS, XDR_COLUMNS, PostgresCallsStore
from cbserver.logs import Logger

log = Logger()

CAUSE = "operator_hangup"
REPORT_NAMES = tuple(REPORTS)
#: Seconds without a heartbeat after which a node counts as lost (the crash-recovery rule;
#: the server passes its ``[recovery] stale_after``).
NODE_EXPIRY = NODE_STALE_AFTER


class ICallsStore(Interface):
    """Where calls are read (PostgreSQL: ``cbserver.db.calls_store``)."""

    def xdr_page(f):
        """Up to ``f.limit + 1`` xDR rows (``XDR_COLUMNS``) of filter ``f``, newest first."""

    def stream_xdrs(f, on_batch, batch=2000):
        """Every xDR row of ``f`` to ``on_batch(rows)``, batch by batch, waiting for the
        Deferred it may return; fire with the row count."""

    def callbacks(state, limit, after, account, node, expiry):
        """``limit + 1`` callback rows (``CALLBACK_COLUMNS``), live or past, newest first."""

    def callback(callback_id, expiry):
        """(callback row, its xDR rows) or None."""

    def request_hangup(callback_id, requested_by, actor):
        """Store a hang-up request and its audit row (``actor``): fire with "unknown",
        "ended" or "requested"."""

    def pending_hangups(instance_id):
        """Ids of this process's callbacks an operator asked to hang up."""

    def hangups_handled(ids):
        """Mark requests handled."""

    def nodes(expiry):
        """Node rows (``NODE_COLUMNS``)."""

    def report(name, start, end, account):
        """(columns, rows) of a report."""


classImplements(PostgresCallsStore, ICallsStore)  # db cannot import this layer


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def csv_cell(value) -> str | int | None:
    """A JSON value as its CSV cell (see the module docstring)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value


def csv_lines(columns, rows) -> str:
    """A header line and ``rows`` as CSV (RFC 4180: CRLF line ends, quotes where needed)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    if columns is not None:
        w.writerow(columns)
    w.writerows([csv_cell(v) for v in row] for row in rows)
    return out.getvalue()


def cost_so_far(recovery, now: float) -> dict | None:
    """What the answered legs of a live callback cost up to ``now`` (epoch seconds)."""
    data = _json(recovery)
    if not data:
        return None
    total, legs = Decimal(0), {}
    for leg in data.get("legs", []):
        seconds = max(0, math.ceil(now - leg["answered_at"] - 1e-6))
        charge = pricer_from_dict(leg["pricer"]).charge(seconds)
        legs[leg["leg"]] = {"connected_seconds": seconds, "amount": format(charge.amount, "f")}
        total += charge.amount
    return {"amount": format(total, "f"), "currency": data.get("currency"), "legs": legs}


class Console:
    """The console's calls; see the module docstring."""

    def __init__(self, store, node_expiry: int = NODE_EXPIRY):
        self.store = store
        self.node_expiry = node_expiry

    # -- xDRs ---------------------------------------------------------------------------

    async def xdrs(self, f) -> dict:
        """One page of ``f``: ``{"xdrs": [...], "next": cursor or None, "limit": n}``."""
        rows = await self.store.xdr_page(f)
        page = [dict(zip(XDR_COLUMNS, row, strict=True)) for row in rows[:f.limit]]
        more = len(rows) > f.limit
        last = page[-1] if page else None
        return {"xdrs": page, "limit": f.limit,
                "next": encode_cursor(last["disconnect_time"], last["id"]) if more else None}

    def export_xdrs(self, f, write, batch: int = 2000):
        """Every xDR of ``f`` (paging ignored) as CSV, header first, to ``write(bytes)``, which
        may return a Deferred to slow the reading down; fires with the row count. The lines
        are built by PostgreSQL (``cbserver.db.calls_store``), cell for cell what ``csv_lines``
        writes for the JSON values: Python only joins them."""
        header = csv_lines(XDR_COLUMNS, []).encode("utf-8")

        def on_batch(rows, first=[True]):  # noqa: B006 - one list per export call
            # PostgreSQL wrote each row as a CSV line (the store's "lines" query).
            data = "".join([r[0] for r in rows]).encode("utf-8")
            if first[0]:
                first[0] = False
                data = header + data
            return write(data)

        def finish(count):
            if count == 0:  # no batch carried the header
                return defer.maybeDeferred(write, header).addCallback(lambda _: 0)
            return count

        return self.store.stream_xdrs(f, on_batch, batch).addCallback(finish)

    # -- callbacks ----------------------------------------------------------------------

    def _callback(self, row) -> dict:
        c = dict(zip(CALLBACK_COLUMNS, row, strict=True))
        state = _json(c.pop("state")) or {}
        recovery, now = c.pop("recovery"), c.pop("now")
        c.pop("cursor_at")
        live = c["status"] not in ("ended", "refused")
        cause = state.get("cause")
        if cause and "description" not in cause:
            cause = dict(cause, description=describe(cause["code"]))
        c.update(live=live, legs=state.get("legs") or {}, cause=cause,
                 charges=state.get("charges"), age_seconds=round(c["age_seconds"], 3))
        c["cost_so_far"] = cost_so_far(recovery, now) if live else None
        if not live:
            c["node_alive"] = None  # not a question for a callback that ended
        return c

    async def callbacks(self, q: dict) -> dict:
        """Live or past callbacks (``parse_callback_query``'s dict)."""
        rows = await self.store.callbacks(q["state"], q["limit"], q["after"], q["account"],
                                          q["node"], self.node_expiry)
        page = [self._callback(r) for r in rows[:q["limit"]]]
        last = rows[q["limit"] - 1] if len(rows) > q["limit"] else None
        at = CALLBACK_COLUMNS.index("cursor_at")
        return {"callbacks": page, "limit": q["limit"],
                "next": encode_cursor(last[at], last[0]) if last is not None else None}

    async def callback(self, callback_id: str) -> dict:
        """One callback with its xDRs; ``NotFound``."""
        found = await self.store.callback(callback_id, self.node_expiry)
        if found is None:
            raise NotFound("callback", callback_id)
        row, xdrs = found
        return dict(self._callback(row), xdrs=[dict(zip(XDR_COLUMNS, x, strict=True)) for x in xdrs])

    async def hangup(self, callback_id: str, requested_by: str, actor=None) -> dict:
        """Ask the node running a live callback to end it (idempotent); ``NotFound``
        (unknown), ``ConflictError`` (ended already). Fires with the callback as it is now.
        The request is in the audit log as made by ``actor`` (``billing.audit.Actor``)."""
        outcome = await self.store.request_hangup(callback_id, requested_by, actor or INTERNAL)
        if outcome == "unknown":
            raise NotFound("callback", callback_id)
        if outcome == "ended":
            raise ConflictError(f"callback {callback_id} has ended already")
        log.info("hang-up requested callback_id={callback_id} by={by}", callback_id=callback_id,
                 by=requested_by)
        return await self.callback(callback_id)

    # -- nodes, reports -----------------------------------------------------------------

    async def nodes(self) -> dict:
        """Every live process and each node name's latest: alive, calls running, last seen."""
        rows = await self.store.nodes(self.node_expiry)
        return {"nodes": [dict(zip(NODE_COLUMNS, r, strict=True)) for r in rows],
                "node_expiry_seconds": self.node_expiry}

    async def report(self, name: str, rng) -> dict:
        """``{"report", "from", "to", "account", "columns", "rows": [dict]}``."""
        if name not in REPORTS:
            raise NotFound("report", name)
        columns, rows = await self.store.report(name, rng.start, rng.end, rng.account)
        out = [dict(zip(columns, r, strict=True)) for r in rows]
        if name == "causes":
            for r in out:
                r["description"] = describe(r["cause"])
            columns = (*columns, "description")
        return {"report": name, "from": rng.start, "to": rng.end, "account": rng.account,
                "columns": list(columns), "rows": out}

    @staticmethod
    def report_csv(report: dict) -> str:
        """A report's rows as CSV, header first."""
        cols = report["columns"]
        return csv_lines(cols, [[r[c] for c in cols] for r in report["rows"]])
