"""The OpenAPI 3 description of the admin API's calls routes (``cbserver.web.admin_calls``).

Kept beside the routes' module; ``cbserver.web.admin_openapi`` merges it into the document.
The parameter lists are the ones ``cbserver.callback.consolefilters`` accepts.
"""

from __future__ import annotations

from cbserver.callback.consolefilters import MAX_LIMIT
from cbserver.db.calls_store import REPORTS, XDR_COLUMNS

_ERROR = {"description": "error", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/Error"}}}}
_TIME = {"type": "string", "example": "2026-06-01T00:00:00Z"}  # a date alone is 00:00 UTC


def _q(name: str, description: str, **schema) -> dict:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_LIMIT = _q("limit", f"page size, 1 to {MAX_LIMIT} (default 50)", type="integer", minimum=1,
            maximum=MAX_LIMIT)
_AFTER = _q("after", "the previous page's next cursor (keyset paging, newest first)")
_FORMAT = _q("format", "csv for text/csv (Accept: text/csv does the same)", type="string",
             enum=["json", "csv"])
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string",
                                                                "pattern": "^[0-9A-Za-z_-]{1,64}$"}}


def calls_paths() -> dict:
    """The paths of the calls routes."""
    xdr_filters = [
        _q("from", "disconnect_time >= this", **_TIME), _q("to", "disconnect_time < this", **_TIME),
        _q("account", "account ID"), _q("customer", "customer ID"),
        _q("prefix", "digits the destination (cld) starts with", pattern="^[0-9]{1,20}$"),
        _q("cause", "the callback's cause code (legb_busy, operator_hangup, ...)"),
        _q("node", "node name"), _q("leg", "A or B", type="string", enum=["A", "B"]),
        _LIMIT, _AFTER, _FORMAT]
    report_params = [_q("from", "start, inclusive (default: 30 days before to)", **_TIME),
                     _q("to", "end, exclusive (default: now)", **_TIME), _q("account", "account ID"),
                     _FORMAT]
    return {
        "/v1/xdrs": {"get": {
            "summary": "xDRs by filter, newest first: JSON pages, or every row selected as streamed CSV",
            "parameters": xdr_filters,
            "responses": {"200": {"description": "a page, or the CSV (columns as the JSON fields)",
                                  "content": {"application/json": {"schema": {
                                      "$ref": "#/components/schemas/XdrPage"}},
                                              "text/csv": {"schema": {"type": "string"}}}},
                          "400": _ERROR, "401": _ERROR, "503": _ERROR}}},
        "/v1/callbacks": {"get": {
            "summary": "live (every node's) or past callbacks, newest first",
            "parameters": [_q("state", "live (default) or past", type="string", enum=["live", "past"]),
                           _LIMIT, _AFTER, _q("account", "account ID"), _q("node", "node name")],
            "responses": {"200": {"description": "{callbacks: [Callback], next, limit}"},
                          "400": _ERROR, "401": _ERROR}}},
        "/v1/callbacks/{id}": {
            "parameters": [_ID],
            "get": {"summary": "one callback: legs, status, node, cause, cost so far or charges, xDRs",
                    "responses": {"200": {"description": "the callback", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Callback"}}}},
                        "404": _ERROR, "401": _ERROR}},
            "delete": {"summary": "hang a live callback up on whatever node runs it (cause "
                                  "operator_hangup); asking again is harmless",
                       "responses": {"202": {"description": "requested; the callback as it is now"},
                                     "404": _ERROR, "409": _ERROR, "401": _ERROR}}},
        "/v1/nodes/processes": {"get": {
            "summary": "nodes: every live process and each node name's latest; alive, calls running, "
                       "last seen",
            "responses": {"200": {"description": "{nodes: [...], node_expiry_seconds}"}, "401": _ERROR}}},
        "/v1/reports/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": list(REPORTS)}}],
            "get": {"summary": "daily: callbacks and revenue per day; destinations: ASR, ACD and "
                               "post-dial delay per prefix; causes: outcomes by cause",
                    "parameters": report_params,
                    "responses": {"200": {"description": "{report, from, to, account, columns, rows}, "
                                                         "or CSV"},
                                  "400": _ERROR, "401": _ERROR, "404": _ERROR}}},
    }


def calls_schemas() -> dict:
    """The schemas the calls routes answer with."""
    xdr = {"type": "object", "properties": {c: {"nullable": True} for c in XDR_COLUMNS}}
    xdr["properties"].update(
        id={"type": "integer"}, amount={"type": "string", "description": "5 decimals"},
        connect_time={"type": "string", "nullable": True, "description": "UTC, milliseconds"},
        disconnect_time={"type": "string", "description": "UTC, milliseconds"},
        cause={"type": "string", "nullable": True, "description": "the callback's cause code"})
    return {
        "Xdr": xdr,
        "XdrPage": {"type": "object", "properties": {
            "xdrs": {"type": "array", "items": {"$ref": "#/components/schemas/Xdr"}},
            "next": {"type": "string", "nullable": True, "description": "cursor of the next page"},
            "limit": {"type": "integer"}}},
        "Callback": {"type": "object", "properties": {
            "id": {"type": "string"}, "application": {"type": "string"}, "mode": {"type": "string"},
            "account_id": {"type": "string", "nullable": True}, "phone": {"type": "string"},
            "destination": {"type": "string", "nullable": True}, "status": {"type": "string"},
            "live": {"type": "boolean"}, "node": {"type": "string"}, "instance_id": {"type": "string"},
            "node_alive": {"type": "boolean", "nullable": True},
            "created_at": {"type": "string"}, "updated_at": {"type": "string"},
            "age_seconds": {"type": "number"}, "legs": {"type": "object"},
            "cause": {"type": "object", "nullable": True}, "charges": {"type": "object", "nullable": True},
            "cost_so_far": {"type": "object", "nullable": True,
                            "description": "live: the answered legs priced up to now"},
            "hangup_requested_at": {"type": "string", "nullable": True},
            "xdrs": {"type": "array", "items": {"$ref": "#/components/schemas/Xdr"}}}},
    }
