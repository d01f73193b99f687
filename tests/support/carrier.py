"""Run ``sipp`` as the carrier (``scripts/sipp/carrier.xml``) for end-to-end tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from cbserver.resources import checkout_dir

SIPP_DIR = checkout_dir() / "scripts" / "sipp"


def scenario(folder: Path, hold_ms: int) -> Path:
    """A copy of the carrier scenario that hangs up answered calls after ``hold_ms``."""
    text = (SIPP_DIR / "carrier.xml").read_text().replace("HOLD_MS", str(int(hold_ms)))
    path = folder / "carrier.xml"
    path.write_text(text)
    return path


class Carrier:
    """A running sipp carrier on 127.0.0.1:``port``."""

    def __init__(self, folder: Path, port: int, hold_ms: int = 60000):
        self.folder = folder
        self.port = port
        self.hold_ms = hold_ms
        self.proc: subprocess.Popen | None = None

    def start(self) -> Carrier:
        """Start sipp; wait until its SIP port is bound."""
        sipp = shutil.which("sipp")
        if sipp is None:
            raise RuntimeError("sipp is not installed (Debian package sip-tester)")
        path = scenario(self.folder, self.hold_ms)
        self.log = open(self.folder / "carrier.log", "w")
        self.proc = subprocess.Popen(
            [sipp, "-sf", str(path), "-i", "127.0.0.1", "-p", str(self.port), "-mi", "127.0.0.1",
             "-mp", str(self.port + 10000), "-nostdin", "-trace_err", "-error_file",
             str(self.folder / "carrier-errors.log")],
            cwd=SIPP_DIR, stdout=subprocess.DEVNULL, stderr=self.log)
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise RuntimeError(f"sipp exited: {(self.folder / 'carrier.log').read_text()}")
        return self

    def stop(self) -> None:
        """Stop sipp."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
