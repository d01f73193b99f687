"""The console's calls screens as templates and pure helpers: the xDR table's contract (ids,
Call-IDs, amounts, the CSV link), the live list (Hang up for administrators only, htmx
polling and a Refresh link), nodes merged from their two sources, the drain deadline's
checks, the reports' chart hooks, and escaping."""

from __future__ import annotations

import pytest

from cbserver.billing.validation import ValidationError
from cbserver.web.console.screens_calls import (
    MAX_POLLS,
    MAX_TRAIL,
    XDR_FILTER,
    filter_query,
    filter_values,
    pager_links,
)
from cbserver.web.console.screens_nodes import CHARTS, REPORT_FIELDS, deadline_field, merge_nodes
from tests.unit.web.test_console_pages import READER_S, page

XDR = {"id": 7, "session_id": "cb<1>", "leg": "A", "account_id": "acc1", "customer_id": "c1",
       "cld": "18185550123", "node": "node1", "duration": 61, "charged_seconds": 120,
       "amount": "0.12000", "currency": "USD", "sip_code": 200, "sip_reason": "<i>OK</i>",
       "call_id": "abc@trunk", "cause": "legb_hung_up", "disconnect_time": "2026-06-01T10:00:00.000Z"}
LIVE = {"id": "cbL1", "account_id": "acc1", "legs": {"A": {"state": "answered"},
                                                    "B": {"state": "ringing"}},
        "status": "connected", "age_seconds": 12.4, "node": "node1", "node_alive": True,
        "cost_so_far": {"amount": "0.0100", "currency": "USD"}, "hangup_requested_at": None}


def xdrs_page(session=None, **kw):
    ctx = {"title": "xDRs", "fields": XDR_FILTER, "values": {}, "errors": {}, "xdrs": [XDR],
           "nav": {}, "csv_url": "/ui/xdrs.csv?account=acc1"}
    ctx.update(kw)
    return page("xdrs.html", **({"session": session} if session else {}), **ctx)


def test_the_xdr_table_keeps_its_contract():
    html = xdrs_page()
    assert '<table id="xdrs">' in html
    assert '<tr data-xdr-id="7" data-call-id="abc@trunk">' in html
    assert '<td class="amount">0.12000 USD</td>' in html
    assert '<a id="xdrs-csv" href="/ui/xdrs.csv?account=acc1">' in html
    assert "<i>OK</i>" not in html and "&lt;i&gt;OK&lt;/i&gt;" in html
    assert 'href="/ui/callbacks/cb%3C1%3E"' in html


def test_the_xdr_pager_and_the_filter_errors():
    html = xdrs_page(nav={"next": "?after=X&trail=-", "previous": "?account=a", "first": "?"},
                     errors={"prefix": "must be 1 to 20 digits"}, values={"prefix": "1a"})
    assert 'href="/ui/xdrs?after=X&amp;trail=-" id="xdrs-next"' in html
    assert 'id="xdrs-previous"' in html and 'id="xdrs-first"' in html
    assert 'id="f-prefix-err">must be 1 to 20 digits' in html and 'value="1a"' in html
    assert 'id="xdrs-next"' not in xdrs_page()


def test_filter_values_keep_only_the_filter():
    args = {"account": " acc1 ", "leg": "", "after": "X", "trail": "-", "junk": "1", "to": "2026-06-02"}
    values = filter_values(args)
    assert values == {"account": "acc1", "to": "2026-06-02"}
    assert filter_query(values) == "to=2026-06-02&account=acc1"


def live_page(session=None, polls=0):
    return page("callbacks.html", **({"session": session} if session else {}), state="live",
                title="Live callbacks", errors={}, callbacks=[LIVE], next=None, account="",
                node="", hungup="", polls=polls, max_polls=MAX_POLLS)


def test_the_live_list_polls_and_offers_hang_up_to_administrators_only():
    html = live_page()
    assert '<table id="live-callbacks">' in html
    assert '<tr data-callback-id="cbL1">' in html and "A: answered, B: ringing" in html
    assert 'action="/ui/callbacks/cbL1/hangup"' in html and 'name="csrf" value="tok"' in html
    assert 'hx-get="/ui/callbacks/live?polls=1"' in html and 'hx-trigger="every 2s"' in html
    assert 'id="refresh"' in html and "0.0100 USD" in html
    reader = live_page(READER_S)
    assert '<tr data-callback-id="cbL1">' in reader and "hangup" not in reader


def test_past_callbacks_show_the_cause_and_link_the_xdrs():
    cb = dict(LIVE, status="ended", cause={"code": "legb_busy", "description": "<busy>"},
              destination="1818", created_at="2026-06-01T10:00:00.000Z")
    html = page("callbacks.html", state="past", title="Past callbacks", errors={}, callbacks=[cb],
                next="CUR", account="", node="", hungup="", polls=0, max_polls=MAX_POLLS)
    assert "<code>legb_busy</code></a> &lt;busy&gt;" in html and "hx-get" not in html
    assert 'href="/ui/xdrs?cause=legb_busy"' in html
    assert '<a href="/ui/callbacks/cbL1">its xDRs</a>' in html
    assert 'href="/ui/callbacks/past?after=CUR" rel="next"' in html


def test_nodes_merge_both_sources_by_name():
    names = [{"node": "b", "draining": True, "deadline": "2026-06-01T00:00:00+00:00",
              "active_callbacks": 0}]
    procs = [{"node": "a", "alive": True}, {"node": "b", "alive": False}, {"node": "a", "alive": False}]
    merged = merge_nodes(names, procs)
    assert [m["node"] for m in merged] == ["a", "b"]
    assert len(merged[0]["procs"]) == 2 and merged[0]["draining"] is False
    assert merged[1]["draining"] is True and merged[1]["procs"] == [{"node": "b", "alive": False}]


def test_nodes_page_hides_drain_from_a_reader():
    nodes = merge_nodes([], [{"node": "n<1>", "alive": True, "hostname": "h", "pid": 1,
                              "version": "1", "calls_running": 2, "last_seen": "t",
                              "stopped_at": None}])
    html = page("nodes.html", title="Nodes", nodes=nodes, errors={}, values={}, failed="",
                expiry=30)
    assert 'action="/ui/nodes/n%3C1%3E/drain"' in html and "n&lt;1&gt;" in html
    reader = page("nodes.html", session=READER_S, title="Nodes", nodes=nodes, errors={},
                  values={}, failed="", expiry=30)
    assert "/drain" not in reader and "<td class=\"num\">2</td>" in reader


@pytest.mark.parametrize("text", ["soon", "0", "-5", "NaN", "Infinity", "604801"])
def test_a_bad_drain_deadline_is_refused(text):
    with pytest.raises(ValidationError) as e:
        deadline_field(text)
    assert e.value.field == "deadline"


def test_a_drain_deadline():
    assert deadline_field("") is None and deadline_field(" 90 ") == 90.0


def test_reports_draw_from_their_tables():
    report = {"columns": ["cause", "currency", "callbacks", "charged"],
              "rows": [{"cause": "<x>", "currency": "USD", "callbacks": 3, "charged": "1.0"}]}
    html = page("reports.html", title="Reports", fields=REPORT_FIELDS, values={}, errors={},
                rng=None, reports=[{"name": "causes", "title": CHARTS["causes"][0],
                                    "label": "cause", "drawn": ("callbacks",), "report": report,
                                    "csv": "/ui/reports/causes.csv"}])
    assert 'data-table="table-causes" data-label="cause" data-series="callbacks"' in html
    assert '<th scope="col" data-column="callbacks">' in html and "&lt;x&gt;" in html
    assert '<script src="/ui/static/reports.js" defer>' in html
    assert '<script src="/ui/static/vendor/chartjs/chart.umd.js" defer>' in html


def test_the_pager_goes_forward_and_back_through_the_trail():
    first = pager_links("leg=A", "", [""], "C1")
    assert first == {"next": "?leg=A&after=C1&trail=-"}
    second = pager_links("leg=A", "C1", ["-"], "C2")
    assert second["next"] == "?leg=A&after=C2&trail=-.C1"
    assert second["previous"] == "?leg=A" and second["first"] == "?leg=A"
    third = pager_links("leg=A", "C2", ["-", "C1"], None)
    assert "next" not in third and third["previous"] == "?leg=A&after=C1&trail=-"
    assert pager_links("", "C2", ["-", "C1"], None)["first"] == "?"


def test_the_trail_is_bounded():
    trail = [f"C{i}" for i in range(100)]
    nav = pager_links("", "C100", trail, "C101")
    kept = nav["next"].split("trail=")[1].split(".")
    assert len(kept) == MAX_TRAIL + 1 and kept[-1] == "C100" and kept[0] == f"C{100 - MAX_TRAIL}"


def test_the_live_list_stops_polling_after_a_while():
    assert 'hx-get="/ui/callbacks/live?polls=300"' in live_page(polls=MAX_POLLS - 1)
    stopped = live_page(polls=MAX_POLLS)
    assert "hx-get" not in stopped and 'id="polling-stopped"' in stopped
    assert '<tr data-callback-id="cbL1">' in stopped
