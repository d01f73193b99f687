"""Checks on text a client sends, shared by the public JSON API and the admin API.

A request body, path or query string comes from anyone who can reach the port. Two shapes
of it used to escape the typed errors and end as a 500 (issue 14 item 10): JSON nested
deeply enough to exhaust Python's recursion limit (``RecursionError`` from the parser, or
later from code walking the value), and a NUL character, which PostgreSQL refuses in any
text value (psycopg2 raises ``ValueError`` while building the query). Both are the client's
mistake, so each API answers 400 in its JSON envelope: ``load_json`` and ``check_text`` raise
``UntrustedInput``, which each API maps to its own 400.
"""

from __future__ import annotations

import json

MAX_DEPTH = 32  # far deeper than any body either API accepts (theirs are 1 or 2 levels)


class UntrustedInput(ValueError):
    """Input no API accepts: ``field`` names where it was (``body``, ``path``, ``query``);
    ``syntax`` is true when the body is not JSON at all (the APIs word that case as before)."""

    def __init__(self, field: str, reason: str, syntax: bool = False):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.syntax = syntax


def load_json(raw: bytes, parse_float=None):
    """Parse a JSON body; ``UntrustedInput`` if it is not UTF-8 JSON, is nested deeper than
    ``MAX_DEPTH`` or holds a NUL character in a key or a string."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_float=parse_float)
    except RecursionError:
        raise UntrustedInput("body", f"nested deeper than {MAX_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise UntrustedInput("body", str(e), syntax=True) from None
    _check_value(value)
    return value


def _check_value(value) -> None:
    """Walk a parsed value without recursion: depth and NULs (``UntrustedInput``)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise UntrustedInput("body", "a NUL character is not allowed in a value")
        elif isinstance(item, dict | list):
            if depth > MAX_DEPTH:
                raise UntrustedInput("body", f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)


def check_text(field: str, *values: bytes | str) -> None:
    """``UntrustedInput`` if any of ``values`` (a path, query arguments) holds a NUL."""
    for v in values:
        if (b"\x00" if isinstance(v, bytes) else "\x00") in v:
            raise UntrustedInput(field, "a NUL character is not allowed")
