"""The rate-formula language: a tiny, safe expression language over ``Decimal``.

A rate may carry a formula whose result replaces the standard charge of a leg.
The source is tokenized and parsed here by hand (recursive descent) into a tree
of Python closures; nothing is ever handed to ``eval``/``exec``/``compile``.
Parse once, when the rate is entered (errors carry a 1-based column), then
evaluate many times at rating time.

Grammar (lowest precedence first)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | cmp
    cmp     := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := ("-" | "+") unary | primary
    primary := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"

Truth values are numbers: comparisons give 1 or 0, any non-zero value is true.
All arithmetic is exact to 50 significant digits; the caller rounds the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)

#: Variables a formula may use; the rating core supplies every one of them.
VARIABLES = frozenset(
    {
        "duration",  # connected seconds of the leg
        "charged",  # seconds charged by the interval rule
        "first_interval",
        "next_interval",
        "first_price",  # per minute
        "next_price",  # per minute
        "amount",  # the standard charge, not yet rounded
        "peak",  # 1 when the peak tier applies, 0 off-peak
    }
)

#: Limits that keep a formula cheap to evaluate.
MAX_SOURCE_CHARS = 500
MAX_TOKENS = 200
MAX_DEPTH = 24
MAX_NUMBER_CHARS = 30
MAX_ROUND_PLACES = 10

_CTX = Context(prec=50, rounding=ROUND_HALF_UP, traps=[InvalidOperation, DivisionByZero, Overflow])
_ONE = Decimal(1)
_ZERO = Decimal(0)

Evaluator = Callable[[Mapping[str, Decimal]], Decimal]


class FormulaError(ValueError):
    """A formula that cannot be parsed; ``column`` is 1-based (None if unknown)."""

    field = "formula"

    def __init__(self, message: str, column: int | None = None):
        self.column = column
        self.reason = message
        where = f" at column {column}" if column is not None else ""
        super().__init__(f"formula: {message}{where}")


class FormulaEvaluationError(FormulaError):
    """A formula that parsed but failed while being evaluated."""


class FormulaDivisionByZero(FormulaEvaluationError):
    """A formula divided by zero at rating time."""


@dataclass(frozen=True, slots=True)
class _Token:
    """One lexeme of a formula and the column it starts at (for the error message)."""

    kind: str  # "num", "name", "op", "end"
    text: str
    column: int


_TWO_CHAR_OPS = ("<=", ">=", "==", "!=")
_ONE_CHAR_OPS = "+-*/(),<>"


def _tokenize(source: str) -> list[_Token]:
    """Split ``source`` into tokens, raising ``FormulaError`` at the bad column."""
    tokens: list[_Token] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        col = i + 1
        if ch in " \t":
            i += 1
        elif ch.isascii() and ch.isdigit():
            j = i
            while j < n and source[j].isascii() and source[j].isdigit():
                j += 1
            if j < n and source[j] == ".":
                j += 1
                if not (j < n and source[j].isascii() and source[j].isdigit()):
                    raise FormulaError("a decimal point must be followed by digits", j + 1)
                while j < n and source[j].isascii() and source[j].isdigit():
                    j += 1
            if j - i > MAX_NUMBER_CHARS:
                raise FormulaError(f"number longer than {MAX_NUMBER_CHARS} characters", col)
            tokens.append(_Token("num", source[i:j], col))
            i = j
        elif ch.isascii() and (ch.isalpha() or ch == "_"):
            j = i
            while j < n and source[j].isascii() and (source[j].isalnum() or source[j] == "_"):
                j += 1
            tokens.append(_Token("name", source[i:j], col))
            i = j
        elif source[i : i + 2] in _TWO_CHAR_OPS:
            tokens.append(_Token("op", source[i : i + 2], col))
            i += 2
        elif ch in _ONE_CHAR_OPS:
            tokens.append(_Token("op", ch, col))
            i += 1
        else:
            raise FormulaError(f"unexpected character {ch!r}", col)
        if len(tokens) > MAX_TOKENS:
            raise FormulaError(f"more than {MAX_TOKENS} tokens", col)
    tokens.append(_Token("end", "", n + 1))
    return tokens


def _truth(value: Decimal) -> bool:
    return value != _ZERO


def _bool(flag: bool) -> Decimal:
    return _ONE if flag else _ZERO


def _binary(op: str, left: Evaluator, right: Evaluator, column: int) -> Evaluator:
    """Build the closure for one binary operator."""
    if op == "+":
        return lambda env: _CTX.add(left(env), right(env))
    if op == "-":
        return lambda env: _CTX.subtract(left(env), right(env))
    if op == "*":
        return lambda env: _CTX.multiply(left(env), right(env))
    if op == "/":

        def divide(env: Mapping[str, Decimal]) -> Decimal:
            divisor = right(env)
            if divisor == _ZERO:
                raise FormulaDivisionByZero("division by zero", column)
            return _CTX.divide(left(env), divisor)

        return divide
    compare = {
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "==": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
    }[op]
    return lambda env: _bool(compare(left(env), right(env)))


def _round_places(value: Decimal, column: int) -> int:
    if value != value.to_integral_value() or not 0 <= value <= MAX_ROUND_PLACES:
        raise FormulaEvaluationError(
            f"round() places must be a whole number from 0 to {MAX_ROUND_PLACES}", column
        )
    return int(value)


def _call(name: str, args: list[Evaluator], column: int) -> Evaluator:
    """Build the closure for a function call; arity is checked at parse time."""
    if name == "if":
        cond, yes, no = args
        return lambda env: yes(env) if _truth(cond(env)) else no(env)
    if name == "min":
        return lambda env: min(arg(env) for arg in args)
    if name == "max":
        return lambda env: max(arg(env) for arg in args)
    (x, *rest) = args
    if name == "ceil":
        return lambda env: x(env).to_integral_value(rounding=ROUND_CEILING, context=_CTX)
    if name == "floor":
        return lambda env: x(env).to_integral_value(rounding=ROUND_FLOOR, context=_CTX)
    if name == "abs":
        return lambda env: x(env).copy_abs()
    (places,) = rest

    def round_(env: Mapping[str, Decimal]) -> Decimal:
        exponent = _ONE.scaleb(-_round_places(places(env), column))
        return x(env).quantize(exponent, rounding=ROUND_HALF_UP, context=_CTX)

    return round_


# name -> (minimum arguments, maximum arguments or None for any number)
_FUNCTIONS = {
    "if": (3, 3),
    "min": (2, None),
    "max": (2, None),
    "ceil": (1, 1),
    "floor": (1, 1),
    "abs": (1, 1),
    "round": (2, 2),
}
_KEYWORDS = frozenset({"and", "or", "not"})


class _Parser:
    """Recursive-descent parser turning tokens into evaluator closures."""

    def __init__(self, tokens: list[_Token]):
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.names: set[str] = set()

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, text: str) -> _Token:
        token = self.take()
        if token.text != text or token.kind not in ("op",):
            found = token.text or "end of formula"
            raise FormulaError(f"expected {text!r}, found {found!r}", token.column)
        return token

    def parse(self) -> Evaluator:
        result = self.expr()
        token = self.peek()
        if token.kind != "end":
            raise FormulaError(f"unexpected {token.text!r}", token.column)
        return result

    def expr(self) -> Evaluator:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FormulaError(f"nested deeper than {MAX_DEPTH} levels", self.peek().column)
        try:
            return self.or_()
        finally:
            self.depth -= 1

    def or_(self) -> Evaluator:
        left = self.and_()
        while self.peek().kind == "name" and self.peek().text == "or":
            self.take()
            a, b = left, self.and_()
            left = lambda env, a=a, b=b: _bool(_truth(a(env)) or _truth(b(env)))  # noqa: E731
        return left

    def and_(self) -> Evaluator:
        left = self.not_()
        while self.peek().kind == "name" and self.peek().text == "and":
            self.take()
            a, b = left, self.not_()
            left = lambda env, a=a, b=b: _bool(_truth(a(env)) and _truth(b(env)))  # noqa: E731
        return left

    def not_(self) -> Evaluator:
        if self.peek().kind == "name" and self.peek().text == "not":
            self.take()
            operand = self.nested(self.not_)
            return lambda env: _bool(not _truth(operand(env)))
        return self.cmp()

    def nested(self, rule: Callable[[], Evaluator]) -> Evaluator:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise FormulaError(f"nested deeper than {MAX_DEPTH} levels", self.peek().column)
        try:
            return rule()
        finally:
            self.depth -= 1

    def cmp(self) -> Evaluator:
        left = self.sum_()
        token = self.peek()
        if token.kind == "op" and token.text in ("<", "<=", ">", ">=", "==", "!="):
            self.take()
            left = _binary(token.text, left, self.sum_(), token.column)
            after = self.peek()
            if after.kind == "op" and after.text in ("<", "<=", ">", ">=", "==", "!="):
                raise FormulaError("comparisons cannot be chained; use 'and'", after.column)
        return left

    def sum_(self) -> Evaluator:
        left = self.product()
        while self.peek().kind == "op" and self.peek().text in ("+", "-"):
            token = self.take()
            left = _binary(token.text, left, self.product(), token.column)
        return left

    def product(self) -> Evaluator:
        left = self.unary()
        while self.peek().kind == "op" and self.peek().text in ("*", "/"):
            token = self.take()
            left = _binary(token.text, left, self.unary(), token.column)
        return left

    def unary(self) -> Evaluator:
        token = self.peek()
        if token.kind == "op" and token.text in ("-", "+"):
            self.take()
            operand = self.nested(self.unary)
            if token.text == "+":
                return operand
            return lambda env: operand(env).copy_negate()
        return self.primary()

    def primary(self) -> Evaluator:
        token = self.take()
        if token.kind == "num":
            value = Decimal(token.text)
            return lambda env: value
        if token.kind == "op" and token.text == "(":
            inner = self.expr()
            self.expect(")")
            return inner
        if token.kind == "name" and token.text not in _KEYWORDS:
            if self.peek().kind == "op" and self.peek().text == "(":
                return self.call(token)
            if token.text in _FUNCTIONS:
                raise FormulaError(f"function {token.text!r} needs arguments", token.column)
            if token.text not in VARIABLES:
                known = ", ".join(sorted(VARIABLES))
                raise FormulaError(
                    f"unknown variable {token.text!r} (known: {known})", token.column
                )
            name = token.text
            self.names.add(name)
            return lambda env: env[name]
        found = token.text or "end of formula"
        raise FormulaError(f"expected a number, variable or '(', found {found!r}", token.column)

    def call(self, name_token: _Token) -> Evaluator:
        name = name_token.text
        if name not in _FUNCTIONS:
            known = ", ".join(sorted(_FUNCTIONS))
            raise FormulaError(f"unknown function {name!r} (known: {known})", name_token.column)
        self.expect("(")
        args = [self.expr()]
        while self.peek().kind == "op" and self.peek().text == ",":
            self.take()
            args.append(self.expr())
        self.expect(")")
        low, high = _FUNCTIONS[name]
        if len(args) < low or (high is not None and len(args) > high):
            wanted = str(low) if low == high else f"at least {low}"
            raise FormulaError(
                f"{name}() takes {wanted} arguments, got {len(args)}", name_token.column
            )
        return _call(name, args, name_token.column)


@dataclass(frozen=True, eq=False)
class Formula:
    """A parsed formula: ``source`` as entered and the variables it reads."""

    source: str
    names: frozenset[str]
    _evaluate: Evaluator

    def evaluate(self, env: Mapping[str, Decimal]) -> Decimal:
        """Evaluate with ``env`` giving a ``Decimal`` for each name in ``names``."""
        missing = self.names.difference(env)
        if missing:
            raise FormulaEvaluationError(f"no value for {', '.join(sorted(missing))}")
        try:
            return self._evaluate(env)
        except (InvalidOperation, Overflow) as exc:
            raise FormulaEvaluationError(f"arithmetic failed ({type(exc).__name__})") from exc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Formula) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)


def parse_formula(source: str) -> Formula:
    """Parse ``source`` into a ``Formula``; raise ``FormulaError`` naming the column."""
    if not isinstance(source, str):
        raise FormulaError("must be text")
    if len(source) > MAX_SOURCE_CHARS:
        raise FormulaError(f"longer than {MAX_SOURCE_CHARS} characters", MAX_SOURCE_CHARS + 1)
    if not source.strip():
        raise FormulaError("is empty", 1)
    parser = _Parser(_tokenize(source))
    evaluate = parser.parse()
    return Formula(source, frozenset(parser.names), evaluate)
