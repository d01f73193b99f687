"""Perl-style substitution rules (``s/PATTERN/REPLACEMENT/FLAGS``), compiled safely for Python.

The operator's "Account ID translation rule" (e.g. ``s/^/cb/``) is written in
Perl syntax. ``compile_rule`` checks it once, at config-load time, translates
the supported subset of Perl regular expressions to Python ``re`` syntax, and
returns a ``TranslationRule`` whose ``apply`` rewrites a number. Anything
outside the subset is refused with ``TranslationRuleError`` naming the problem;
nothing is ever evaluated as code. The supported subset is documented in
``docs/translation.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cbserver.translationerrors import (  # noqa: F401 - re-exported
    TranslationError,
    TranslationInputError,
    TranslationRuleError,
)
from cbserver.translationpattern import (  # noqa: F401 - re-exported
    _CONTROL,
    MAX_VARIABLE_REPEATS,
    _hex_escape,
    _PatternTranslator,
)

MAX_RULE_CHARS = 256
MAX_SUBJECT_CHARS = 64
ALLOWED_FLAGS = frozenset("gi")
SIMPLE_DELIMITERS = frozenset("/#!,:;%~=")
BRACKETS = {"{": "}", "(": ")", "[": "]", "<": ">"}


def _split(rule: str) -> tuple[str, str, str]:
    """Split ``s<d>pattern<d>replacement<d>flags`` into its three parts."""
    text = rule.strip()
    if len(text) < 2 or text[0] != "s":
        raise TranslationRuleError(rule, "must be a substitution of the form s/PATTERN/REPLACEMENT/")
    delimiter = text[1]
    if delimiter in BRACKETS:
        pattern, pos = _read_bracketed(rule, text, 1)
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            raise TranslationRuleError(rule, "missing the replacement part")
        if text[pos] in BRACKETS:
            replacement, pos = _read_bracketed(rule, text, pos)
        else:
            _check_delimiter(rule, text[pos])
            replacement, pos = _read_until(rule, text, pos + 1, text[pos])
    else:
        _check_delimiter(rule, delimiter)
        pattern, pos = _read_until(rule, text, 2, delimiter)
        replacement, pos = _read_until(rule, text, pos, delimiter)
    return pattern, replacement, text[pos:]


def _check_delimiter(rule: str, delimiter: str) -> None:
    if delimiter not in SIMPLE_DELIMITERS:
        allowed = " ".join(sorted(SIMPLE_DELIMITERS)) + " {} () [] <>"
        raise TranslationRuleError(rule, f"delimiter {delimiter!r} is not supported ({allowed})")


def _read_until(rule: str, text: str, pos: int, delimiter: str) -> tuple[str, int]:
    """Read up to an unescaped ``delimiter``; return the part (escapes kept) and the next index."""
    start = pos
    while pos < len(text):
        if text[pos] == "\\":
            pos += 2
            continue
        if text[pos] == delimiter:
            return text[start:pos], pos + 1
        pos += 1
    raise TranslationRuleError(rule, f"missing closing delimiter {delimiter!r}")


def _read_bracketed(rule: str, text: str, pos: int) -> tuple[str, int]:
    """Read a balanced ``{...}``-style part starting at the opening bracket at ``pos``."""
    opening, closing = text[pos], BRACKETS[text[pos]]
    depth, start, pos = 1, pos + 1, pos + 1
    while pos < len(text):
        ch = text[pos]
        if ch == "\\":
            pos += 2
            continue
        if ch == opening:
            depth += 1
        elif ch == closing:
            depth -= 1
            if depth == 0:
                return text[start:pos], pos + 1
        pos += 1
    raise TranslationRuleError(rule, f"missing closing {closing!r}")


def _translate_replacement(rule: str, text: str, groups: int) -> tuple[str | int, ...]:
    """Parse a Perl replacement into literal strings and group numbers (0 = whole match)."""
    pieces: list[str | int] = []
    literal: list[str] = []

    def fail(problem: str) -> TranslationRuleError:
        return TranslationRuleError(rule, f"replacement: {problem}")

    def group(number: int) -> None:
        if number > groups:
            raise fail(f"refers to group {number} but the pattern has {groups}")
        if literal:
            pieces.append("".join(literal))
            literal.clear()
        pieces.append(number)

    pos = 0
    while pos < len(text):
        ch = text[pos]
        pos += 1
        nxt = text[pos : pos + 1]
        if ch == "$":
            if nxt.isdigit():
                end = pos
                while end < len(text) and text[end].isdigit():
                    end += 1
                if text[pos] == "0":
                    raise fail("$0 is not a capture group")
                group(int(text[pos:end]))
                pos = end
            elif nxt == "{":
                end = text.find("}", pos)
                inner = text[pos + 1 : end] if end > 0 else ""
                if not inner.isdigit() or inner.startswith("0"):
                    raise fail("only ${N} with a group number N is supported")
                group(int(inner))
                pos = end + 1
            elif nxt == "&":
                group(0)
                pos += 1
            else:
                shown = "$" + nxt if nxt else "a trailing '$'"
                raise fail(f"{shown} would interpolate a Perl variable; write \\$ for a dollar")
        elif ch == "@" and (nxt.isalnum() or nxt in ("_", "{")):
            raise fail("'@' before a name would interpolate a Perl array; write \\@")
        elif ch == "\\":
            if not nxt:
                raise fail("trailing backslash")
            pos += 1
            if nxt in "123456789":
                if text[pos : pos + 1].isdigit():
                    raise fail("use ${N} for group numbers above 9")
                group(int(nxt))
            elif nxt in "uUlLEQ":
                raise fail(f"case-changing escape \\{nxt} is not supported")
            elif nxt in _CONTROL:
                literal.append(_CONTROL[nxt])
            elif nxt == "x":
                try:
                    char, pos = _hex_escape(text, pos)
                except ValueError as exc:
                    raise fail(str(exc)) from None
                literal.append(char)
            elif nxt.isascii() and nxt.isalnum():
                raise fail(f"unsupported escape \\{nxt}")
            else:
                literal.append(nxt)
        else:
            literal.append(ch)
    if literal:
        pieces.append("".join(literal))
    return tuple(pieces)


@dataclass(frozen=True)
class TranslationRule:
    """A compiled ``s///`` rule: the Perl source, its Python pattern and the replacement plan."""

    source: str
    python_pattern: str
    replacement: tuple[str | int, ...]
    global_: bool
    ignore_case: bool
    regex: re.Pattern[str]

    def apply(self, subject: str) -> str:
        """Return ``subject`` rewritten by the rule (unchanged when the pattern does not match)."""
        if not isinstance(subject, str):
            raise TranslationInputError(f"subject: must be text, got {type(subject).__name__}")
        if len(subject) > MAX_SUBJECT_CHARS:
            raise TranslationInputError(f"subject: longer than {MAX_SUBJECT_CHARS} characters")
        pieces = self.replacement

        def replace(match: re.Match[str]) -> str:
            return "".join(p if isinstance(p, str) else (match.group(p) or "") for p in pieces)

        return self.regex.sub(replace, subject, count=0 if self.global_ else 1)


def compile_rule(rule: str) -> TranslationRule:
    """Check and compile a Perl ``s///`` rule; raise ``TranslationRuleError`` naming the problem."""
    if not isinstance(rule, str):
        raise TranslationRuleError(repr(rule), "must be text")
    if len(rule) > MAX_RULE_CHARS:
        raise TranslationRuleError(rule[:40] + "...", f"longer than {MAX_RULE_CHARS} characters")
    pattern, replacement, flags = _split(rule)
    for flag in flags:
        if flag == "e":
            raise TranslationRuleError(rule, "flag 'e' (evaluate code) is not allowed")
        if flag not in ALLOWED_FLAGS:
            raise TranslationRuleError(rule, f"flag {flag!r} is not supported (only g and i)")
    if len(set(flags)) != len(flags):
        raise TranslationRuleError(rule, "a flag is repeated")
    if not pattern:
        raise TranslationRuleError(
            rule, "pattern: an empty pattern means 'the last successful pattern' in Perl"
        )
    translator = _PatternTranslator(rule, pattern)
    python_pattern = translator.translate()
    pieces = _translate_replacement(rule, replacement, translator.groups)
    options = re.ASCII | (re.IGNORECASE if "i" in flags else 0)
    try:
        regex = re.compile(python_pattern, options)
    except re.error as exc:  # the translator should make this unreachable
        raise TranslationRuleError(rule, f"pattern: {exc}") from exc
    return TranslationRule(rule, python_pattern, pieces, "g" in flags, "i" in flags, regex)
