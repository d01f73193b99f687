"""The console's templates: the menu in the manual's order, the no-JavaScript fallbacks, and
escaping (the pages are Jinja2 with autoescape on; see cbserver/web/console/templates/)."""

from __future__ import annotations

import re
from urllib.parse import quote

from cbserver.operators import ADMIN, READONLY, Session
from cbserver.web.console.app import MENU, TEMPLATES
from cbserver.web.console.forms import url
from cbserver.web.templating import render

ADMIN_S = Session("h", "alice", ADMIN, "tok")
READER_S = Session("h", "rita", READONLY, "tok")


def page(template: str, session=ADMIN_S, **context) -> str:
    """A console template rendered as Console.render does."""
    return render(TEMPLATES, template, session=session, menu=MENU, url=url, quote=quote,
                  role_titles={ADMIN: "administrator", READONLY: "read-only"},
                  can_change=bool(session and session.can_change),
                  csrf=session.csrf_token if session else "", active="", **context).decode()


def test_the_menu_follows_the_manual_and_shows_what_is_coming():
    html = page("home.html", title="Home")
    labels = re.findall(r"<li>(?:<a [^>]*>|<span [^>]*>)([^<(]+)", html)
    labels = [x.strip() for x in labels]
    assert labels == ["Voice applications", "Destinations", "Tariffs", "Products", "Customers",
                      "Accounts", "Account generator", "Batches", "xDRs", "Live callbacks",
                      "Past callbacks", "Nodes", "Reports", "Audit log"]
    assert html.count('aria-disabled="true"') == 0  # every screen is built
    for path in ("/ui/applications", "/ui/xdrs", "/ui/callbacks/live", "/ui/callbacks/past",
                 "/ui/nodes", "/ui/reports", "/ui/audit"):
        assert f'href="{path}"' in html


def test_a_running_job_polls_with_htmx_and_refreshes_without_javascript():
    job = {"id": "ab12", "state": "running", "stage": "writing", "done": 40, "total": 300}
    html = page("job.html", job=job, title="Generating accounts")
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in html
    assert 'hx-get="/ui/generator/jobs/ab12"' in html and 'hx-trigger="every 1s"' in html
    assert 'max="300" value="40"' in html
    fragment = page("job_fragment.html", job=job)
    assert fragment.lstrip().startswith('<div id="job"') and "<html" not in fragment


def test_a_finished_job_offers_the_csv_and_stops_polling():
    job = {"id": "ab12", "state": "done", "stage": "writing", "done": 300, "total": 300,
           "result": {"quantity": 300, "batch": "B1", "batch_id": 4, "status": "inactive"}}
    html = page("job.html", job=job, title="Generating accounts")
    assert "http-equiv" not in html and "hx-get" not in html
    assert 'href="/ui/generator/jobs/ab12/csv"' in html and "inactive until activated" in html
    reader = page("job.html", session=READER_S, job=job, title="Generating accounts")
    assert "/csv" not in reader and "inactive until activated" in reader


def test_values_from_the_database_are_escaped():
    job = {"id": "ab12", "state": "failed", "error": {"message": "<script>x()</script>"}}
    html = page("job.html", job=job, title="<b>t</b>")
    assert "<script>x()" not in html and "&lt;script&gt;x()" in html
    assert "<b>t</b>" not in html


def test_a_read_only_operator_is_told_so_and_gets_no_generator_form():
    html = page("generator.html", session=READER_S, fields=[], values={}, errors={},
                title="Account generator")
    assert "read-only" in html and "generator-form" not in html


def test_a_long_list_has_working_pages():
    from cbserver.web.console.screens import Screen

    screen = Screen("accounts", "Accounts", "account", key=lambda r: r["id"],
                    columns=[("Account ID", lambda r: r["id"])], fields=[], service="accounts",
                    ops={"list": "list_accounts"}, search="id_prefix")
    items = [{"id": f"cb{i:04d}"} for i in range(50, 100)]
    html = page("list.html", screen=screen, page={"items": items, "total": 120, "limit": 50,
                                                  "offset": 50},
                q="cb", query={"q": "cb"}, title="Accounts")
    assert 'href="/ui/accounts?offset=0&amp;q=cb">Previous' in html
    assert 'href="/ui/accounts?offset=100&amp;q=cb">Next' in html and "51–100 of 120" in html
    assert 'href="/ui/accounts/cb0050"' in html


class _Service:
    """A service that can be bound to an actor, as the audit log's services can."""

    def __init__(self, actor=None):
        self.actor = actor

    def as_actor(self, actor):
        return _Service(actor)


class _Plain:
    """A service from before the audit log: no ``as_actor``."""


class _Request:
    def getClientAddress(self):  # noqa: N802 - Twisted API
        return type("Addr", (), {"host": "192.0.2.7"})()


def test_every_service_call_is_bound_to_the_operator_when_it_can_be():
    from types import SimpleNamespace

    from cbserver.web.console.app import Console

    admin = SimpleNamespace(catalog=_Service(), accounts=_Plain(), payments=_Service(),
                            generator=_Service(), cfg=None, jobs={})
    console = Console(admin, operators=object(), make_actor=lambda who, client: (who, "ui", client))
    bound = console.service("catalog", _Request(), ADMIN_S)
    assert bound.actor == ("alice", "ui", "192.0.2.7") and admin.catalog.actor is None
    assert console.service("accounts", _Request(), ADMIN_S) is admin.accounts  # nothing to bind
