"""Jinja2 templates for the web pages, always autoescaped.

Every HTML page of cbserver (the callback page, the operator's console) is rendered from
Jinja2 templates shipped as package data. Autoescaping is on for every template whatever its
name, so a value is escaped unless a template marks it ``|safe`` on purpose (nothing that comes
from a caller or an operator is ever so marked). ``StrictUndefined`` turns a misspelt variable
into an error in the tests instead of an empty string on a page.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jinja2

from cbserver.billing.currencies import format_amount


@functools.lru_cache(maxsize=8)
def environment(folder: str) -> jinja2.Environment:
    """The (cached) environment for the templates in ``folder`` (an absolute path)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=True,  # every template, not only *.html: nothing is left unescaped by name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False,
    )
    env.filters["money"] = format_amount
    return env


def render(folder: Path | str, name: str, /, **context) -> bytes:
    """Template ``name`` of ``folder`` rendered with ``context``, as UTF-8 bytes."""
    return environment(str(folder)).get_template(name).render(**context).encode("utf-8")
