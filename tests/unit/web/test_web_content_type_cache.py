"""A POST's Content-Type is parsed without building a new class each time.

Twisted parses it through ``email``'s header registry, which creates a class per call: a
reference cycle left for the garbage collector by every POST to the callback API (issue 17
item 6). Driven through Twisted's real ``Request.requestReceived``; the collector is paused so
every class built stays countable.
"""

from __future__ import annotations

import gc
from io import BytesIO

import pytest
from twisted.web import http
from twisted.web.test.requesthelper import DummyChannel

from cbserver.web.contenttype import CACHE_SIZE, cache_content_type_parse

POSTS = 50


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


def post(ctype: bytes) -> http.Request:
    """One POST with a body and ``ctype`` through the real request parsing."""
    request = http.Request(DummyChannel(), False)
    request.requestHeaders.setRawHeaders(b"content-type", [ctype])
    request.requestHeaders.setRawHeaders(b"content-length", [b"2"])
    request.content = BytesIO()
    request.content.write(b"{}")
    request.requestReceived(b"POST", b"/api/v1/callbacks", b"HTTP/1.1")
    return request


def test_posts_build_no_class_each(paused_collector):
    assert cache_content_type_parse()
    assert cache_content_type_parse()           # idempotent: wrapped once
    post(b"application/json")                    # the first parse builds what it builds
    after_first = header_classes()
    for _ in range(POSTS):
        post(b"application/json")
    assert header_classes() == after_first


def test_form_posts_still_parse_and_strangers_are_bounded(paused_collector):
    cache_content_type_parse()
    form = post(b"Application/X-WWW-Form-Urlencoded; charset=utf-8")
    assert form.args == {}                      # parsed as a form: the body "{}" has no pair
    request = http.Request(DummyChannel(), False)
    request.requestHeaders.setRawHeaders(b"content-type", [b"application/x-www-form-urlencoded"])
    request.content = BytesIO(b"phone=123")
    request.content.seek(0, 2)
    request.requestReceived(b"POST", b"/", b"HTTP/1.1")
    assert request.args == {b"phone": [b"123"]}
    for n in range(3 * CACHE_SIZE):             # a stranger cycling through values
        post(b"application/x-%d" % n)
    assert http._parseContentType.cache_info().currsize <= CACHE_SIZE
