"""A private PostgreSQL cluster a test may stop and start at will.

The shared local cluster (``var/pg``) serves every other test of the run, so a test that
takes the database away stops a cluster of its own, made under /var/tmp and removed after.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

from cbserver.devtools.pgcluster import Cluster


@contextlib.contextmanager
def private_cluster(prefix: str):
    """Yield a started ``Cluster`` in a fresh folder; stop it (immediate) and delete it after."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    root.chmod(0o755)  # the unprivileged PostgreSQL user must reach it when we are root
    cluster = Cluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.stop("immediate")
        finally:
            shutil.rmtree(root, ignore_errors=True)
