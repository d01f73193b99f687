"""The admin API's rating data: destinations, tariffs and their rates (``/v1/destinations``,
``/v1/tariffs``, ``/v1/rates``), each as JSON or, for the imports, as a ``text/csv`` body.

``install(AdminApp, api)`` adds these routes to the admin app (``cbserver.web.admin`` calls it
once; this module does not import that one, so there is no cycle): same bearer token, same
error envelope and boundary. Each route only parses the request and calls the ``Catalog``
service, as the CLI does.
"""

from __future__ import annotations

from cbserver.billing.validation import ValidationError

#: Largest CSV body of an import (a 100,000-prefix rate deck is about 5 MB).
MAX_CSV_BODY = 64 << 20


def _csv_body(request) -> bytes | None:
    """The body of a ``text/csv`` request (None for any other type); 400 when too large."""
    kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if kind != b"text/csv":
        return None
    raw = request.content.read(MAX_CSV_BODY + 1) if request.content is not None else b""
    if len(raw) > MAX_CSV_BODY:
        raise ValidationError("body", f"larger than {MAX_CSV_BODY} bytes")
    return raw


def install(app_cls, api) -> None:
    """Add the destination, tariff and rate routes to ``app_cls.app`` (``AdminApp``), each
    wrapped by ``api``."""
    app = app_cls.app

    # -- destinations -----------------------------------------------------------------------

    @app.route("/v1/destinations", methods=["GET"])
    @api()
    async def list_destinations(self, request):
        """List destinations (filters: prefix, country)."""
        return await self.catalog.list_destinations(*self._page(request))

    @app.route("/v1/destinations", methods=["POST"])
    @api(201, body=True)
    async def create_destination(self, request, data):
        """Add a destination to the register."""
        return await self.catalog.create_destination(data)

    @app.route("/v1/destinations/<prefix>", methods=["GET"])
    @api()
    async def get_destination(self, request, prefix):
        """One destination."""
        return await self.catalog.get_destination(prefix)

    @app.route("/v1/destinations/<prefix>", methods=["PATCH"])
    @api(body=True)
    async def update_destination(self, request, data, prefix):
        """Change a destination's country or description."""
        return await self.catalog.update_destination(prefix, data)

    @app.route("/v1/destinations/<prefix>", methods=["DELETE"])
    @api(204)
    async def delete_destination(self, request, prefix):
        """Delete a destination no rate uses."""
        await self.catalog.delete_destination(prefix)

    # -- tariffs and rates ------------------------------------------------------------------

    @app.route("/v1/tariffs", methods=["GET"])
    @api()
    async def list_tariffs(self, request):
        """List tariffs (filters: name, currency)."""
        return await self.catalog.list_tariffs(*self._page(request))

    @app.route("/v1/tariffs", methods=["POST"])
    @api(201, body=True)
    async def create_tariff(self, request, data):
        """Create a tariff."""
        return await self.catalog.create_tariff(data)

    @app.route("/v1/tariffs/<key>", methods=["GET"])
    @api()
    async def get_tariff(self, request, key):
        """One tariff by id or name."""
        return await self.catalog.get_tariff(key)

    @app.route("/v1/tariffs/<key>", methods=["PATCH"])
    @api(body=True)
    async def update_tariff(self, request, data, key):
        """Change a tariff (never its currency: 409)."""
        return await self.catalog.update_tariff(key, data)

    @app.route("/v1/tariffs/<key>", methods=["DELETE"])
    @api(204)
    async def delete_tariff(self, request, key):
        """Delete a tariff (and its rates) no rating list uses."""
        await self.catalog.delete_tariff(key)

    @app.route("/v1/tariffs/<key>/rates", methods=["GET"])
    @api()
    async def list_tariff_rates(self, request, key):
        """List a tariff's rates (filter: prefix)."""
        filters, limit, offset = self._page(request)
        return await self.catalog.list_rates({**filters, "tariff": key}, limit, offset)

    @app.route("/v1/tariffs/<key>/rates", methods=["POST"])
    @api(201, body=True)
    async def create_rate(self, request, data, key):
        """Add a rate to a tariff."""
        return await self.catalog.create_rate(key, data)

    @app.route("/v1/tariffs/<key>/rates/import", methods=["POST"])
    @api()
    async def import_rates(self, request, key):
        """Insert or replace many rates, all or none: a JSON list or a CSV file (text/csv)."""
        csv_body = _csv_body(request)
        if csv_body is not None:
            return await self.catalog.import_rates_csv(key, csv_body)
        data = self._body(request)
        if not isinstance(data, dict) or not isinstance(data.get("rates"), list):
            raise ValidationError("rates", "must be a list of rates")
        return await self.catalog.import_rates(key, list(enumerate(data["rates"], start=1)))

    @app.route("/v1/destinations/import", methods=["POST"])
    @api()
    async def import_destinations(self, request):
        """Add or change many destinations, all or none: a JSON list or a CSV file (text/csv)."""
        csv_body = _csv_body(request)
        if csv_body is not None:
            return await self.catalog.import_destinations_csv(csv_body)
        data = self._body(request)
        if not isinstance(data, dict) or not isinstance(data.get("destinations"), list):
            raise ValidationError("destinations", "must be a list of destinations")
        return await self.catalog.import_destinations(list(enumerate(data["destinations"], start=1)))

    @app.route("/v1/rates", methods=["GET"])
    @api()
    async def list_rates(self, request):
        """List rates (filters: tariff, prefix)."""
        return await self.catalog.list_rates(*self._page(request))

    @app.route("/v1/rates/<int:rate_id>", methods=["GET"])
    @api()
    async def get_rate(self, request, rate_id):
        """One rate."""
        return await self.catalog.get_rate(int(rate_id))

    @app.route("/v1/rates/<int:rate_id>", methods=["PATCH"])
    @api(body=True)
    async def update_rate(self, request, data, rate_id):
        """Change a rate."""
        return await self.catalog.update_rate(int(rate_id), data)

    @app.route("/v1/rates/<int:rate_id>", methods=["DELETE"])
    @api(204)
    async def delete_rate(self, request, rate_id):
        """Delete a rate version."""
        await self.catalog.delete_rate(int(rate_id))
