"""Phone numbers as people type them on the callback page, made into digits.

One rule for the page, the config's ``second_number`` and a voice application's fields, so
that all accept the same forms (issue 15: ``+1 800 555-0100`` was refused in the config
although the page accepted it).
"""

from __future__ import annotations

import re

#: What people type between the digits of a phone number.
_PHONE_JUNK = re.compile(r"[\s\-.()/]")
_PHONE = re.compile(r"\+?[0-9]{3,20}")
#: The refusal of ``normalise_phone`` (also shown on the callback page).
PHONE_HINT = "Enter a phone number of 3 to 20 digits, optionally starting with +."


def normalise_phone(text: str) -> str:
    """A phone number as the callback page takes it: the digits (international format).

    A leading ``+`` may be typed and is dropped, as are spaces, dashes, dots, slashes and
    brackets (``+1 800 555-0100`` is ``18005550100``); 3 to 20 digits must remain, else
    ``ValueError(PHONE_HINT)``.
    """
    cleaned = _PHONE_JUNK.sub("", text) if isinstance(text, str) else ""
    if not _PHONE.fullmatch(cleaned):
        raise ValueError(PHONE_HINT)
    return cleaned.lstrip("+")
