"""A POST's media type read in one linear pass, instead of through the ``email`` package.

``twisted.web.http.Request.requestReceived`` reads the Content-Type of every POST with a body
(through its private ``_parseContentType``) only to tell whether the body is a form
(``application/x-www-form-urlencoded`` or ``multipart/form-data``) whose fields go to
``request.args``. Twisted's version parses the header with ``email.message.EmailMessage``,
which costs three ways:

- CPU: about a tenth of a millisecond per POST (2 % of the server's CPU per callback,
  docs/bench-callbacks.md), and far worse on hostile input: the header registry's parser is
  super-linear, 15 KB of double quotes took 0.67 s of CPU (one request, one header line);
- garbage: the registry builds a new class per call, a reference cycle left for the collector
  by every POST (docs/bench-callbacks.md "Steady state");
- meaning: it decodes RFC 2047 encoded words, which HTTP does not have (RFC 9110 5.5).

Only the media type is needed, so ``media_type`` reads it as RFC 9110 8.3.1 defines it
(``type "/" subtype``, tokens, case-insensitive, parameters after ``;`` ignored), in one pass
over the bytes and building nothing; ``install_media_type_parse`` puts it in Twisted's place.
A malformed value reads as ``text/plain``, as the ``email`` parse defaulted, so it is never a
form; the answer to any Content-Type is what it was, except the encoded-word forms and
whitespace inside the media type, which are no longer taken for forms.
"""

from __future__ import annotations

import re

from twisted.web import http

# RFC 9110 5.6.2 tchar, then "/" and tchar again, to the end (no nested quantifier: linear).
_MEDIA_TYPE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+/[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
MALFORMED = b"text/plain"  # what the email parse gave for a malformed value (RFC 2045 5.2)


def media_type(line: bytes) -> bytes:
    """The lower-cased ``type/subtype`` of a Content-Type value; ``text/plain`` if malformed."""
    value = line.split(b";", 1)[0].strip(b" \t").lower()
    return value if _MEDIA_TYPE.match(value) else MALFORMED


def install_media_type_parse() -> bool:
    """Put ``media_type`` in place of Twisted's private ``_parseContentType`` (idempotent).

    Returns False, changing nothing, when this Twisted has no such function (its form parse
    moved: the tests of this module then fail, rather than the server silently paying).
    """
    if getattr(http, "_parseContentType", None) is None:
        return False
    http._parseContentType = media_type
    return True
