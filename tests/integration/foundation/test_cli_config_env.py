"""``cbserver`` commands run with the configuration named by ``CBSERVER_CONFIG`` alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cbserver.db.migrations import required_version
from tests.support.world import config_text

pytestmark = pytest.mark.integration
CBSERVER = str(Path(sys.executable).parent / "cbserver")


def test_db_status_and_quote_take_the_dsn_from_cbserver_config(pg_dsn, tmp_path):
    cfg = tmp_path / "cbserver.toml"
    cfg.write_text(config_text(pg_dsn, tmp_path / "state", 5060, 5070, 8901, 30000))
    env = {**os.environ, "CBSERVER_CONFIG": str(cfg)}
    res = subprocess.run([CBSERVER, "db", "status"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    # pg_dsn is a database with every migration applied: its version, nothing pending.
    assert res.stdout.startswith(f"schema version {required_version()}")
    assert "PENDING" not in res.stdout
    # The same with the variable naming a file that is not there: refused, not /etc's file.
    env["CBSERVER_CONFIG"] = str(tmp_path / "missing.toml")
    res = subprocess.run([CBSERVER, "db", "status"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 1 and "names no file" in res.stderr
