"""A catalog object's screens: the list (search, paging), the form to create, the form to edit,
and delete, all over the object's service functions (those the admin JSON API calls).

``Screen`` is declared once per kind of object (``screens_catalog``, ``screens_accounts``)
with its fields; ``Screen.register(console)`` adds its routes under ``/ui/<slug>``:
``GET /<slug>`` the list, ``GET|POST /<slug>/new``, ``GET|POST /<slug>/<key>`` (the edit
form; read-only for a read-only operator), ``POST /<slug>/<key>/delete``. A refused form
comes back with the typed values and each error beside its field (HTTP 400, or 409 for a
conflict).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from urllib.parse import quote

from cbserver.billing.validation import ConflictError, ValidationError
from cbserver.web.console.forms import form_fields, url


@dataclass(frozen=True)
class F:
    """One form field: ``kind`` is an input type, ``select``, ``checkbox``, ``textarea`` or
    ``lines`` (a textarea whose lines are a list)."""

    name: str
    label: str
    kind: str = "text"
    required: bool = False
    options: tuple = ()
    hint: str = ""
    create_only: bool = False  # set once (a currency, a prefix): not on the edit form


def shown(value) -> str:
    """A stored value as a form shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else ""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "\n".join(str(v) for v in value)
    return str(value)


def form_data(fields, values: dict, *, partial: bool) -> dict:
    """The service's input from a form: empty fields left out (the defaults apply), checkboxes
    as booleans, ``lines`` as lists; ``partial`` (an update) leaves out set-once fields."""
    out: dict = {}
    for f in fields:
        if partial and f.create_only:
            continue
        raw = values.get(f.name, "")
        if f.kind == "checkbox":
            out[f.name] = raw in ("true", "on")
        elif f.kind == "lines":
            items = [line.strip() for line in raw.splitlines() if line.strip()]
            if items or partial:
                out[f.name] = items or None
        elif raw.strip() != "":
            out[f.name] = raw.strip()
        elif partial and not f.required:
            out[f.name] = None if f.kind in ("number", "datetime-local") else ""
    return out


def field_errors(exc: Exception) -> dict[str, str]:
    """``{field: message}`` of a typed error (``""`` for one about no single field)."""
    name = getattr(exc, "field", None) or ""
    return {name: getattr(exc, "reason", None) or str(exc)}


@dataclass
class Screen:
    """The screens of one kind of catalog object."""

    slug: str
    title: str  # plural, as in the menu
    noun: str  # singular
    key: Callable[[dict], str]
    columns: list  # (heading, row -> text)
    fields: list
    service: str  # the console's service that keeps these objects: "catalog" or "accounts"
    ops: dict  # "list", "get", "create", "update", "delete" -> the service's method name
    key_arg: Callable = str  # the URL's key as the service's methods take it (an int id...)
    prepare: Callable = dict  # the form's data as create/update take it
    search: str = ""  # the list filter the search box sets ("" for none)
    search_label: str = "Search"
    # async (console, request, session, row or None, form values or None) -> dict: what the
    # page shows besides the fields (a tariff's rates, a product's rating list...);
    # "template" names its own page.
    extra_fn: Callable | None = None
    # values -> dict: service input the fields alone do not give (a product's rating list).
    extra_data: Callable | None = None
    filters: tuple = ()  # list filters also taken from the query string
    defaults: dict = field(default_factory=dict)  # values of the empty create form

    def register(self, console) -> None:
        """Add this screen's routes to the console."""
        route, page = console.app.route, console.page
        s = self.slug
        route(f"/{s}", methods=["GET"], endpoint=f"{s}_list")(page()(self.list_page(console)))
        if "create" in self.ops:
            route(f"/{s}/new", methods=["GET"], endpoint=f"{s}_new")(
                page()(self.new_page(console)))
            route(f"/{s}/new", methods=["POST"], endpoint=f"{s}_create")(
                page()(self.create(console)))
        route(f"/{s}/<key>", methods=["GET"], endpoint=f"{s}_get")(page()(self.edit_page(console)))
        if "update" in self.ops:
            route(f"/{s}/<key>", methods=["POST"], endpoint=f"{s}_update")(
                page()(self.update(console)))
        if "delete" in self.ops:
            route(f"/{s}/<key>/delete", methods=["POST"], endpoint=f"{s}_delete")(
                page()(self.delete(console)))

    async def call(self, console, request, session, op: str, *args):
        """``op`` of this screen's service, bound to the operator for the audit log
        (``Console.service``); a key is converted by ``key_arg``, form data by ``prepare``."""
        svc = console.service(self.service, request, session)
        if op in ("get", "update", "delete"):
            args = (self.key_arg(args[0]), *args[1:])
        if op in ("create", "update"):
            args = (*args[:-1], self.prepare(args[-1]))
        return await getattr(svc, self.ops[op])(*args)

    def link(self, row) -> str:
        """The URL of an object's page."""
        return url(f"/{self.slug}/{quote(self.key(row), safe='')}")

    def list_page(self, console):
        """The handler of the list."""

        async def list_objects(request, session):
            """A page of objects, searched and paged."""
            args = {k.decode(): v[-1].decode("utf-8", "replace") for k, v in request.args.items()}
            q = args.get("q", "").strip()
            filters = {k: args[k] for k in self.filters if args.get(k)}
            if q and self.search:
                filters[self.search] = q
            try:
                offset = max(0, int(args.get("offset", "0") or 0))
            except ValueError:
                offset = 0
            page = await self.call(console, request, session, "list", filters, 50, offset)
            return console.render(request, session, "list.html", active=self.slug, screen=self,
                                  page=page, q=q, query={"q": q, **filters}, title=self.title)

        return list_objects

    async def _form(self, console, request, session, status, values, errors):
        """The create form."""
        extra = (await self.extra_fn(console, request, session, None, values)
                 if self.extra_fn else {})
        fields = list(self.fields)
        return console.render(request, session, extra.pop("template", "form.html"), status,
                              active=self.slug, screen=self, row=None, fields=fields,
                              values=values, errors=errors, title=f"New {self.noun}", extra=extra)

    def _data(self, values: dict, *, partial: bool) -> dict:
        """The service's input from the form's values."""
        data = form_data(self.fields, values, partial=partial)
        if self.extra_data:
            data.update(self.extra_data(values))
        return data

    def new_page(self, console):
        """The handler of the empty create form."""

        async def new_object(request, session):
            """The create form."""
            return await self._form(console, request, session, 200, dict(self.defaults), {})

        return new_object

    def create(self, console):
        """The handler that creates from the form."""

        async def create_object(request, session):
            """Create, then go to the new object's page (or the form again, with the errors)."""
            values = form_fields(request)
            try:
                row = await self.call(console, request, session, "create",
                                      self._data(values, partial=False))
            except (ValidationError, ConflictError) as e:
                code = 409 if isinstance(e, ConflictError) else 400
                return await self._form(console, request, session, code, values, field_errors(e))
            console.log.info("console create {kind} {key} by={actor}", kind=self.noun,
                             key=self.key(row), actor=console.actor(session))
            return console._redirect(request, self.link(row))

        return create_object

    def edit_page(self, console):
        """The handler of an object's page."""

        async def show_object(request, session, key):
            """The edit form (read-only for a read-only operator), with its extras."""
            row = await self.call(console, request, session, "get", key)
            return await self.render_row(console, request, session, row, 200, None, {})

        return show_object

    async def render_row(self, console, request, session, row, status, values, errors):
        """An object's page: its form and what ``extra_fn`` adds (rates, payments...)."""
        extra = (await self.extra_fn(console, request, session, row, values)
                 if self.extra_fn else {})
        if values is None:
            values = {f.name: shown(row.get(f.name)) for f in self.fields}
        fields = list(self.fields)  # set-once fields are shown read-only
        return console.render(request, session, extra.pop("template", "form.html"), status,
                              active=self.slug, screen=self, row=row, fields=fields,
                              values=values, errors=errors, extra=extra,
                              title=f"{self.noun.capitalize()} {row.get('name') or self.key(row)}")

    def update(self, console):
        """The handler that saves the edit form."""

        async def update_object(request, session, key):
            """Save the changes, then show the object again (or the errors)."""
            values = form_fields(request)
            current = await self.call(console, request, session, "get", key)
            try:
                row = await self.call(console, request, session, "update", key,
                                      self._data(values, partial=True))
            except (ValidationError, ConflictError) as e:
                code = 409 if isinstance(e, ConflictError) else 400
                return await self.render_row(console, request, session, current, code, values,
                                             field_errors(e))
            console.log.info("console update {kind} {key} by={actor}", kind=self.noun,
                             key=self.key(row), actor=console.actor(session))
            return console._redirect(request, self.link(row))

        return update_object

    def delete(self, console):
        """The handler that deletes."""

        async def delete_object(request, session, key):
            """Delete, then back to the list (or the object's page with the reason)."""
            current = await self.call(console, request, session, "get", key)
            try:
                await self.call(console, request, session, "delete", key)
            except (ValidationError, ConflictError) as e:
                return await self.render_row(console, request, session, current, 409, None,
                                             field_errors(e))
            console.log.info("console delete {kind} {key} by={actor}", kind=self.noun,
                             key=self.key(current), actor=console.actor(session))
            return console._redirect(request, url(f"/{self.slug}"))

        return delete_object
