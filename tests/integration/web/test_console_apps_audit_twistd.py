"""The Voice applications and Audit log screens on the real ``twistd cbserver`` over HTTPS.

One server for the module (a database of its own; ``alice`` administrator, ``rita``
read-only, made by the CLI). An administrator creates, edits and deletes a voice
application through the forms; garbage forms come back with the error beside the field
(never a 500) and change nothing; markup in a name is shown as text; a forged CSRF token and
a read-only operator are refused every change; the audit screen shows each change with its
per-field diff, filters and pages, and refuses a bad time filter beside its field.
"""

from __future__ import annotations

import html
import json
import re

import psycopg2
import pytest

from tests.conftest import _scratch_database
from tests.support.console import ADMIN_PASSWORD, READER_PASSWORD, Client, ConsoleServer, stop

pytestmark = pytest.mark.integration

APP = {"name": "Web callback BR", "callback_page_address": "https://cb.example.net:8901/br",
       "path": "/br", "hosts": "", "second_number": "+1 800 555-0100",
       "hosted_allowed_clients": "127.0.0.0/8\ntoken:s3cret-token-0123456789",
       "access_code": "WEBCALLBACK", "internal_account": "cb-internal",
       "special_charge_if_legb_fails": "true", "account_id_translation_rule": "s/^/cb/",
       "prompts": "", "language": "en", "use_account_id_as_ani": "true",
       "allowed_destinations": "", "denied_destinations": "1900\n1976"}


@pytest.fixture(scope="module")
def server(pg_cluster, pg_template, tmp_path_factory):
    """The server, shared by the module's tests."""
    dbs = _scratch_database(pg_cluster, "cbs_t_", pg_template)
    srv = None
    try:
        srv = ConsoleServer(tmp_path_factory.mktemp("console"), next(dbs))
        yield srv
    finally:
        stop(srv)
        next(dbs, None)


def logged_in(server, name="alice", password=ADMIN_PASSWORD) -> Client:
    """A client with a session."""
    c = Client(server.base)
    assert c.login(name, password).status == 303
    return c


def post(c: Client, path: str, fields: dict, form_path: str | None = None):
    """POST a console form with the CSRF token of its page."""
    token = c.get(form_path or path).csrf()
    return c.post(path, {"csrf": token, **fields})


def problems(r) -> list[str]:
    """The errors a refused form shows (for an assertion's message)."""
    return re.findall(r'<p class="err" id="[^"]*">([^<]*)</p>', r.text)


def stored(server, name: str):
    """The stored application row (or None)."""
    with psycopg2.connect(server.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT second_number, hosted_allowed_clients, denied_destinations, "
                    "use_account_id_as_ani, special_charge_if_legb_fails, callback_page_address "
                    "FROM applications WHERE name = %s", (name,))
        row = cur.fetchone()
    conn.close()
    return row


def audit_rows(server, kind: str, key: str) -> list[tuple]:
    """``(who, source, action, before, after)`` of the audit rows of one object, oldest first."""
    with psycopg2.connect(server.dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT who, source, action, before, after FROM audit_log WHERE kind = %s "
                    "AND key = %s ORDER BY id", (kind, key))
        rows = cur.fetchall()
    conn.close()
    return rows


def test_an_application_is_created_edited_and_deleted_with_every_field(server):
    c = logged_in(server)
    form = c.get("/ui/applications/new")
    assert form.status == 200
    for name in APP:  # every field of "Configure the instance parameters" is on the form
        assert f'name="{name}"' in form.text, name
    r = post(c, "/ui/applications/new", APP, "/ui/applications/new")
    assert r.status == 303, problems(r)
    page = r.header("Location")
    assert re.fullmatch(r"/ui/applications/\d+", page)
    assert stored(server, "Web callback BR") == (
        "18005550100", ["127.0.0.0/8", "token:s3cret-token-0123456789"], ["1900", "1976"], True, True,
        "https://cb.example.net:8901/br")
    shown = c.get(page)
    assert "Web callback BR" in shown.text and "/br" in shown.text
    listing = c.get("/ui/applications?q=callback")
    assert 'href="' + page + '"' in listing.text

    # Edit: a field changed, a list emptied; the name cannot change (shown read-only).
    edited = {**APP, "second_number": "18005550199", "denied_destinations": "",
              "use_account_id_as_ani": ""}
    edited.pop("name")
    r = post(c, page, edited)
    assert r.status == 303, problems(r)
    assert stored(server, "Web callback BR")[0] == "18005550199"
    assert stored(server, "Web callback BR")[2] == [] and stored(server, "Web callback BR")[3] is False
    rows = audit_rows(server, "application", "Web callback BR")
    assert [(w, s, a) for w, s, a, _, _ in rows] == [("alice", "ui", "create"),
                                                     ("alice", "ui", "update")]
    # The Hosted token is a secret: never in the audit log.
    assert "s3cret-token-0123456789" not in json.dumps(rows[0][4])

    # The audit screen shows the update as a per-field diff.
    audit = c.get("/ui/audit?kind=application&key=Web+callback+BR&action=update")
    assert audit.status == 200
    body = audit.text.split('id="audit"', 1)[1]
    assert body.count("data-audit-id=") == 1
    cells = re.findall(r'<th scope="row">([^<]+)</th><td class="before">([^<]*)</td>'
                       r'<td class="after">([^<]*)</td>', body)
    diff = [tuple(html.unescape(x) for x in row) for row in cells]
    assert ("second_number", "18005550100", "18005550199") in diff
    assert ("use_account_id_as_ani", "true", "false") in diff
    assert ("denied_destinations", '["1900", "1976"]', "[]") in diff
    assert all(name != "name" for name, _, _ in diff)  # unchanged fields are left out

    r = post(c, page + "/delete", {}, page)
    assert r.status == 303 and r.header("Location") == "/ui/applications"
    assert stored(server, "Web callback BR") is None
    assert c.get(page).status == 404
    assert audit_rows(server, "application", "Web callback BR")[-1][2] == "delete"


@pytest.mark.parametrize(("fields", "field"), [
    ({"name": "", "callback_page_address": "https://x.example/"}, "name"),
    ({"name": "Bad page", "callback_page_address": "ftp://x"}, "callback_page_address"),
    ({"name": "Bad number", "callback_page_address": "https://x.example/a",
      "second_number": "call the helpdesk"}, "second_number"),
    ({"name": "Bad rule", "callback_page_address": "https://x.example/b",
      "account_id_translation_rule": "system('rm -rf /')"}, "account_id_translation_rule"),
    ({"name": "Bad hosted", "callback_page_address": "https://x.example/c",
      "hosted_allowed_clients": "10.0.0.0/8"}, "internal_account"),
    ({"name": "Bad prefix", "callback_page_address": "https://x.example/d",
      "denied_destinations": "19x0"}, "denied_destinations"),
    ({"name": "Bad flag", "callback_page_address": "https://x.example/e",
      "access_code": "a" * 300}, "access_code"),
])
def test_a_garbage_form_comes_back_with_the_error_beside_the_field(server, fields, field):
    c = logged_in(server)
    r = post(c, "/ui/applications/new", fields, "/ui/applications/new")
    assert r.status == 400, (r.status, r.text[:1500])
    assert f'id="f-{field}-err"' in r.text, r.text[:3000]
    assert f'id="f-{field}" ' in r.text and 'aria-invalid="true"' in r.text
    if fields["name"]:  # what was typed is kept, and nothing was stored
        assert html.escape(fields["name"]) in r.text
        assert stored(server, fields["name"]) is None


def test_two_applications_cannot_share_a_page_path(server):
    c = logged_in(server)
    first = post(c, "/ui/applications/new", {"name": "Path one", "path": "/same",
                                              "callback_page_address": "https://x.example/1"},
                 "/ui/applications/new")
    assert first.status == 303
    r = post(c, "/ui/applications/new", {"name": "Path two", "path": "/same",
                                         "callback_page_address": "https://x.example/2"},
             "/ui/applications/new")
    assert r.status == 409 and 'id="f-path-err"' in r.text and "Path one" in r.text
    assert stored(server, "Path two") is None
    # A key that is not an id: a clear answer, no 500.
    assert c.get("/ui/applications/abc").status == 400
    assert c.get("/ui/applications/999999").status == 404


def test_markup_in_a_name_is_shown_as_text(server):
    c = logged_in(server)
    name = '<img src=x onerror="alert(1)">'
    r = post(c, "/ui/applications/new", {"name": name, "path": "/markup",
                                         "callback_page_address": "https://x.example/m"},
             "/ui/applications/new")
    assert r.status == 303
    for path in ("/ui/applications", r.header("Location"), "/ui/audit?kind=application"):
        text = c.get(path).text
        assert "<img src=x" not in text and "&lt;img src=x" in text, path


def test_forged_csrf_and_read_only_operators_change_nothing(server):
    a = logged_in(server)
    r = post(a, "/ui/applications/new", {"name": "Kept", "path": "/kept",
                                         "callback_page_address": "https://x.example/k"},
             "/ui/applications/new")
    assert r.status == 303
    page = r.header("Location")
    # An administrator's session with a forged token, and with none.
    for token in ("forged-token", None):
        fields = {"callback_page_address": "https://evil.example/", **(
            {"csrf": token} if token else {})}
        assert a.post(page, fields).status == 403
        assert a.post(page + "/delete", fields).status == 403
        assert a.post("/ui/applications/new", {**fields, "name": "Evil"}).status == 403
    rita = logged_in(server, "rita", READER_PASSWORD)
    seen = rita.get(page)
    assert seen.status == 200 and "Kept" in seen.text
    assert "Save</button>" not in seen.text and 'class="danger"' not in seen.text
    token = seen.csrf()
    assert rita.post(page, {"csrf": token, "callback_page_address": "https://evil.example/"}).status == 403
    assert rita.post(page + "/delete", {"csrf": token}).status == 403
    assert rita.post("/ui/applications/new", {"csrf": token, "name": "Evil",
                                               "callback_page_address": "https://e.example/"}).status == 403
    assert stored(server, "Kept")[5] == "https://x.example/k" and stored(server, "Evil") is None
    # The read-only operator sees the audit log, with no form that changes anything.
    audit = rita.get("/ui/audit?kind=application&key=Kept")
    assert audit.status == 200 and 'method="post"' not in audit.text.split("<main", 1)[1]
    assert 'data-action="create"' in audit.text


def test_the_audit_screen_filters_pages_and_refuses_a_bad_time(server):
    c = logged_in(server)
    for i in range(55):
        post(c, "/ui/destinations/new", {"prefix": f"77{i:02d}", "country": "Testland"},
             "/ui/destinations/new")
    first = c.get("/ui/audit?kind=destination&who=alice&source=ui")
    assert first.status == 200
    ids = [int(x) for x in re.findall(r'data-audit-id="(\d+)"', first.text)]
    assert len(ids) == 50 and ids == sorted(ids, reverse=True)  # newest first
    assert "1–50 of 55" in first.text
    nxt = re.search(r'href="(/ui/audit\?[^"]*offset=50[^"]*)"', first.text)
    assert nxt, first.text[-2000:]
    second = c.get(html.unescape(nxt.group(1)))
    more = [int(x) for x in re.findall(r'data-audit-id="(\d+)"', second.text)]
    assert len(more) == 5 and max(more) < min(ids)
    # A time range: everything is after 2000 and nothing before it (UTC without a zone).
    assert "1–50 of 55" in c.get("/ui/audit?kind=destination&action=create"
                                 "&since=2000-01-01+00%3A00").text
    assert "No entry matches" in c.get("/ui/audit?kind=destination&until=2000-01-01T00:00").text
    assert "No entry matches" in c.get("/ui/audit?who=nobody").text
    bad = c.get("/ui/audit?since=yesterday-ish")
    assert bad.status == 400 and 'id="f-since-err"' in bad.text
    backwards = c.get("/ui/audit?since=2030-01-01&until=2020-01-01")
    assert backwards.status == 400 and 'id="f-until-err"' in backwards.text
