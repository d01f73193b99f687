"""A site root that follows the voice applications as the catalog changes them.

``LiveSite(web)`` is the public endpoint's root resource: each request is rendered by the
site ``web.site()`` returns at that moment, which ``CallbackWeb.set_applications`` rebuilds
when the applications change. Requests already being served finish on the site they
started on; the next one is routed by the new paths and host names.
"""

from __future__ import annotations

from twisted.web.resource import Resource


class LiveSite(Resource):
    """Render each request with the current site of ``web`` (see the module docstring)."""

    isLeaf = True  # the Klein resources behind it route the whole path themselves

    def __init__(self, web):
        super().__init__()
        self.web = web

    def render(self, request):
        """Hand the request to the site of the applications as they are now."""
        return self.web.site().render(request)
