"""What `cbserver quote` (the operator's rating tool) says one leg costs.

End-to-end tests check the money a callback took against this independent path: the
console script run as a separate process on the test's database, not the rating code
the server called in-process.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path


def quote(world, number: str, duration: int, at: dt.datetime, tariff: str = "Callback",
          account: str | None = None, access_code: str = "WEBCALLBACK") -> Decimal:
    """The charge `cbserver quote` gives for ``duration`` seconds to ``number`` at ``at``.

    A leg that never connected costs nothing, and the tool needs a connect time, so a zero
    duration is answered here. The tariff is ``tariff`` by name (e.g. "Callback fail" for
    legA's special charge when legB failed), or, with ``account``, the one that account's
    product picks for ``access_code``, as authorization picks it.
    """
    if duration == 0:
        return Decimal(0)
    which = (["--account", account, "--access-code", access_code] if account is not None
             else ["--tariff", tariff])
    out = subprocess.run([str(Path(sys.executable).parent / "cbserver"), "quote", *which,
                          "--number", number, "--duration", str(duration), "--at",
                          at.isoformat(), "--dsn", world.dsn],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return Decimal(json.loads(out)["amount"])
