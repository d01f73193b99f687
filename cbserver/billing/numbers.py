"""Normalisation of dialled numbers to the digit strings that rates are keyed on."""

from __future__ import annotations

from cbserver.billing.model import InvalidNumberError

#: Characters people type between digits; they are dropped.
_SEPARATORS = str.maketrans("", "", "+ -.()\t")

#: Longest normalised number accepted (E.164 allows 15 digits; leave room for prefixes).
MAX_DIGITS = 32


def normalise_number(number: str) -> str:
    """Return the digits of ``number`` with ``+``, spaces, dashes, dots and brackets removed.

    Any other character, an empty result or more than ``MAX_DIGITS`` digits
    raises ``InvalidNumberError``. International prefixes such as ``00`` are
    kept as typed: rates are keyed on what is dialled.
    """
    if not isinstance(number, str):
        raise InvalidNumberError(f"number: must be text, got {type(number).__name__}")
    if number.isascii() and number.isdigit() and len(number) <= MAX_DIGITS:
        return number  # already digits only (nearly always): what the steps below return
    digits = number.translate(_SEPARATORS)
    if not digits:
        raise InvalidNumberError(f"number: {number!r} has no digits")
    if not (digits.isascii() and digits.isdigit()):
        bad = next(ch for ch in digits if not (ch.isascii() and ch.isdigit()))
        raise InvalidNumberError(f"number: {number!r} contains {bad!r}")
    if len(digits) > MAX_DIGITS:
        raise InvalidNumberError(f"number: more than {MAX_DIGITS} digits")
    return digits
