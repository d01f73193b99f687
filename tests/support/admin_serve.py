"""Serve the admin app alone in this process, for tests and benchmarks that measure it.

    python -m tests.support.admin_serve DSN TOKEN PORT_FILE

Listens on 127.0.0.1 (a free port, written to PORT_FILE once listening) with the same
``AdminApp`` the node mounts, over a 2-connection pool, until SIGTERM. Its own process, so
that its memory (``/proc/PID/status``) is the server's alone.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.web.server import Site

from cbserver.db.pool import Database
from cbserver.web.admin import AdminApp


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """A process's resident memory (``VmRSS``) or its peak (``VmHWM``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@defer.inlineCallbacks
def _serve(dsn: str, token: str, port_file: str):
    db = Database(dsn, reactor, size=2)
    db.startService()
    yield db.when_ready()
    app = AdminApp(db, reactor, token, Path(tempfile.mkdtemp(prefix="cbs-admin-")))
    port = reactor.listenTCP(0, Site(app.resource()), interface="127.0.0.1")
    Path(port_file).write_text(str(port.getHost().port))


def main(argv: list[str]) -> None:
    """Run until stopped."""
    dsn, token, port_file = argv
    _serve(dsn, token, port_file).addErrback(lambda f: (f.printTraceback(), reactor.stop()))
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
