"""The RFC 4475 torture messages and their expected outcomes, read from the data README.

Shared by the unit tests (parse + validate) and the integration suite (real UDP stack).
"""

import re
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "data" / "rfc4475"


@dataclass(frozen=True)
class Expectation:
    """What the README's "expected from this server" cell asks for one file."""

    name: str
    cls: str  # valid / invalid / application
    text: str
    parsed: bool  # the message must be accepted as a SIP message
    codes: frozenset  # status codes the cell names (a response must carry one of the >= 400)
    droppable: bool  # silence is an acceptable outcome

    @property
    def error_codes(self) -> frozenset:
        """The named codes that are final error responses."""
        return frozenset(c for c in self.codes if c >= 400)


def _expectation(name: str, cls: str, text: str) -> Expectation:
    parsed = text.startswith(("parsed", "answered")) or "processed" in text
    codes = {int(c) for c in re.findall(r"(?<![-\d])([1-6]\d\d)(?!\d)", text)}
    if "non-400" in text:
        codes.discard(400)
    return Expectation(name, cls, text, parsed, frozenset(codes), "dropped" in text)


def readme_expectations() -> dict[str, Expectation]:
    """File name -> Expectation for every row of the README table."""
    rows = {}
    for line in (DATA / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].endswith(".dat"):
            rows[cells[0]] = _expectation(cells[0], cells[2], cells[3])
    return rows


def load(name: str) -> bytes:
    """The file's bytes, exactly as stored."""
    return (DATA / name).read_bytes()
