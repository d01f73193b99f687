"""The console's query parameters (pure): each filter parsed, everything else refused by name."""

import datetime as dt

import pytest

from cbserver.billing.validation import ValidationError
from cbserver.callback.consolefilters import (
    MAX_LIMIT,
    decode_cursor,
    encode_cursor,
    parse_callback_query,
    parse_report_range,
    parse_xdr_filter,
)

UTC = dt.UTC


def test_a_full_filter_is_parsed_with_times_in_utc():
    f = parse_xdr_filter({"from": "2026-06-01", "to": "2026-06-02T10:00:00+02:00", "account": "acc1",
                          "customer": "7", "prefix": "4420", "cause": "legb_busy", "node": "node-2",
                          "leg": "B", "limit": "1000"})
    assert f.start == dt.datetime(2026, 6, 1, tzinfo=UTC)
    assert f.end == dt.datetime(2026, 6, 2, 8, tzinfo=UTC)
    assert (f.account, f.customer, f.prefix, f.cause, f.node, f.leg, f.limit) == (
        "acc1", "7", "4420", "legb_busy", "node-2", "B", MAX_LIMIT)
    assert parse_xdr_filter({}).limit == 50 and parse_xdr_filter({"format": "csv"}).after is None


@pytest.mark.parametrize(("args", "field"), [
    ({"limit": "1001"}, "limit"), ({"limit": "-1"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"from": "2026-02-30"}, "from"), ({"to": "now"}, "to"),
    ({"from": "2026-06-02", "to": "2026-06-02"}, "to"),
    ({"prefix": "44%"}, "prefix"), ({"prefix": "+44"}, "prefix"), ({"prefix": "1" * 21}, "prefix"),
    ({"cause": "LEGB_BUSY"}, "cause"), ({"cause": "a' OR '1'='1"}, "cause"),
    ({"account": "a b"}, "account"), ({"account": "x" * 65}, "account"), ({"node": "n;1"}, "node"),
    ({"leg": "AB"}, "leg"), ({"format": "xlsx"}, "format"), ({"sort": "id"}, "sort"),
    ({"after": "not-a-cursor"}, "after"), ({"from": "0001-01-01"}, "from"),
])
def test_bad_parameters_name_their_field(args, field):
    with pytest.raises(ValidationError) as e:
        parse_xdr_filter(args)
    assert e.value.field == field


def test_cursors_round_trip_and_forgeries_are_refused():
    token = encode_cursor("2026-06-01T10:00:00.123Z", 42)
    assert decode_cursor(token) == (dt.datetime(2026, 6, 1, 10, 0, 0, 123000, tzinfo=UTC), 42)
    assert parse_xdr_filter({"after": token}).after[1] == 42
    cb = encode_cursor("2026-06-01T10:00:00.000Z", "ab12cd")
    assert decode_cursor(cb, numeric=False)[1] == "ab12cd"
    with pytest.raises(ValidationError):
        decode_cursor(cb)  # a callback's cursor is no xDR cursor
    with pytest.raises(ValidationError):
        decode_cursor(encode_cursor("2026-06-01T10:00:00.000Z", "9" * 19))  # beyond bigint


def test_report_range_defaults_to_the_last_30_days():
    now = dt.datetime(2026, 7, 1, tzinfo=UTC)
    r = parse_report_range({}, now)
    assert (r.start, r.end, r.account) == (now - dt.timedelta(days=30), now, None)
    with pytest.raises(ValidationError) as e:
        parse_report_range({"from": "2026-08-01"}, now)
    assert e.value.field == "to"


def test_callback_query():
    assert parse_callback_query({})["state"] == "live"
    assert parse_callback_query({"state": "past", "limit": "5"})["limit"] == 5
    with pytest.raises(ValidationError) as e:
        parse_callback_query({"state": "dead"})
    assert e.value.field == "state"
