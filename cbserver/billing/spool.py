"""The local xDR spool: an append-only JSON-lines file for legs PostgreSQL could not take.

``append`` writes whole lines and ``os.fsync``s before returning, so a leg the writer has
acknowledged survives a crash of the process or the machine. Replay works on a snapshot:
``begin_replay`` renames the spool to ``<name>.replaying`` (new legs go to a fresh spool
meanwhile) and returns its records in order; ``finish_replay`` deletes the snapshot once all
of it is in PostgreSQL. A crash in between replays the snapshot again, which is harmless
because the writer is idempotent. A torn last line (a crash mid-append, before the fsync
acknowledged it) is moved to ``<name>.corrupt`` and logged, never silently dropped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cbserver.logs import Logger


class Spool:
    """One spool file and its replay snapshot."""

    log = Logger()

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.replaying = self.path.with_name(self.path.name + ".replaying")
        self.corrupt = self.path.with_name(self.path.name + ".corrupt")
        self._fd: int | None = None
        self._spooled = 0
        self._snapshot = 0
        self.opened = False

    @property
    def depth(self) -> int:
        """Legs waiting for PostgreSQL (in the spool and in an unfinished replay snapshot)."""
        return self._spooled + self._snapshot

    def open(self) -> int:
        """Create the folder, count what a previous run left behind; return the depth."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._spooled = self._count(self.path)
        self._snapshot = self._count(self.replaying)
        self.opened = True
        return self.depth

    @staticmethod
    def _count(path: Path) -> int:
        """Number of lines (records) in ``path``, 0 if it does not exist."""
        try:
            with path.open("rb") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    def _sync_dir(self) -> None:
        """fsync the folder so a rename or unlink survives a crash."""
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, records: list[dict]) -> None:
        """Append ``records`` as JSON lines and fsync; raises ``OSError`` if the disk refuses."""
        if not records:
            return
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if new:
                self._sync_dir()
        data = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records)
        view = memoryview(data.encode("utf-8"))
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self._spooled += len(records)

    def close(self) -> None:
        """Close the append descriptor (it is reopened on the next append)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def begin_replay(self) -> list[dict]:
        """Snapshot the spool (unless a snapshot is pending) and return its records in order."""
        if not self.replaying.exists():
            if self._spooled == 0:
                return []
            self.close()
            os.replace(self.path, self.replaying)
            self._sync_dir()
            self._snapshot, self._spooled = self._spooled, 0
        records, bad = [], []
        with self.replaying.open("r", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except ValueError:
                    bad.append(line if line.endswith("\n") else line + "\n")
        if bad:
            with self.corrupt.open("a", encoding="utf-8") as f:
                f.writelines(bad)
                f.flush()
                os.fsync(f.fileno())
            self.log.error("xDR spool: {n} unreadable line(s) moved to {path}", n=len(bad),
                           path=str(self.corrupt))
        self._snapshot = len(records)
        return records

    def finish_replay(self) -> None:
        """Every record of the snapshot is in PostgreSQL: delete the snapshot."""
        try:
            os.remove(self.replaying)
        except FileNotFoundError:
            pass
        self._sync_dir()
        self._snapshot = 0
