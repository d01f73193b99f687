"""The soak (``bench/soak.py``) for 2 minutes: callbacks on two real nodes while a node is
``kill -9``ed and restarted or PostgreSQL (a private cluster) stopped and started, on a trunk
that loses 10 % of datagrams and answers at once, late, never or busy; at the end, no money
unaccounted and no invariant violated.

Run with ``CBS_SOAK=1`` (``CBS_SOAK=1 ./cbs test tests/integration/callback/test_soak_short.py``).
It is not yet part of the default test command: it passed every run since its checks were
settled (9 runs), too few to trust a random-fault test with every submission, and it still
reports a leak it does not fail on (a recovery row left when a callback ends while PostgreSQL
is down, docs/billing.md "Soak").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.environ.get("CBS_SOAK") != "1",
                       reason="the 2-minute soak runs with CBS_SOAK=1 (see the module docstring)"),
]

ROOT = Path(__file__).resolve().parents[3]


def test_two_minute_soak_has_no_violation(tmp_path):
    summary = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "2",
                           "--summary", str(summary)], capture_output=True, text=True, timeout=600)
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    assert summary.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(summary.read_text())
    assert figures["violations"] == [], figures
    assert figures["money_unaccounted"] == "0"
    assert figures["accepted"] > 0 and figures["xdrs"] > 0
    assert sum(figures["faults"].values()) >= 1
    assert proc.returncode == 0, proc.stdout[-3000:]
