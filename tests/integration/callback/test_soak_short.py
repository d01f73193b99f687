"""The soak (``bench/soak.py``) for 2 minutes: callbacks on two real nodes while a node is
``kill -9``ed and restarted or PostgreSQL (a private cluster) stopped and started, on a trunk
that loses 10 % of datagrams and answers at once, late, never or busy; at the end, no money
unaccounted and no invariant violated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

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
