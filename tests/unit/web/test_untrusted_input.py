"""Checks on client text shared by both APIs (issue 14 item 10)."""

import pytest

from cbserver.web.untrusted import MAX_DEPTH, UntrustedInput, check_text, load_json


def test_deep_nesting_is_refused_by_the_parser_and_by_the_walk():
    with pytest.raises(UntrustedInput) as info:
        load_json(b"[" * 20000 + b"]" * 20000)
    assert info.value.field == "body" and not info.value.syntax
    with pytest.raises(UntrustedInput):
        load_json(b'{"a": ' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}")
    value = load_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)  # exactly MAX_DEPTH: accepted
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == []


def test_nul_in_a_key_or_a_value_is_refused_and_syntax_errors_are_marked():
    for raw in (b'{"a": "x\\u0000"}', b'{"a\\u0000": 1}', b'[["\\u0000"]]'):
        with pytest.raises(UntrustedInput):
            load_json(raw)
    with pytest.raises(UntrustedInput) as info:
        load_json(b"{nope")
    assert info.value.syntax
    with pytest.raises(UntrustedInput):
        load_json(b"\xff")
    assert load_json(b'{"a": [1, {"b": "c"}]}') == {"a": [1, {"b": "c"}]}


def test_check_text():
    check_text("path", "ok", b"ok")
    with pytest.raises(UntrustedInput) as info:
        check_text("query", "ok", b"n\x00")
    assert info.value.field == "query"
