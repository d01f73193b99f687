"""A POST's Content-Type is read without the ``email`` package: no class built per POST, no
super-linear parse of a hostile value, forms still found.

Twisted parses it through ``email``'s header registry, which creates a class per call (a
reference cycle left for the garbage collector by every POST to the callback API, issue 17
item 6) and whose parser is super-linear on some values. Driven through Twisted's real
``Request.requestReceived``; the collector is paused so every class built stays countable.
"""

from __future__ import annotations

import gc
from io import BytesIO

import pytest
from twisted.web import http
from twisted.web.test.requesthelper import DummyChannel

from cbserver.web.contenttype import MALFORMED, install_media_type_parse, media_type

POSTS = 50
# 15 KB of double quotes after the type: 0.67 s of CPU in the email parse (measured once).
HOSTILE = b'application/json; a="' + b'"' * 15000


@pytest.fixture
def paused_collector():
    """The collector off for the test, so classes built by the requests stay alive to count."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def header_classes() -> int:
    """Classes the email header registry built that are still alive."""
    return sum(1 for o in gc.get_objects() if isinstance(o, type)
               and o.__name__ == "_ContentTypeHeader")


def post(ctype: bytes, body: bytes = b"{}") -> http.Request:
    """One POST with ``body`` and ``ctype`` through the real request parsing."""
    request = http.Request(DummyChannel(), False)
    request.requestHeaders.setRawHeaders(b"content-type", [ctype])
    request.requestHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
    request.content = BytesIO()
    request.content.write(body)
    request.requestReceived(b"POST", b"/api/v1/callbacks", b"HTTP/1.1")
    return request


def test_posts_build_no_class_at_all(paused_collector):
    assert install_media_type_parse()
    assert install_media_type_parse()  # idempotent
    before = header_classes()
    for ctype in (b"application/json", b"application/x-www-form-urlencoded", HOSTILE,
                  b"text/plain; charset=utf-8"):
        for _ in range(POSTS // 4):
            post(ctype)
    assert header_classes() == before


def test_forms_are_found_whatever_their_case_and_parameters():
    install_media_type_parse()
    form = post(b"Application/X-WWW-Form-Urlencoded; charset=utf-8", b"phone=123&a=1")
    assert form.args == {b"phone": [b"123"], b"a": [b"1"]}
    assert post(b" application/x-www-form-urlencoded\t;x=y", b"a=1").args == {b"a": [b"1"]}
    multipart = b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--XyZ--\r\n'
    assert post(b"multipart/form-data; boundary=XyZ", multipart).args == {b"a": [b"1"]}


def test_json_malformed_and_hostile_values_are_no_form_and_keep_their_body():
    install_media_type_parse()
    for ctype in (b"application/json", b"a=1", b"application/x-www-form-urlencoded/x",
                  b"=?utf-8?q?application/x-www-form-urlencoded?=",  # RFC 2047: not HTTP's
                  b"application / x-www-form-urlencoded", b"\xff\xfe/\x00", b";", HOSTILE,
                  b"x" * 16000 + b"/form"):
        request = post(ctype, b"a=1&b=2")
        assert request.args == {}, ctype
        assert request.content.read() == b"a=1&b=2"


def test_media_type_reads_rfc9110_media_types():
    assert media_type(b"Application/JSON; charset=UTF-8") == b"application/json"
    assert media_type(b"multipart/form-data;boundary=x") == b"multipart/form-data"
    assert media_type(b"vnd.a+json/x.y-z_1") == b"vnd.a+json/x.y-z_1"
    for bad in (b"", b"json", b"/json", b"application/", b"a/b/c", b"a b/c", b'"a/b"', HOSTILE[:1]):
        assert media_type(bad) == MALFORMED, bad
    assert media_type(HOSTILE) == b"application/json"
