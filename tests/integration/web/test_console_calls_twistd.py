"""The console's calls screens on the real ``twistd cbserver`` over HTTPS: xDRs (filter, keyset
paging, the CSV equal to the admin API's), live and past callbacks (hang up), Nodes (drain,
undrain), Reports (and their CSV), an account's xDRs; and strangers: a read-only operator
cannot hang up or drain (403), a forged CSRF token is refused, filter garbage gets the form
back with the field's error (never a 500), markup in the data is shown as text.

One server for the module, over a database seeded with 400 generated xDRs
(``tests.support.xdrgen``), a live callback row and one xDR carrying markup.
"""

from __future__ import annotations

import csv
import io
import re
import ssl
import urllib.request

import psycopg2
import pytest

from tests.conftest import _scratch_database
from tests.support import xdrgen
from tests.support.console import ADMIN_PASSWORD, READER_PASSWORD, Client, ConsoleServer, stop

pytestmark = pytest.mark.integration

TOKEN = "calls-ui-admin-token-0123456789"
XDRS = 400
MARKUP = "<script>alert(1)</script>"


def sql(dsn: str, text: str, params=()):
    """Run one statement; its rows (if any)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(text, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(pg_cluster, pg_template, tmp_path_factory):
    """The server over a seeded database of its own."""
    dbs = _scratch_database(pg_cluster, "cbs_t_", pg_template)
    dsn = next(dbs)
    srv = None
    try:
        xdrgen.generate(dsn, XDRS)
        sql(dsn, "UPDATE xdrs SET sip_reason = %s, account_id = %s, disconnect_time = "
                 "'2026-07-02' WHERE id = (SELECT max(id) FROM xdrs)", (MARKUP, "acc0"))
        # A process of another node that looks alive for the module's run (the server's
        # crash recovery would close a callback of a lost node at its start).
        sql(dsn, "INSERT INTO server_nodes (node, instance_id, hostname, pid, version, last_seen) "
                 "VALUES ('nodeX', '22222222-2222-2222-2222-222222222222', 'hostx', 4242, "
                 "'9.9', now() + interval '1 hour')")
        sql(dsn, "INSERT INTO callback_sessions (id, application, mode, account_id, phone, "
                 "destination, status, state, node, instance_id) VALUES ('live1', 'Web callback', "
                 "'extended', 'acc1', '5511999', '18185550123', 'connected', "
                 "'{\"legs\": {\"A\": {\"state\": \"answered\"}, \"B\": {\"state\": \"answered\"}}}', "
                 "'nodeX', '22222222-2222-2222-2222-222222222222')")
        srv = ConsoleServer(tmp_path_factory.mktemp("calls"), dsn,
                            replace={'admin_token = ""': f'admin_token = "{TOKEN}"'})
        yield srv
    finally:
        stop(srv)
        next(dbs, None)


def logged_in(server, name="alice", password=ADMIN_PASSWORD) -> Client:
    """A client with a session."""
    c = Client(server.base)
    assert c.login(name, password).status == 303
    return c


def api(server, path: str) -> bytes:
    """The admin JSON API's answer (bearer token) as bytes."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    req = urllib.request.Request(server.base + path, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
        assert resp.status == 200
        return resp.read()


def rows(html: str) -> list[tuple[str, str]]:
    """(xDR id, Call-ID) of every row of the xDR table."""
    table = html.split('<table id="xdrs">', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr data-xdr-id="(\d+)" data-call-id="([^"]*)">', table)


def link(html: str, rel: str) -> str:
    """The href of the pager's link ``rel`` (unescaped)."""
    m = re.search(rf'<a href="([^"]+)" id="xdrs-{rel}"', html)
    assert m, rel
    return m.group(1).replace("&amp;", "&")


def test_xdrs_page_forward_and_back_and_filter(server):
    c = logged_in(server)
    first = c.get("/ui/xdrs")
    assert first.status == 200
    one = rows(first.text)
    assert len(one) == 50 and one[0][1].endswith("@trunk.example")
    second = c.get(link(first.text, "next"))
    two = rows(second.text)
    assert len(two) == 50 and not {i for i, _ in one} & {i for i, _ in two}
    third = c.get(link(second.text, "next"))
    back = c.get(link(third.text, "previous"))
    assert rows(back.text) == two
    assert rows(c.get(link(back.text, "previous")).text) == one
    # Every xDR is reached exactly once by walking forward.
    seen, page = [], first
    while True:
        seen += [i for i, _ in rows(page.text)]
        if 'id="xdrs-next"' not in page.text:
            break
        page = c.get(link(page.text, "next"))
    assert len(seen) == len(set(seen)) == XDRS

    filtered = c.get("/ui/xdrs?account=acc1&leg=A&prefix=1818&from=2026-06-01")
    got = rows(filtered.text)
    assert got and all("-A@" in call for _, call in got)
    db = sql(server.dsn, "SELECT count(*) FROM xdrs WHERE account_id = 'acc1' AND leg = 'A' "
                         "AND cld LIKE '1818%%' AND disconnect_time >= '2026-06-01'")[0][0]
    assert len(got) == min(db, 50)
    assert 'id="xdrs-csv" href="/ui/xdrs.csv?' in filtered.text
    assert 'value="acc1"' in filtered.text  # the form keeps the filter


def test_the_csv_link_streams_what_the_filter_shows_as_the_api_does(server):
    c = logged_in(server)
    page = c.get("/ui/xdrs?cause=lega_busy&node=node2&to=2026-06-20")
    href = re.search(r'<a id="xdrs-csv" href="([^"]+)">', page.text).group(1)
    href = href.replace("&amp;", "&")
    assert href == "/ui/xdrs.csv?to=2026-06-20&cause=lega_busy&node=node2"
    got = c.get(href)
    assert got.status == 200 and got.header("Content-Type").startswith("text/csv")
    assert got.header("Transfer-Encoding") == "chunked"  # streamed, not built in memory
    expected = api(server, "/v1/xdrs?format=csv&cause=lega_busy&node=node2&to=2026-06-20")
    assert got.body == expected
    parsed = list(csv.DictReader(io.StringIO(got.text, newline="")))
    assert parsed and {r["cause"] for r in parsed} == {"lega_busy"}
    assert {r["id"] for r in parsed} >= {i for i, _ in rows(page.text)}
    whole = c.get("/ui/xdrs.csv")
    assert whole.body == api(server, "/v1/xdrs?format=csv")
    assert len(list(csv.reader(io.StringIO(whole.text, newline="")))) == XDRS + 1


@pytest.mark.parametrize("query, field", [
    ("from=yesterday", "from"), ("to=2026-13-45", "to"), ("prefix=18a", "prefix"),
    ("leg=C", "leg"), ("after=not-a-cursor", "after"), ("account=%3Cb%3E", "account"),
    ("from=2026-06-02&to=2026-06-01", "to"),
])
def test_filter_garbage_gets_the_form_back_with_the_error(server, query, field):
    c = logged_in(server)
    r = c.get("/ui/xdrs?" + query)
    assert r.status == 400, r.text[:300]
    assert 'class="summary"' in r.text and 'id="xdr-filter"' in r.text
    if field != "after":
        assert f'id="f-{field}-err"' in r.text
    assert "<b>" not in r.text
    # The CSV is every row of the filter: it ignores the paging cursor.
    assert c.get("/ui/xdrs.csv?" + query).status == (200 if field == "after" else 400)


def test_markup_in_the_data_is_text(server):
    c = logged_in(server)
    r = c.get("/ui/xdrs?account=acc0")
    assert MARKUP not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text


def test_live_callbacks_and_their_hang_up(server):
    reader = logged_in(server, "rita", READER_PASSWORD)
    page = reader.get("/ui/callbacks/live")
    assert page.status == 200 and '<tr data-callback-id="live1">' in page.text
    assert "Hang up" not in page.text and 'hx-trigger="every 2s"' in page.text
    assert 'id="refresh"' in page.text
    assert reader.post("/ui/callbacks/live1/hangup", {"csrf": page.csrf()}).status == 403
    a = logged_in(server)
    live = a.get("/ui/callbacks/live")
    assert 'action="/ui/callbacks/live1/hangup"' in live.text
    assert a.post("/ui/callbacks/live1/hangup", {"csrf": "forged"}).status == 403
    assert sql(server.dsn, "SELECT count(*) FROM callback_hangups")[0][0] == 0
    fragment = a.get("/ui/callbacks/live", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith("<div id=\"callbacks\"")
    assert "<html" not in fragment.text
    last = a.get("/ui/callbacks/live?polls=300", headers={"HX-Request": "true"})
    assert "hx-get" not in last.text and 'id="polling-stopped"' in last.text
    assert a.get("/ui/callbacks/live?polls=junk").status == 200
    done = a.post("/ui/callbacks/live1/hangup", {"csrf": live.csrf()})
    assert done.status == 303 and done.header("Location") == "/ui/callbacks/live?hungup=live1"
    assert sql(server.dsn, "SELECT requested_by FROM callback_hangups WHERE session_id = 'live1'") \
        == [("alice",)]
    assert a.post("/ui/callbacks/nosuch/hangup", {"csrf": live.csrf()}).status == 404
    assert a.post("/ui/callbacks/%3Cx%3E/hangup", {"csrf": live.csrf()}).status == 404
    assert a.get("/ui/callbacks/live1/hangup").status == 405
    bad = a.get("/ui/callbacks/live?account=%3Cb%3E&node=" + "n" * 500)
    assert bad.status == 400 and "<b>" not in bad.text and 'class="summary"' in bad.text
    assert a.post("/ui/callbacks/gen1/hangup", {"csrf": live.csrf()}).status == 409


def test_past_callbacks_show_their_cause_and_link_their_xdrs(server):
    c = logged_in(server, "rita", READER_PASSWORD)
    past = c.get("/ui/callbacks/past")
    assert past.status == 200 and '<table class="list" id="past-callbacks">' in past.text
    assert "<code>lega_busy</code></a>" in past.text
    m = re.search(r'<a href="(/ui/callbacks/gen\d+)">its xDRs</a>', past.text)
    one = c.get(m.group(1))
    assert one.status == 200 and len(rows(one.text)) == 2
    older = re.search(r'<a href="([^"]+)" rel="next">Older</a>', past.text).group(1)
    assert c.get(older.replace("&amp;", "&")).status == 200
    assert c.get("/ui/callbacks/past?after=junk").status == 400


def test_nodes_drain_and_undrain(server):
    reader = logged_in(server, "rita", READER_PASSWORD)
    page = reader.get("/ui/nodes")
    assert page.status == 200 and '<tr data-node="node1">' in page.text
    assert "drain-form" not in page.text and "Undrain" not in page.text
    assert reader.post("/ui/nodes/node9/drain", {"csrf": page.csrf()}).status == 403
    a = logged_in(server)
    page = a.get("/ui/nodes")
    assert 'action="/ui/nodes/node1/drain"' in page.text
    assert re.search(r'<td>hostx, 4242, 9.9</td><td>yes</td><td class="num">1</td>', page.text)
    assert a.post("/ui/nodes/node9/drain", {"csrf": "forged"}).status == 403
    bad = a.post("/ui/nodes/node9/drain", {"csrf": page.csrf(), "deadline": "soon"})
    assert bad.status == 400 and "must be a number of seconds" in bad.text
    assert a.post("/ui/nodes/node9/drain", {"csrf": page.csrf(), "deadline": "1e9"}).status == 400
    assert sql(server.dsn, "SELECT count(*) FROM node_drains")[0][0] == 0
    assert reader.post("/ui/nodes/node9/drain", {"csrf": page.csrf()}).status == 403
    ok = a.post("/ui/nodes/node9/drain", {"csrf": page.csrf(), "deadline": "120"})
    assert ok.status == 303
    assert sql(server.dsn, "SELECT node, deadline > now() FROM node_drains") == [("node9", True)]
    page = a.get("/ui/nodes")
    assert '<tr data-node="node9">' in page.text and "draining" in page.text
    assert reader.post("/ui/nodes/node9/undrain", {"csrf": page.csrf()}).status == 403
    assert a.post("/ui/nodes/node9/undrain", {"csrf": "forged"}).status == 403
    assert a.post("/ui/nodes/node9/undrain", {}).status == 403
    assert sql(server.dsn, "SELECT count(*) FROM node_drains")[0][0] == 1
    assert a.post("/ui/nodes/node9/undrain", {"csrf": page.csrf()}).status == 303
    assert sql(server.dsn, "SELECT count(*) FROM node_drains")[0][0] == 0
    assert a.post("/ui/nodes/node9/undrain", {"csrf": page.csrf()}).status == 404


def test_reports_with_charts_tables_and_csv(server):
    c = logged_in(server, "rita", READER_PASSWORD)
    r = c.get("/ui/reports?from=2026-06-01&to=2026-07-01")
    assert r.status == 200
    for name in ("daily", "destinations", "causes"):
        assert f'<canvas id="chart-{name}"' in r.text and f'id="table-{name}"' in r.text
        href = re.search(rf'<a href="([^"]+)" id="csv-{name}">', r.text).group(1)
        got = c.get(href.replace("&amp;", "&"))
        assert got.status == 200 and got.header("Content-Type").startswith("text/csv")
        assert "from=2026-06-01T00%3A00%3A00%2B00%3A00" in href
        assert got.body == api(server, f"/v1/reports/{name}?format=csv&from=2026-06-01&to=2026-07-01")
    assert "/static/reports.js" in r.text and "<script>" not in r.text
    assert ">lega_busy<" in r.text
    bad = c.get("/ui/reports?from=junk")
    assert bad.status == 400 and 'id="f-from-err"' in bad.text
    assert c.get("/ui/reports/nosuch.csv").status == 404
