"""The admin API's calls routes over a real socket on real PostgreSQL (issue 15, "Calls").

The admin app listens on 127.0.0.1 and ``treq`` talks HTTP to it; the data is seeded in SQL
(``seed.py``) and each answer is checked against what was seeded: every filter, keyset paging
that stays stable while rows are inserted, the CSV equal to the JSON of the same filter,
live/past callbacks with cost so far and node liveness, hang-up requests (202 idempotent,
404, 409), nodes, reports, and strangers (no or wrong token, SQL-ish garbage, huge pages).
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import psycopg2
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.server import Site

from cbserver.callback.console import csv_lines
from cbserver.db.calls_store import XDR_COLUMNS
from cbserver.db.pool import Database
from cbserver.web.admin import AdminApp
from tests.integration.console.seed import ACCOUNTS, api_value, seed

pytestmark = pytest.mark.integration

TOKEN = "console-test-token-0123456789"
AUTH = {b"authorization": [f"Bearer {TOKEN}".encode()]}


@pytest_twisted.async_yield_fixture
async def admin(pg_dsn, tmp_path):
    """(base URL, seeded xDRs, dsn): the admin app on a real socket over a seeded database."""
    expected = seed(pg_dsn)
    db = Database(pg_dsn, reactor, size=2)
    db.startService()
    await db.when_ready()
    app = AdminApp(db, reactor, TOKEN, tmp_path)
    port = reactor.listenTCP(0, Site(app.resource()), interface="127.0.0.1")
    yield f"http://127.0.0.1:{port.getHost().port}", expected, pg_dsn
    await port.stopListening()
    await db.stopService()


async def get(url: str, headers=None, method: str = "GET"):
    """(status, headers, body bytes)."""
    response = await treq.request(method, url, headers=AUTH if headers is None else headers)
    return response.code, response.headers, await response.content()


async def get_json(url: str, method: str = "GET"):
    code, _headers, body = await get(url, method=method)
    return code, json.loads(body) if body else None


def shown(rows):
    """Seeded xDR dicts as the API shows them."""
    return [{c: api_value(r[c]) for c in XDR_COLUMNS} for r in rows]


async def all_pages(base: str, query: str, limit: int) -> list[dict]:
    rows, after = [], None
    while True:
        url = f"{base}/v1/xdrs?{query}&limit={limit}" + (f"&after={after}" if after else "")
        code, body = await get_json(url)
        assert code == 200, body
        assert len(body["xdrs"]) <= limit
        rows += body["xdrs"]
        after = body["next"]
        if after is None:
            return rows


FILTERS = [
    ("", lambda r: True),
    ("account=acc2", lambda r: r["account_id"] == "acc2"),
    ("customer=cust1", lambda r: r["customer_id"] == "cust1"),
    ("prefix=551", lambda r: r["cld"].startswith("551")),
    ("cause=legb_busy", lambda r: r["cause"] == "legb_busy"),
    ("node=node2&leg=B", lambda r: r["node"] == "node2" and r["leg"] == "B"),
    ("from=2026-06-02&to=2026-06-03T12:00:00Z",
     lambda r: "2026-06-02" <= api_value(r["disconnect_time"]) < "2026-06-03T12:00:00"),
    ("account=acc1&cause=operator_hangup&prefix=1", lambda r: r["account_id"] == "acc1"
     and r["cause"] == "operator_hangup" and r["cld"].startswith("1")),
]


@pytest.mark.parametrize(("query", "keep"), FILTERS, ids=[q or "all" for q, _ in FILTERS])
@pytest_twisted.ensureDeferred
async def test_each_filter_pages_and_csv_show_exactly_the_seeded_rows(admin, query, keep):
    base, expected, _dsn = admin
    want = shown([r for r in expected if keep(r)])
    assert want, "the seed must give every filter some rows"
    assert await all_pages(base, query, 7) == want
    code, headers, body = await get(f"{base}/v1/xdrs?{query}&format=csv")
    assert code == 200
    assert headers.getRawHeaders(b"content-type") == [b"text/csv; charset=utf-8"]
    lines = list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))
    assert lines[0] == list(XDR_COLUMNS)
    as_text = [["" if v is None else "true" if v is True else "false" if v is False else str(v)
                for v in (r[c] for c in XDR_COLUMNS)] for r in want]
    assert lines[1:] == as_text
    # Byte for byte what Python's csv module writes for the JSON values (PostgreSQL builds it).
    assert body == csv_lines(XDR_COLUMNS, [[r[c] for c in XDR_COLUMNS] for r in want]).encode()
    # Accept: text/csv gives the same bytes.
    code2, _h, body2 = await get(f"{base}/v1/xdrs?{query}", headers={**AUTH, b"accept": [b"text/csv"]})
    assert (code2, body2) == (200, body)


@pytest_twisted.ensureDeferred
async def test_keyset_paging_is_stable_while_xdrs_are_inserted(admin):
    base, expected, dsn = admin
    code, first = await get_json(f"{base}/v1/xdrs?limit=10")
    assert code == 200 and first["next"]
    # New calls end meanwhile (newer disconnect times): the next pages go on where they were.
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        for i in range(15):
            cur.execute("INSERT INTO xdrs (session_id, leg, account_id, cli, cld, node, disconnect_time, "
                        "duration, charged_seconds, amount, currency, trigger_mode) VALUES "
                        "(%s, 'A', 'acc1', '1', '2', 'node1', now(), 0, 0, 0, 'USD', 'simple')", (f"new{i}",))
    conn.close()
    rest, after = [], first["next"]
    while after:
        code, body = await get_json(f"{base}/v1/xdrs?limit=10&after={after}")
        rest += body["xdrs"]
        after = body["next"]
    ids = [r["id"] for r in first["xdrs"] + rest]
    assert ids == [r["id"] for r in expected]  # none twice, none missed, none of the new ones
    code, fresh = await get_json(f"{base}/v1/xdrs?limit=15")
    assert [r["session_id"] for r in fresh["xdrs"]] == [f"new{i}" for i in reversed(range(15))]


@pytest_twisted.ensureDeferred
async def test_live_and_past_callbacks_with_cost_so_far_and_node_liveness(admin):
    base, _expected, _dsn = admin
    code, live = await get_json(f"{base}/v1/callbacks?state=live")
    assert code == 200
    by_id = {c["id"]: c for c in live["callbacks"]}
    assert set(by_id) == {"live001", "live002"}
    assert [c["id"] for c in live["callbacks"]] == ["live002", "live001"]  # newest first
    assert by_id["live001"]["node_alive"] is True and by_id["live002"]["node_alive"] is False
    cost = by_id["live001"]["cost_so_far"]
    # legA answered 20 s before the seed's now, 0.10 a minute in 1 s steps.
    seconds = cost["legs"]["A"]["connected_seconds"]
    assert cost["currency"] == "USD" and 20 <= seconds < 80
    assert Decimal(cost["amount"]) == (Decimal("0.10") * seconds / 60).quantize(Decimal("0.00001"))
    assert by_id["live002"]["cost_so_far"] is None
    assert by_id["live001"]["legs"]["B"]["post_dial_delay"] == 1.5
    code, past = await get_json(f"{base}/v1/callbacks?state=past&limit=1000")
    assert len(past["callbacks"]) == 40 and past["next"] is None
    assert past["callbacks"][0]["id"] == "past039"  # newest first
    assert past["callbacks"][0]["cause"]["code"] == "operator_hangup"
    assert past["callbacks"][0]["cause"]["description"] == "the call was ended by the operator"
    pages, after = [], None
    while True:
        code, body = await get_json(f"{base}/v1/callbacks?state=past&limit=9&account=acc2"
                                    + (f"&after={after}" if after else ""))
        pages += body["callbacks"]
        after = body["next"]
        if not after:
            break
    assert [c["id"] for c in pages] == [f"past{i:03d}" for i in reversed(range(40)) if i % 3 == 1]
    code, one = await get_json(f"{base}/v1/callbacks/past005")
    assert code == 200 and [x["leg"] for x in one["xdrs"]] == ["A", "B"]
    assert one["xdrs"][0]["call_id"] == "past005-A@trunk"


@pytest_twisted.ensureDeferred
async def test_hangup_request_is_stored_once_and_refused_when_unknown_or_ended(admin):
    base, _expected, dsn = admin
    code, body = await get_json(f"{base}/v1/callbacks/live001", method="DELETE")
    assert code == 202 and body["id"] == "live001" and body["hangup_requested_at"]
    code, again = await get_json(f"{base}/v1/callbacks/live001", method="DELETE")
    assert code == 202 and again["hangup_requested_at"] == body["hangup_requested_at"]
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT session_id, instance_id::text, handled_at FROM callback_hangups")
        assert cur.fetchall() == [("live001", "11111111-1111-1111-1111-111111111111", None)]
        # The request is in the audit log once (the repeated one changed nothing).
        cur.execute("SELECT who, source, key, action FROM audit_log WHERE kind = 'callback'")
        assert cur.fetchall() == [("api-token", "api", "live001", "hangup")]
    conn.close()
    # A callback whose node is not alive: accepted, and said so (crash recovery ends it).
    code, dead = await get_json(f"{base}/v1/callbacks/live002", method="DELETE")
    assert code == 202 and dead["node_alive"] is False and dead["hangup_requested_at"]
    code, err = await get_json(f"{base}/v1/callbacks/nosuchcallback", method="DELETE")
    assert code == 404 and err["error"]["code"] == "not_found"
    code, err = await get_json(f"{base}/v1/callbacks/past001", method="DELETE")
    assert code == 409 and err["error"]["code"] == "conflict"
    code, err = await get_json(f"{base}/v1/callbacks/x'%3B%20DROP%20TABLE%20xdrs%3B--", method="DELETE")
    assert code == 400 and err["error"]["field"] == "id"


@pytest_twisted.ensureDeferred
async def test_nodes_and_reports_in_json_and_csv(admin):
    base, expected, _dsn = admin
    code, body = await get_json(f"{base}/v1/nodes/processes")
    assert code == 200
    nodes = {n["node"]: n for n in body["nodes"]}
    assert nodes["node1"]["alive"] is True and nodes["node1"]["calls_running"] == 1
    assert nodes["node2"]["alive"] is False and nodes["node2"]["calls_running"] == 1
    assert nodes["node1"]["last_seen"].endswith("Z")
    rng = "from=2026-06-01&to=2026-07-01"
    code, daily = await get_json(f"{base}/v1/reports/daily?{rng}")
    assert code == 200
    assert sum(r["callbacks"] for r in daily["rows"]) == 40
    assert sum(Decimal(r["revenue"]) for r in daily["rows"]) == sum(r["amount"] for r in expected)
    code, causes = await get_json(f"{base}/v1/reports/causes?{rng}&account=acc3")
    want = {}
    for r in expected:
        if r["account_id"] == "acc3" and r["leg"] == "A":
            want[r["cause"]] = want.get(r["cause"], 0) + 1
    assert {r["cause"]: r["callbacks"] for r in causes["rows"]} == want
    code, dest = await get_json(f"{base}/v1/reports/destinations?{rng}")
    b = [r for r in expected if r["leg"] == "B"]
    for row in dest["rows"]:
        mine = [r for r in b if r["prefix"] == row["prefix"]]
        assert row["attempts"] == len(mine)
        assert row["answered"] == sum(1 for r in mine if r["duration"] > 0)
        assert row["pdd_seconds"] is not None
    for name in ("daily", "destinations", "causes"):
        code, report = await get_json(f"{base}/v1/reports/{name}?{rng}")
        code, headers, body = await get(f"{base}/v1/reports/{name}?{rng}&format=csv")
        assert code == 200 and headers.getRawHeaders(b"content-type") == [b"text/csv; charset=utf-8"]
        lines = list(csv.reader(io.StringIO(body.decode(), newline="")))
        assert lines[0] == report["columns"]
        assert lines[1:] == [["" if r[c] is None else str(r[c]) for c in report["columns"]]
                             for r in report["rows"]]
    code, err = await get_json(f"{base}/v1/reports/nosuch")
    assert code == 404


STRANGE = [
    ("/v1/xdrs?limit=100000", "limit"),
    ("/v1/xdrs?limit=0", "limit"),
    ("/v1/xdrs?limit=1e3", "limit"),
    ("/v1/xdrs?from=yesterday", "from"),
    ("/v1/xdrs?from=2026-06-02&to=2026-06-01", "to"),
    ("/v1/xdrs?prefix=1%27%20OR%20%271%27%3D%271", "prefix"),
    ("/v1/xdrs?prefix=1%25", "prefix"),
    ("/v1/xdrs?cause=x%3BDROP%20TABLE%20xdrs", "cause"),
    ("/v1/xdrs?account=a%27--", "account"),
    ("/v1/xdrs?node=%00", "query"),
    ("/v1/xdrs?acount=acc1", "acount"),
    ("/v1/xdrs?after=Zm9v", "after"),
    ("/v1/xdrs?leg=C", "leg"),
    ("/v1/xdrs?format=xml", "format"),
    ("/v1/callbacks?state=all", "state"),
    ("/v1/callbacks?limit=99999999999999999999", "limit"),
    ("/v1/reports/daily?from=2026-13-01", "from"),
    ("/v1/nodes/processes?x=1", "x"),
]


@pytest.mark.parametrize(("path", "field"), STRANGE, ids=[p for p, _ in STRANGE])
@pytest_twisted.ensureDeferred
async def test_bad_parameters_are_400_naming_the_field(admin, path, field):
    base, _expected, _dsn = admin
    code, _h, body = await get(base + path)
    assert code == 400, body
    assert json.loads(body)["error"]["field"] == field


@pytest_twisted.ensureDeferred
async def test_strangers_without_the_token_get_nothing(admin):
    base, _expected, dsn = admin
    for headers in ({}, {b"authorization": [b"Bearer wrong-token"]},
                    {b"authorization": [f"Basic {TOKEN}".encode()]}):
        for method, path in (("GET", "/v1/xdrs"), ("GET", "/v1/xdrs?format=csv"),
                             ("GET", "/v1/callbacks"), ("GET", "/v1/callbacks/live001"),
                             ("DELETE", "/v1/callbacks/live001"), ("GET", "/v1/nodes/processes"),
                             ("GET", "/v1/reports/daily?format=csv")):
            code, h, body = await get(base + path, headers=headers, method=method)
            assert code == 401, (method, path, body)
            assert json.loads(body)["error"]["code"] == "unauthorized"
            assert b"acc1" not in body
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM callback_hangups")
        assert cur.fetchone()[0] == 0
    conn.close()
    assert ACCOUNTS  # the seed's accounts exist: the 401s above hid real data


@pytest_twisted.ensureDeferred
async def test_callback_paging_misses_none_created_within_one_millisecond(admin):
    base, _expected, dsn = admin
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        for i in range(7):  # 7 callbacks 100 µs apart: the page cursor must not round them away
            cur.execute("INSERT INTO callback_sessions (id, application, mode, phone, status, state, node, "
                        "instance_id, created_at) VALUES (%s, 'W', 'simple', '1', 'ended', '{}', 'node1', "
                        "'11111111-1111-1111-1111-111111111111', "
                        "timestamptz '2027-01-01 00:00:00.5' + make_interval(secs => %s))",
                        (f"us{i}", i * 0.0001))
    conn.close()
    seen, after = [], None
    while True:
        code, body = await get_json(f"{base}/v1/callbacks?state=past&limit=2"
                                    + (f"&after={after}" if after else ""))
        assert code == 200, body
        seen += [c["id"] for c in body["callbacks"]]
        after = body["next"]
        if not after:
            break
    assert seen[:7] == [f"us{i}" for i in reversed(range(7))]
    assert len(seen) == len(set(seen)) == 47
