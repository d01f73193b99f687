"""``GET /v1/audit``: the audit log in the admin API (sql/044_audit_log.sql, billing/audit.py).

Filters (query parameters): ``since`` and ``until`` (ISO 8601 times, ``until`` exclusive),
``who``, ``source`` (api, cli, ui, provision:<file>), ``kind`` and ``key`` (the object),
``action``; ``limit``/``offset`` page through the rows, newest first. The log is read-only
here as everywhere: there is no route that changes it.
"""

from __future__ import annotations

from cbserver.billing.audit import AUDIT_FILTERS, AuditLog
from cbserver.db.stores import PostgresCatalogStore


def install(admin_cls, api) -> None:
    """Add the audit route to the admin app class ``admin_cls`` (``api`` is its decorator)."""

    @admin_cls.app.route("/v1/audit", methods=["GET"])
    @api()
    async def list_audit(self, request):
        """List audit rows, newest first (filters: since, until, who, source, kind, key, action)."""
        filters, limit, offset = self._page(request)
        return await AuditLog(PostgresCatalogStore(self.db)).list(filters, limit, offset)


def openapi_paths(error: dict, page) -> dict:
    """The OpenAPI paths of this module (``error``: the error response, ``page(ref)``)."""
    names = ("limit", "offset", *AUDIT_FILTERS)
    return {"/v1/audit": {"get": {
        "summary": "the audit log, newest first: every change, who made it, from where, before and "
                   "after (read-only: the table refuses UPDATE and DELETE)",
        "parameters": [{"name": n, "in": "query", "schema": (
            {"type": "string", "format": "date-time"} if n in ("since", "until")
            else {"type": "string"})} for n in names],
        "responses": {"200": page("AuditEntry"), "400": error, "401": error}}}}


def openapi_schemas() -> dict:
    """The OpenAPI schemas of this module."""
    text = {"type": "string"}
    return {"AuditEntry": {"type": "object", "properties": {
        "id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"},
        "who": {**text, "description": "api-token, an OS user (cli, provision), an operator (ui)"},
        "source": {**text, "description": "api, cli, ui or provision:<file>"},
        "client": {**text, "description": "the client's address (api, ui)"},
        "kind": {**text, "description": "the object's kind: tariff, rate, product, application..."},
        "key": {**text, "description": "the object's key (id, prefix, account ID, name)"},
        "action": {**text, "description": "create, update, delete, activate, payment, refund, generate"},
        "before": {"type": "object", "nullable": True}, "after": {"type": "object", "nullable": True}}}}
