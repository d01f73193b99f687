"""A private PostgreSQL cluster for the demo and the tests, started on demand.

The data directory lives inside the checkout (``var/pg``, ignored by git) and is reached only
through a Unix socket in a private directory, so nothing listens on the network. ``initdb``
refuses to run as root, so when we are root every PostgreSQL program runs as an unprivileged
user (``postgres`` if it exists, else ``nobody``). Starting is idempotent and guarded by a
lock, so the demo and a test run may both ask for the cluster at once.

A cluster may also be made a streaming standby of another (``start_standby``: a base backup
taken with ``pg_basebackup -R``, synchronous by default) and promoted (``promote``), so that the
failover set-up of docs/failover.md can be tried, and tested, on one machine.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "cbserver"


class ClusterError(RuntimeError):
    """The local cluster could not be created, started or stopped."""


def find_pg_bin() -> Path:
    """Return the folder holding initdb/pg_ctl of the newest PostgreSQL installed."""
    override = os.environ.get("CBS_PG_BIN")
    if override:
        return Path(override)
    roots = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    for candidate in reversed(roots):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise ClusterError("PostgreSQL server programs not found: install the Debian package "
                       "'postgresql' (./cbs setup does it)")


def _run_as_user() -> str | None:
    """The unprivileged account to run PostgreSQL as when we are root; None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in (os.environ.get("CBS_PG_USER"), "postgres", "nobody"):
        if name:
            try:
                pwd.getpwnam(name)
                return name
            except KeyError:
                continue
    raise ClusterError("running as root and no unprivileged user (postgres/nobody) exists")


@dataclass
class Cluster:
    """A local PostgreSQL cluster rooted at ``root`` (data, socket dir, log, lock)."""

    root: Path

    @property
    def data(self) -> Path:
        """The data directory."""
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        """The private Unix-socket directory."""
        return self.root / "run"

    @property
    def logfile(self) -> Path:
        """The server log."""
        return self.root / "postgresql.log"

    @property
    def port(self) -> int:
        """The port number, which names the socket file (no TCP listener is opened)."""
        return 5432

    def dsn(self, dbname: str = "cbserver") -> str:
        """A libpq connection string for database ``dbname`` of this cluster."""
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}"

    def _cmd(self, *args: str) -> list[str]:
        """Prefix a command so that it runs as the unprivileged user when we are root."""
        user = _run_as_user()
        if user is None:
            return list(args)
        return ["runuser", "-u", user, "--", *args]

    def _owner(self) -> tuple[int, int] | None:
        """uid/gid owning the cluster files when we are root."""
        user = _run_as_user()
        if user is None:
            return None
        pw = pwd.getpwnam(user)
        return pw.pw_uid, pw.pw_gid

    @contextmanager
    def _lock(self):
        """Serialise start/stop between processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _check_reachable(self) -> None:
        """Refuse a root folder the unprivileged user cannot reach, with the fix."""
        owner = self._owner()
        if owner is None:
            return
        probe = subprocess.run(self._cmd("test", "-x", str(self.root)), capture_output=True)
        if probe.returncode != 0:
            raise ClusterError(
                f"the PostgreSQL user cannot reach {self.root} (a parent folder is not "
                "world-searchable); set CBS_PG_ROOT to a folder under /var/tmp")

    def _prepare_dirs(self) -> None:
        """Create data/socket folders owned by the server user, mode 0700."""
        owner = self._owner()
        for d in (self.root, self.data, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            for d in (self.root, self.data, self.socket_dir):
                os.chown(d, *owner)
            if self.logfile.exists():
                os.chown(self.logfile, *owner)
        os.chmod(self.data, 0o700)
        os.chmod(self.socket_dir, 0o700)
        os.chmod(self.root, 0o755)

    def initialised(self) -> bool:
        """True once initdb has run."""
        return (self.data / "PG_VERSION").exists()

    def running(self) -> bool:
        """True when the postmaster of this data directory is up."""
        if not self.initialised():
            return False
        res = subprocess.run(self._cmd(str(find_pg_bin() / "pg_ctl"), "status", "-D",
                                       str(self.data)), capture_output=True)
        return res.returncode == 0

    def start(self) -> None:
        """Create the cluster if needed and start it; a no-op when it is already running."""
        with self._lock():
            self._prepare_dirs()
            self._check_reachable()
            bin_ = find_pg_bin()
            if not self.initialised():
                self._run(bin_ / "initdb", "-D", str(self.data), "-U", SUPERUSER,
                          "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions")
                with open(self.data / "postgresql.conf", "a") as conf:
                    # Socket only: nothing of this private cluster listens on the network.
                    conf.write("\n# cbserver local cluster\nlisten_addresses = ''\n"
                               f"unix_socket_directories = '{self.socket_dir}'\n"
                               "max_connections = 200\nshared_buffers = 128MB\n")
            if self.running():
                return
            self._run(bin_ / "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data),
                      "-l", str(self.logfile), "-o", f"-p {self.port}")
            self._wait_ready(bin_)
            self._ensure_database("cbserver", bin_)

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster if it runs (``mode``: smart, fast or immediate)."""
        with self._lock():
            if self.running():
                self._run(find_pg_bin() / "pg_ctl", "stop", "-w", "-m", mode, "-D", str(self.data))

    def is_standby(self) -> bool:
        """True while this cluster is a standby (its data directory holds standby.signal)."""
        return (self.data / "standby.signal").exists()

    def start_standby(self, primary: Cluster, synchronous: bool = True,
                      timeout: float = 60.0) -> None:
        """Make this cluster a streaming standby of ``primary`` (first time) and start it.

        The base backup carries ``primary``'s settings, so this cluster's own socket folder
        is appended after them (the last setting wins). With ``synchronous`` the primary then
        waits, at every commit, for this standby to have flushed the commit to disk
        (``synchronous_standby_names``); it is set on the primary only after the backup, so
        the standby, once promoted, does not wait for a standby of its own that does not
        exist. Returns once the primary reports this standby as streaming.
        """
        bin_ = find_pg_bin()
        with self._lock():
            self._prepare_dirs()
            self._check_reachable()
            if not self.initialised():
                # -R writes standby.signal and primary_conninfo; -X stream copies the WAL
                # made while the backup runs; -c fast checkpoints at once instead of waiting.
                self._run(bin_ / "pg_basebackup", "-D", str(self.data), "-h",
                          str(primary.socket_dir), "-p", str(primary.port), "-U", SUPERUSER,
                          "-R", "-X", "stream", "-c", "fast")
                with open(self.data / "postgresql.conf", "a") as conf:
                    conf.write(f"\n# cbserver standby\nunix_socket_directories = "
                               f"'{self.socket_dir}'\n")
            if not self.running():
                self._run(bin_ / "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data),
                          "-l", str(self.logfile), "-o", f"-p {self.port}")
                self._wait_ready(bin_)
        if synchronous:
            primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
            primary.sql("SELECT pg_reload_conf()")
        wanted = ("sync",) if synchronous else ("async", "sync")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = primary.sql("SELECT sync_state FROM pg_stat_replication "
                                 "WHERE state = 'streaming'").split()
            if any(s in wanted for s in states):
                return
            time.sleep(0.2)
        raise ClusterError(f"the standby did not start streaming; see {self.logfile}")

    def remove_standby(self, primary: Cluster) -> None:
        """Undo ``start_standby``: the primary stops waiting for a standby (first, so that no
        commit waits for one that is going), then this cluster is stopped and deleted."""
        primary.start()
        primary.sql("ALTER SYSTEM RESET synchronous_standby_names")
        primary.sql("SELECT pg_reload_conf()")
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def promote(self, timeout: float = 60.0) -> None:
        """Promote this standby to a primary and wait until it accepts writes."""
        self._run(find_pg_bin() / "pg_ctl", "promote", "-w", "-t", str(int(timeout)),
                  "-D", str(self.data))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sql("SELECT pg_is_in_recovery()") == "f":
                return
            time.sleep(0.1)
        raise ClusterError(f"the promoted standby still reads only; see {self.logfile}")

    def sql(self, statement: str, dbname: str = "postgres") -> str:
        """Run one statement with psql on this cluster and return its unaligned output."""
        res = subprocess.run([str(find_pg_bin() / "psql"), "-XtAq", self.dsn(dbname), "-c",
                              statement], capture_output=True, text=True)
        if res.returncode != 0:
            raise ClusterError(f"psql on {self.root} failed: {res.stderr.strip()}")
        return res.stdout.strip()

    def _wait_ready(self, bin_: Path, timeout: float = 30.0) -> None:
        """Wait until the server accepts connections on its socket."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = subprocess.run([str(bin_ / "pg_isready"), "-h", str(self.socket_dir),
                                  "-p", str(self.port)], capture_output=True)
            if res.returncode == 0:
                return
            time.sleep(0.1)
        raise ClusterError(f"PostgreSQL did not become ready; see {self.logfile}")

    def _ensure_database(self, name: str, bin_: Path) -> None:
        """Create database ``name`` if it does not exist."""
        res = subprocess.run([str(bin_ / "psql"), "-XtAq", self.dsn("postgres"), "-c",
                              f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise ClusterError(f"cannot query the local cluster: {res.stderr.strip()}")
        if res.stdout.strip() != "1":
            self._run(bin_ / "createdb", "-h", str(self.socket_dir), "-p", str(self.port),
                      "-U", SUPERUSER, name, as_user=False)

    def ensure_database(self, name: str) -> None:
        """Create database ``name`` in the running cluster if it does not exist."""
        self._ensure_database(name, find_pg_bin())

    def recreate_database(self, name: str) -> None:
        """Drop database ``name`` (closing its sessions) and create it empty."""
        bin_ = find_pg_bin()
        self._run(bin_ / "dropdb", "--force", "--if-exists", "-h", str(self.socket_dir),
                  "-p", str(self.port), "-U", SUPERUSER, name, as_user=False)
        self._ensure_database(name, bin_)

    def _run(self, prog: Path, *args: str, as_user: bool = True) -> None:
        """Run a PostgreSQL program, raising ClusterError with its output on failure."""
        cmd = self._cmd(str(prog), *args) if as_user else [str(prog), *args]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise ClusterError(f"{prog.name} failed ({res.returncode}): "
                               f"{(res.stderr or res.stdout).strip()}")


def failover_dsn(clusters: list[Cluster], dbname: str = "cbserver") -> str:
    """A multi-host libpq DSN over ``clusters`` that connects to whichever accepts writes.

    libpq tries the hosts in order and, with ``target_session_attrs=read-write``, skips a
    standby (PostgreSQL documentation, 34.1.2 "Parameter Key Words"): after a promotion a
    client reconnecting with the same DSN lands on the new primary.
    """
    hosts = ",".join(str(c.socket_dir) for c in clusters)
    ports = ",".join(str(c.port) for c in clusters)
    return (f"host={hosts} port={ports} user={SUPERUSER} dbname={dbname} "
            "target_session_attrs=read-write")


def standby_of(cluster: Cluster) -> Cluster:
    """The cluster ``cbserver pg standby`` makes next to ``cluster`` (``<root>-standby``)."""
    return Cluster(cluster.root.with_name(cluster.root.name + "-standby"))


def default_cluster() -> Cluster:
    """The checkout's cluster (``var/pg``), or ``$CBS_PG_ROOT`` when set."""
    root = os.environ.get("CBS_PG_ROOT")
    if root:
        return Cluster(Path(root))
    from cbserver.resources import checkout_dir

    return Cluster(checkout_dir() / "var" / "pg")
