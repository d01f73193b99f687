"""The admin API's nodes: list them, drain one, undrain it (issue 16).

Routes (behind the admin token, like every other): ``GET /v1/nodes``, ``POST
/v1/nodes/<node>/drain`` (body ``{"deadline": SECONDS}``, optional), ``DELETE
/v1/nodes/<node>/drain``. They write the same ``node_drains`` row as ``cbserver node drain``
(``cbserver.db.nodes_store``); the node sees it at its next poll (``cbserver.callback.nodestate``).
Installed into ``AdminApp``'s Klein app by ``install``, so that admin.py stays small.
"""

from __future__ import annotations

from decimal import Decimal

from cbserver.billing.audit import api_actor
from cbserver.billing.validation import NotFound, ValidationError
from cbserver.config import NODE_STALE_AFTER, check_node_name
from cbserver.db import nodes_store

MAX_DEADLINE = 7 * 86400  # a week: longer is a typo (a drain without deadline waits for ever)


def node_expiry(cfg) -> int:
    """Seconds without a heartbeat after which a process is gone: ``[recovery] stale_after``
    of the server's config ``cfg`` (None: its default), the rule crash recovery applies."""
    return NODE_STALE_AFTER if cfg is None else cfg.recovery.stale_after


def node_name(text: str) -> str:
    """The node name of a path, or ``ValidationError`` (``*`` and blanks are not names)."""
    try:
        return check_node_name(text)
    except ValueError as e:
        raise ValidationError("node", str(e)) from None


def deadline_seconds(value) -> float | None:
    """A drain deadline in seconds (None: none), or ``ValidationError``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValidationError("deadline", "must be a number of seconds or null")
    if not 0 < value <= MAX_DEADLINE:
        raise ValidationError("deadline", f"must be more than 0 and at most {MAX_DEADLINE} seconds")
    return float(value)


def install(app_cls, api) -> None:
    """Add the node routes to ``app_cls.app`` (``AdminApp``), each wrapped by ``api``."""
    app = app_cls.app

    @app.route("/v1/nodes", methods=["GET"])
    @api()
    async def list_nodes(self, request):
        """Every node name with a live process or a drain: its processes, callbacks, drain."""
        return {"items": await nodes_store.list_nodes(self.db, node_expiry(self.cfg))}

    @app.route("/v1/nodes/<node>/drain", methods=["POST"])
    @api(body=True)
    async def drain_node(self, request, data, node):
        """Drain a node: no new callbacks, out of the balancer, calls end by ``deadline``."""
        name = node_name(node)
        unknown = set(data) - {"deadline"}
        if unknown:
            raise ValidationError(sorted(unknown)[0], "unknown field")
        return await nodes_store.drain(self.db, name, deadline_seconds(data.get("deadline")),
                                       api_actor(request))

    @app.route("/v1/nodes/<node>/drain", methods=["DELETE"])
    @api()
    async def undrain_node(self, request, node):
        """Undrain a node: it takes callbacks again (404 if it was not drained)."""
        name = node_name(node)
        if not await nodes_store.undrain(self.db, name, api_actor(request)):
            raise NotFound("drained node", name)
        return {"node": name, "draining": False}
