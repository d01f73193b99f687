"""Normalisation of dialled numbers to the digit strings that rates are keyed on."""

from __future__ import annotations

import re

from cbserver.billing.model import InvalidNumberError

#: What people type between the digits of a phone number on the callback page.
_PHONE_JUNK = re.compile(r"[\s\-.()/]")
_PHONE = re.compile(r"\+?[0-9]{3,20}")
#: The refusal of ``normalise_phone`` (also shown on the callback page).
PHONE_HINT = "Enter a phone number of 3 to 20 digits, optionally starting with +."


def normalise_phone(text: str) -> str:
    """A phone number as the callback page takes it: the digits (international format).

    A leading ``+`` may be typed and is dropped, as are spaces, dashes, dots, slashes and
    brackets (``+1 800 555-0100`` is ``18005550100``); 3 to 20 digits must remain, else
    ``ValueError(PHONE_HINT)``. The page, the config's ``second_number`` and a voice
    application's numbers all go through here, so they accept the same forms.
    """
    cleaned = _PHONE_JUNK.sub("", text or "") if isinstance(text, str) else ""
    if not _PHONE.fullmatch(cleaned):
        raise ValueError(PHONE_HINT)
    return cleaned.lstrip("+")

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
    digits = number.translate(_SEPARATORS)
    if not digits:
        raise InvalidNumberError(f"number: {number!r} has no digits")
    if not (digits.isascii() and digits.isdigit()):
        bad = next(ch for ch in digits if not (ch.isascii() and ch.isdigit()))
        raise InvalidNumberError(f"number: {number!r} contains {bad!r}")
    if len(digits) > MAX_DIGITS:
        raise InvalidNumberError(f"number: more than {MAX_DIGITS} digits")
    return digits
