"""One Content-Type parse per distinct header value, not a new class per POST.

``twisted.web.http.Request.requestReceived`` parses the Content-Type of every POST with a
body through ``email.message.EmailMessage``, whose header registry builds a new class
(``_ContentTypeHeader``) on each call: a type is a reference cycle (its ``__mro__`` names it),
so every POST to the callback API left a class, its dict and tuples for the garbage collector
(88 classes in one young collection at 60 callbacks/s, docs/bench-callbacks.md "Steady
state"). The parse depends only on the header's bytes, so its result is cached: the few
values clients send are parsed once; a stranger cycling through values costs what it did.
"""

from __future__ import annotations

import functools

from twisted.web import http

CACHE_SIZE = 64     # distinct Content-Type values remembered (least recently used dropped)


def cache_content_type_parse() -> bool:
    """Wrap Twisted's private ``_parseContentType`` in a bounded cache (idempotent).

    Returns False, changing nothing, when this Twisted has no such function.
    """
    parse = getattr(http, "_parseContentType", None)
    if parse is None:
        return False
    if not hasattr(parse, "cache_info"):
        http._parseContentType = functools.lru_cache(maxsize=CACHE_SIZE)(parse)
    return True
