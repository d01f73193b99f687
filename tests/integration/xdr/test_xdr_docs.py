"""docs/xdrs.md documents every column of ``xdrs``, as a fresh database has them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.xdr.helpers import query

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[3] / "docs" / "xdrs.md"


def documented() -> set[str]:
    """The column names in the first cell of each row of the doc's column table."""
    names = set()
    for line in DOC.read_text().splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return names


def test_every_column_of_xdrs_is_documented_and_nothing_else(pg_dsn):
    columns = {name for (name,) in query(pg_dsn, "SELECT column_name FROM information_schema.columns "
                                                 "WHERE table_name = 'xdrs'")}
    assert {"call_id", "instance_id", "duration"} <= columns
    assert documented() == columns
