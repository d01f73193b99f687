"""``/v1/applications``: the voice applications (callback instances) in the admin API.

CRUD over ``billing.applications.Applications``, keyed by the application's name (digits: its
id). A change is audited and reaches every node's pages at the next request, without restart.
"""

from __future__ import annotations

import dataclasses
import typing

from cbserver.config import ApplicationConfig


def install(admin_cls, api) -> None:
    """Add the application routes to the admin app class ``admin_cls`` (``api``: its decorator)."""
    route = admin_cls.app.route

    @route("/v1/applications", methods=["GET"])
    @api()
    async def list_applications(self, request):
        """List voice applications (filter: name)."""
        return await self.applications.list_applications(*self._page(request))

    @route("/v1/applications", methods=["POST"])
    @api(201, body=True)
    async def create_application(self, request, data):
        """Create a voice application."""
        return await self.applications.create_application(data)

    @route("/v1/applications/<key>", methods=["GET"])
    @api()
    async def get_application(self, request, key):
        """One voice application."""
        return await self.applications.get_application(key)

    @route("/v1/applications/<key>", methods=["PATCH"])
    @api(body=True)
    async def update_application(self, request, data, key):
        """Change some fields of a voice application (never its name: 409)."""
        return await self.applications.update_application(key, data)

    @route("/v1/applications/<key>", methods=["DELETE"])
    @api(204)
    async def delete_application(self, request, key):
        """Delete a voice application: its page answers 404 from the next request on."""
        await self.applications.delete_application(key)


def openapi_schemas() -> dict:
    """The ``Application`` schema, built from ``ApplicationConfig`` (the config's own fields)."""
    hints = typing.get_type_hints(ApplicationConfig)
    props = {}
    for f in dataclasses.fields(ApplicationConfig):
        tp = hints[f.name]
        schema = ({"type": "boolean"} if tp is bool else
                  {"type": "array", "items": {"type": "string"}} if typing.get_origin(tp) is tuple
                  else {"type": "string"})
        props[f.name] = {**schema, "description": f.metadata.get("doc", "")}
    props["name"]["description"] += " (cannot be changed)"
    return {"Application": {"type": "object", "additionalProperties": False, "properties": props,
                            "required": ["name", "callback_page_address"]}}
