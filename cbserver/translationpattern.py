"""Translation of a Perl pattern (the ``PATTERN`` of ``s/PATTERN/REPLACEMENT/FLAGS``) into
Python ``re`` syntax, checking the supported subset (``docs/translation.md``) as it goes; used
by ``cbserver/translation.py``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cbserver.translationerrors import TranslationRuleError

MAX_VARIABLE_REPEATS = 4
_UNBOUNDED = 1 << 30
_CONTROL = {"t": "\t", "n": "\n", "r": "\r", "f": "\f", "e": "\x1b", "a": "\x07"}
_POSIX = {
    "digit": "0-9", "alpha": "a-zA-Z", "alnum": "0-9a-zA-Z", "upper": "A-Z",
    "lower": "a-z", "xdigit": "0-9A-Fa-f", "space": r"\s", "word": r"\w",
}  # fmt: skip
_QUANTIFIER = re.compile(r"\{(\d*)(,?)(\d*)\}")
_HEX = "0123456789abcdefABCDEF"


def _hex_escape(src: str, pos: int) -> tuple[str, int]:
    """Decode the digits of ``\\xH``, ``\\xHH`` or ``\\x{H...}`` starting at ``pos``."""
    if src[pos : pos + 1] == "{":
        end = src.find("}", pos)
        digits = src[pos + 1 : end] if end > 0 else ""
        if not digits or len(digits) > 6 or any(c not in _HEX for c in digits):
            raise ValueError("\\x{...} needs 1 to 6 hex digits")
        pos = end + 1
    else:
        end = pos
        while end < len(src) and end < pos + 2 and src[end] in _HEX:
            end += 1
        digits = src[pos:end] or "0"
        pos = end
    code = int(digits, 16)
    if code > 0x10FFFF:
        raise ValueError("\\x{...} is beyond Unicode")
    return chr(code), pos


@dataclass
class _Frame:
    """One open group while translating: what it contains, for the nesting checks."""

    capturing: int | None  # group number, or None
    variable: bool = False  # contains a quantifier whose count varies
    alternation: bool = False


class _PatternTranslator:
    """Translate one Perl pattern into Python ``re`` syntax, checking the subset as it goes."""

    def __init__(self, rule: str, pattern: str):
        self.rule, self.src, self.pos = rule, pattern, 0
        self.out: list[str] = []
        self.stack = [_Frame(None)]
        self.groups = 0
        self.closed: set[int] = set()
        self.repeats = 0
        self.last: str | _Frame | None = None  # "atom", "anchor", a closed group's frame, or None

    def fail(self, problem: str) -> TranslationRuleError:
        return TranslationRuleError(self.rule, f"pattern: {problem}")

    def translate(self) -> str:
        src = self.src
        while self.pos < len(src):
            ch = src[self.pos]
            self.pos += 1
            if ch == "\\":
                self.escape()
            elif ch == "(":
                self.open_group()
            elif ch == ")":
                self.close_group()
            elif ch == "|":
                self.stack[-1].alternation = True
                self.out.append("|")
                self.last = None
            elif ch == "[":
                self.out.append(self.char_class())
                self.last = "atom"
            elif ch in "*+?{":
                self.quantifier(ch)
            elif ch in "^":
                self.emit("^", "anchor")
            elif ch == "$":
                following = src[self.pos : self.pos + 1]
                if following not in ("", ")", "|"):
                    raise self.fail(
                        f"'${following}' would interpolate a Perl variable; escape a literal dollar as \\$"
                    )
                self.emit("$", "anchor")
            elif ch == "@" and self.pos < len(src) and (src[self.pos].isalnum() or src[self.pos] in "_{"):
                raise self.fail("'@' before a name would interpolate a Perl array; write \\@")
            elif ch == ".":
                self.emit(".", "atom")
            else:
                self.emit(re.escape(ch), "atom")
        if len(self.stack) > 1:
            raise self.fail("unclosed '('")
        return "".join(self.out)

    def emit(self, text: str, kind: str) -> None:
        self.out.append(text)
        self.last = kind

    def escape(self) -> None:
        if self.pos >= len(self.src):
            raise self.fail("trailing backslash")
        ch = self.src[self.pos]
        self.pos += 1
        if ch in "dDwWsS":
            self.emit("\\" + ch, "atom")
        elif ch in "bBA":
            self.emit("\\" + ch, "anchor")
        elif ch == "z":
            self.emit(r"\Z", "anchor")
        elif ch == "Z":
            self.emit(r"(?=\n?\Z)", "anchor")
        elif ch in "123456789":
            if self.src[self.pos : self.pos + 1].isdigit():
                raise self.fail("multi-digit backreferences and octal escapes are not supported")
            if int(ch) not in self.closed:
                raise self.fail(f"\\{ch} refers to a group that is not closed before it")
            self.emit(f"(?:\\{ch})", "atom")
        elif ch.isascii() and ch.isalnum():
            self.emit(re.escape(self.char_escape(ch)), "atom")
        else:
            self.emit(re.escape(ch), "atom")

    def char_escape(self, ch: str) -> str:
        """The character for ``\\t``, ``\\xHH``, ``\\x{H..}`` and friends; refuse the rest."""
        if ch in _CONTROL:
            return _CONTROL[ch]
        if ch == "x":
            return self.hex_escape()
        raise self.fail(f"unsupported escape \\{ch}")

    def hex_escape(self) -> str:
        try:
            char, self.pos = _hex_escape(self.src, self.pos)
        except ValueError as exc:
            raise self.fail(str(exc)) from None
        return char

    def open_group(self) -> None:
        src, pos = self.src, self.pos
        if src.startswith("?", pos):
            if src.startswith(("?{", "??{"), pos):
                raise self.fail("code constructs (?{...}) and (??{...}) are not allowed")
            for opener in ("?:", "?=", "?!", "?<=", "?<!"):
                if src.startswith(opener, pos):
                    self.pos += len(opener)
                    self.out.append("(" + opener)
                    frame = _Frame(None)
                    frame.capturing = -1 if opener != "?:" else None  # -1 marks an assertion
                    self.stack.append(frame)
                    self.last = None
                    return
            raise self.fail(f"group construct '({src[pos : pos + 3]}' is not supported")
        if src.startswith("*", pos):
            raise self.fail("backtracking control verbs (*...) are not supported")
        self.groups += 1
        self.out.append("(")
        self.stack.append(_Frame(self.groups))
        self.last = None

    def close_group(self) -> None:
        if len(self.stack) == 1:
            raise self.fail("unmatched ')'")
        frame = self.stack.pop()
        parent = self.stack[-1]
        parent.variable |= frame.variable
        parent.alternation |= frame.alternation
        self.out.append(")")
        if frame.capturing == -1:
            self.last = "anchor"
            return
        if frame.capturing is not None:
            self.closed.add(frame.capturing)
        self.last = frame

    def quantifier(self, ch: str) -> None:
        if ch == "{":
            match = _QUANTIFIER.match(self.src, self.pos - 1)
            if not match or not (match.group(1) or match.group(3)):
                raise self.fail("unescaped '{' that is not a quantifier; write \\{")
            low = int(match.group(1) or 0)
            high = int(match.group(3)) if match.group(3) else (_UNBOUNDED if match.group(2) else low)
            if high < low:
                raise self.fail(f"quantifier {match.group(0)} has max below min")
            text = f"{{{low},{'' if high == _UNBOUNDED else high}}}" if low != high else f"{{{low}}}"
            self.pos = match.end()
        else:
            low, high = {"*": (0, _UNBOUNDED), "+": (1, _UNBOUNDED), "?": (0, 1)}[ch]
            text = ch
        if self.last is None:
            raise self.fail(f"quantifier {text!r} has nothing to repeat")
        if self.last == "anchor":
            raise self.fail(f"quantifier {text!r} follows an anchor or assertion")
        if self.last == "quantified":
            raise self.fail(f"quantifier {text!r} follows another quantifier")
        if self.src[self.pos : self.pos + 1] == "+":
            raise self.fail("possessive quantifiers are not supported")
        if self.src[self.pos : self.pos + 1] == "?":
            self.pos += 1
            text += "?"
        if isinstance(self.last, _Frame) and high > 1 and (self.last.variable or self.last.alternation):
            raise self.fail(
                "a repeated group containing a variable quantifier or '|' "
                "(such as (a+)+) can take exponential time; rewrite it"
            )
        if low != high and high > 1:
            self.repeats += 1
            self.stack[-1].variable = True
            if self.repeats > MAX_VARIABLE_REPEATS:
                raise self.fail(f"more than {MAX_VARIABLE_REPEATS} variable repeats")
        self.out.append(text)
        self.last = "quantified"

    def char_class(self) -> str:
        src = self.src
        parts = ["["]
        if src.startswith("^", self.pos):
            parts.append("^")
            self.pos += 1
        first = True
        previous: str | None = None  # last single character, for ranges
        while True:
            if self.pos >= len(src):
                raise self.fail("unclosed '['")
            ch = src[self.pos]
            self.pos += 1
            if ch == "]" and not first:
                parts.append("]")
                return "".join(parts)
            first = False
            if ch == "[" and src.startswith(":", self.pos):
                end = src.find(":]", self.pos + 1)
                name = src[self.pos + 1 : end] if end > 0 else ""
                if name not in _POSIX:
                    raise self.fail(f"POSIX class [:{name}:] is not supported")
                parts.append(_POSIX[name])
                self.pos = end + 2
                previous = None
                continue
            if ch == "$" or (ch == "@" and self.pos < len(src) and src[self.pos].isalnum()):
                raise self.fail(f"escape '{ch}' inside a character class as \\{ch}")
            if ch == "-" and previous is not None and not src.startswith("]", self.pos):
                high, _ = self.class_member()
                if high is None:
                    raise self.fail("a range cannot end in a class escape like \\d")
                if ord(high) < ord(previous):
                    raise self.fail(f"reversed range {previous}-{high} in character class")
                parts.append("-" + re.escape(high))
                previous = None
                continue
            self.pos -= 1
            previous, text = self.class_member()
            parts.append(text)

    def class_member(self) -> tuple[str | None, str]:
        """Consume one class member: (its character or None for a set like \\d, Python text)."""
        if self.pos >= len(self.src):
            raise self.fail("unclosed '['")
        ch = self.src[self.pos]
        self.pos += 1
        if ch != "\\":
            return ch, re.escape(ch)
        if self.pos >= len(self.src):
            raise self.fail("trailing backslash")
        ch = self.src[self.pos]
        self.pos += 1
        if ch in "dDwWsS":
            return None, "\\" + ch
        if ch == "b":
            char = "\b"
        elif ch.isascii() and ch.isalnum():
            char = self.char_escape(ch)
        else:
            char = ch
        return char, re.escape(char)
