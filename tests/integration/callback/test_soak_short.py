"""The soak (``bench/soak.py``) for 2 minutes, part of the default test command: callbacks on
two real nodes while a node is ``kill -9``ed and restarted and PostgreSQL (a private cluster)
stopped and started, on a trunk that loses 10 % of datagrams and answers at once, late, never
or busy; at the end, no money unaccounted and no invariant violated (the soak's ``check``:
Σ xDR amounts = balance change per account, balances within what they allow, no session
unended, no hold, live slot or recovery row left, every leg the trunk saw answered has its
xDR).

Faults come every 10-20 s, each kind once per round in a random order, so a 2-minute run
injects both kinds; the test fails unless every kind of fault really happened (a node killed,
PostgreSQL stopped, datagrams dropped, a leg answered late and one never answered). Its wall
time is bounded: 2 minutes of load, then at most ``--drain`` seconds to settle.
"""

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
                           "--fault-every", "10", "20", "--drain", "150", "--summary", str(summary)],
                          capture_output=True, text=True, timeout=540)
    print(proc.stdout[-6000:], proc.stderr[-4000:])
    assert summary.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(summary.read_text())
    assert figures["violations"] == [], figures
    assert figures["money_unaccounted"] == "0"
    assert figures["recovery_rows_left"] == 0
    # Load really ran, and no callback was refused for want of a rating entry on its node.
    assert figures["accepted"] > 0 and figures["xdrs"] > 0 and figures["connected"] > 0
    assert not [k for k in figures["refused"] if "not available" in k], figures["refused"]
    faults = figures["faults"]
    for kind in ("kill9", "pg_stop", "trunk_datagrams_dropped", "trunk_answered_late",
                 "trunk_never_answered"):
        assert faults[kind] >= 1, (kind, faults)
    assert proc.returncode == 0, proc.stdout[-3000:]
