"""The Voice applications screen: the manual's WEB callback instances as catalog objects.

List, create, edit and delete through ``Applications`` (``billing/applications.py``), the
service the admin API's ``/v1/applications`` calls, bound to the operator for the audit log.
The form has every field of the manual's "Configure the instance parameters", grouped by the
manual's panels (Entry point, Authorization, Accounting, Translation rules, Prompts,
Application specific); the checks are the config's own (``ApplicationConfig``), so a refusal
names its field and is shown beside it. An application's name is set once (its callbacks and
xDRs refer to it), so the URL names it by id.
"""

from __future__ import annotations

import dataclasses

from cbserver.config import ApplicationConfig
from cbserver.web.console.screens import F, Screen
from cbserver.web.console.screens_catalog import _int, _ops

_DOC = {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(ApplicationConfig)}


def _f(name: str, label: str, kind: str = "text", **kw) -> F:
    """A field whose hint is the config's own description of the setting."""
    return F(name, label, kind, hint=kw.pop("hint", _DOC.get(name, "")), **kw)


#: The manual's panels, in its order, with their fields (every ``ApplicationConfig`` field).
GROUPS = (
    ("Entry point", (
        _f("name", "Name", required=True, create_only=True),
        _f("callback_page_address", "Callback page web address", required=True,
           hint="the address given to users, e.g. https://cb.example.net:8901/"),
        _f("path", "Page path", hint="URL path of the page (empty: /<name as a slug>)"),
        _f("hosts", "Host names", "lines",
           hint="one a line: host names whose requests this application serves at /"),
    )),
    ("Authorization", (
        _f("second_number", "The second number to connect",
           hint="Simple mode: the number users are connected to (e.g. the helpdesk)"),
        _f("hosted_allowed_clients", "Clients allowed to use Hosted mode", "lines",
           hint="one a line: a network (10.0.0.0/8) or token:<secret>; empty: Hosted is off"),
    )),
    ("Accounting", (
        _f("access_code", "Access code", hint="selects the callback tariff in the product's "
                                              "rating list (default WEBCALLBACK)"),
        _f("internal_account", "Internal account",
           hint="charged for hosted callbacks until the caller is identified"),
        _f("special_charge_if_legb_fails", "Special charge if LegB fails (the CALLBACK_FAIL "
                                            "rating entry charges legA)", "checkbox"),
    )),
    ("Translation rules", (
        _f("account_id_translation_rule", "Account ID translation rule",
           hint="Perl s/// applied to the calling number, e.g. s/^/cb/"),
    )),
    ("Prompts & notifications", (
        _f("prompts", "Custom prompts folder"),
        _f("language", "Prompt language"),
    )),
    ("Application specific", (
        _f("use_account_id_as_ani", "Use account ID as ANI", "checkbox"),
        _f("allowed_destinations", "Allowed destinations", "lines",
           hint="one prefix a line; empty: any number"),
        _f("denied_destinations", "Denied destinations", "lines",
           hint="one prefix a line (premium rate, satellite...); wins over allowed"),
    )),
)
APPLICATION_FIELDS = [f for _, fields in GROUPS for f in fields]
assert {f.name for f in APPLICATION_FIELDS} == set(_DOC), "every ApplicationConfig field"


async def _extra(console, request, session, row, values):
    """The grouped form's own template."""
    return {"template": "application.html", "groups": GROUPS}


def add_routes(console) -> None:
    """Register the Voice applications screen on the console."""
    Screen(
        "applications", "Voice applications", "voice application", key=lambda r: str(r["id"]),
        columns=[("Name", lambda r: r["name"]), ("Page path", lambda r: r["url_path"]),
                 ("Callback page web address", lambda r: r["callback_page_address"]),
                 ("Access code", lambda r: r["access_code"]),
                 ("Hosted mode", lambda r: "on" if r["hosted_allowed_clients"] else "off")],
        fields=APPLICATION_FIELDS, service="applications", ops=_ops("application"),
        key_arg=_int, search="name", search_label="Name", extra_fn=_extra,
        defaults={"access_code": "WEBCALLBACK", "language": "en"},
    ).register(console)
