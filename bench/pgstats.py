"""PostgreSQL's work per callback over one benchmark step (issue 17, item 1).

``enable(base_dsn)`` makes sure the benchmark's own cluster (the checkout's, ``cbserver pg``)
loads ``pg_stat_statements`` with planning tracked and nested statements (inside the PL/pgSQL
functions of ``sql/functions/``) counted; it restarts that cluster once if it has to.
``Snapshot.take`` before a step and ``Snapshot.delta`` after it give, for the scratch
database: each statement's calls, execution and planning time, rows, shared blocks dirtied
and WAL bytes; the cluster's WAL bytes (``pg_stat_wal``) and the database's commits
(``pg_stat_database.xact_commit``); and the CPU every process of the cluster used (backends,
WAL writer, checkpointer, autovacuum), read from ``/proc``.

The benchmark's own polling connection is opened with ``pg_stat_statements.track = none``
(``quiet_dsn``) so its queries are not counted; its commits are subtracted by the caller.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

STATEMENTS = """
SELECT queryid, toplevel, regexp_replace(query, '\\s+', ' ', 'g'), calls, total_exec_time,
       total_plan_time, rows, shared_blks_dirtied, wal_bytes
  FROM pg_stat_statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def enable(base_dsn: str, cbserver_bin: str, cwd: Path) -> None:
    """Load ``pg_stat_statements`` in the checkout's cluster (restart it once if needed)."""
    import psycopg2

    def settings(statements: list[str]) -> bool:
        """Run ``statements``; whether the library was loaded beforehand."""
        conn = psycopg2.connect(base_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SHOW shared_preload_libraries")
            loaded = "pg_stat_statements" in cur.fetchone()[0]
            for statement in statements if loaded else statements[:1]:
                cur.execute(statement)
        conn.close()
        return loaded

    # The module's own settings exist only once it is loaded (ALTER SYSTEM refuses them before).
    if not settings(["ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"]):
        subprocess.run([cbserver_bin, "pg", "stop"], check=True, cwd=cwd, capture_output=True)
        subprocess.run([cbserver_bin, "pg", "start"], check=True, cwd=cwd, capture_output=True)
    settings(["ALTER SYSTEM SET pg_stat_statements.track_planning = on",
              "ALTER SYSTEM SET pg_stat_statements.track = 'all'",
              "SELECT pg_reload_conf()"])


def track_functions(base_dsn: str) -> None:
    """Time every PL/pgSQL function call (``track_functions = 'pl'``) in the cluster.

    ``pg_stat_user_functions`` then gives each function of ``sql/functions/`` its calls, total
    time (with the functions it calls) and self time; ``Snapshot`` reports their difference.
    """
    import psycopg2

    conn = psycopg2.connect(base_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SHOW track_functions")
        if cur.fetchone()[0] != "pl":
            cur.execute("ALTER SYSTEM SET track_functions = 'pl'")
            cur.execute("SELECT pg_reload_conf()")
    conn.close()


TABLES = ("SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables "
          "WHERE schemaname = 'public'")

FUNCTIONS = ("SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions "
             "WHERE schemaname = 'public'")


def create_extension(dsn: str) -> None:
    """``CREATE EXTENSION pg_stat_statements`` in the scratch database."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    conn.close()


def quiet_dsn(dsn: str) -> str:
    """``dsn`` for a connection whose statements ``pg_stat_statements`` does not count."""
    return dsn + " options='-c pg_stat_statements.track=none'"


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cluster_cpu(postmaster: int) -> dict[int, float]:
    """CPU seconds of the postmaster and each of its children, by pid."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster or int(entry.name) == postmaster:
                out[int(entry.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            continue
    return out


@dataclass
class Snapshot:
    """Counters at the start of a step; ``delta`` turns them into the step's figures."""

    wal_bytes: int
    commits: int
    cpu: dict[int, float]
    postmaster: int
    functions: dict[str, tuple[int, float, float]] = field(default_factory=dict)
    tables: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def take(cls, dsn: str) -> Snapshot:
        """Reset ``pg_stat_statements`` and read the cluster's counters."""
        import psycopg2

        conn = psycopg2.connect(quiet_dsn(dsn))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_stat_statements_reset()")
            cur.execute("SELECT wal_bytes FROM pg_stat_wal")
            wal = int(cur.fetchone()[0])
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            commits = int(cur.fetchone()[0])
            cur.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")
            checkpointer = cur.fetchone()[0]
            cur.execute(FUNCTIONS)
            functions = {r[0]: (r[1], r[2], r[3]) for r in cur.fetchall()}
            cur.execute(TABLES)
            tables = {r[0]: tuple(r[1:]) for r in cur.fetchall()}
        conn.close()
        postmaster = int(Path(f"/proc/{checkpointer}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return cls(wal, commits, cluster_cpu(postmaster), postmaster, functions, tables)

    def delta(self, dsn: str, extra_commits: int = 0) -> PgStep:
        """The step's figures since this snapshot (``extra_commits``: the bench's own)."""
        import psycopg2

        cpu_now = cluster_cpu(self.postmaster)
        cpu = sum(v - self.cpu.get(pid, 0.0) for pid, v in cpu_now.items())
        conn = psycopg2.connect(quiet_dsn(dsn))
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT wal_bytes FROM pg_stat_wal")
            wal = int(cur.fetchone()[0]) - self.wal_bytes
            cur.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
            commits = int(cur.fetchone()[0]) - self.commits - extra_commits
            cur.execute(STATEMENTS)
            rows = [Statement(*r) for r in cur.fetchall()]
            cur.execute(FUNCTIONS)
            functions = []
            for name, calls, total, own in cur.fetchall():
                c0, t0, s0 = self.functions.get(name, (0, 0.0, 0.0))
                if calls > c0:
                    functions.append(Function(name, calls - c0, total - t0, own - s0))
            cur.execute(TABLES)
            tables = {}
            for name, *counts in cur.fetchall():
                before = self.tables.get(name, (0, 0, 0, 0))
                change = tuple(c - b for c, b in zip(counts, before, strict=True))
                if any(change):
                    tables[name] = change
        conn.close()
        return PgStep(cpu=cpu, wal_bytes=wal, commits=commits, statements=rows,
                      functions=functions, tables=tables)


@dataclass
class Function:
    """One ``pg_stat_user_functions`` row's change over a step (times in ms)."""

    name: str
    calls: int
    total_ms: float
    self_ms: float


@dataclass
class Statement:
    """One ``pg_stat_statements`` row (times in ms)."""

    queryid: int
    toplevel: bool
    query: str
    calls: int
    exec_ms: float
    plan_ms: float
    rows: int
    dirtied: int
    wal_bytes: int


@dataclass
class PgStep:
    """PostgreSQL's work over one step."""

    cpu: float
    wal_bytes: int
    commits: int
    statements: list[Statement] = field(default_factory=list)
    functions: list[Function] = field(default_factory=list)
    # Rows written per table: (inserted, updated, of which HOT, deleted), pg_stat_user_tables.
    tables: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def summary(self, callbacks: int) -> str:
        """One phrase per callback: cluster CPU, statements, commits, WAL."""
        n = callbacks
        calls = sum(s.calls for s in self.statements if s.toplevel)
        return (f"PostgreSQL cluster {1000 * self.cpu / n:.1f} ms CPU/call, {calls / n:.1f} "
                f"statements, {self.commits / n:.1f} commits, {self.wal_bytes / n:.0f} B WAL")

    def report(self, callbacks: int, top: int = 14) -> str:
        """A markdown table per callback: the cluster, then the costliest statements."""
        if not callbacks:
            return "no callback completed: no PostgreSQL figures"
        n = callbacks
        level = [s for s in self.statements if s.toplevel]
        exec_ms = sum(s.exec_ms for s in level)
        plan_ms = sum(s.plan_ms for s in level)
        lines = [f"PostgreSQL per callback ({n} callbacks): CPU {1000 * self.cpu / n:.2f} ms (every "
                 f"process of the cluster), top-level statements "
                 f"{sum(s.calls for s in level) / n:.2f} (exec {exec_ms / n:.3f} ms, plan "
                 f"{plan_ms / n:.3f} ms), commits {self.commits / n:.2f}, WAL "
                 f"{self.wal_bytes / n:.0f} bytes, shared blocks dirtied "
                 f"{sum(s.dirtied for s in level) / n:.2f}",
                 "",
                 "| statement | top | calls/cb | exec ms/cb | mean exec ms | plan ms/cb | rows/cb "
                 "| dirtied/cb | WAL B/cb |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        ordered = sorted(self.statements, key=lambda s: -(s.exec_ms + s.plan_ms))
        for s in ordered[:top]:
            text = s.query if len(s.query) <= 90 else s.query[:87] + "..."
            text = text.replace("|", "\\|")
            lines.append(f"| `{text}` | {'y' if s.toplevel else 'n'} | {s.calls / n:.2f} "
                         f"| {s.exec_ms / n:.3f} | {s.exec_ms / max(1, s.calls):.3f} "
                         f"| {s.plan_ms / n:.3f} | {s.rows / n:.2f} | {s.dirtied / n:.2f} "
                         f"| {s.wal_bytes / n:.0f} |")
        if self.functions:
            lines += ["", "| function | calls/cb | total ms/cb | self ms/cb | mean total ms |",
                      "| --- | --- | --- | --- | --- |"]
            for f in sorted(self.functions, key=lambda f: -f.total_ms):
                lines.append(f"| `{f.name}` | {f.calls / n:.2f} | {f.total_ms / n:.3f} "
                             f"| {f.self_ms / n:.3f} | {f.total_ms / f.calls:.3f} |")
        if self.tables:
            lines += ["", "| table | inserted/cb | updated/cb | of which HOT | deleted/cb |",
                      "| --- | --- | --- | --- | --- |"]
            for name, (ins, upd, hot, dele) in sorted(self.tables.items()):
                lines.append(f"| `{name}` | {ins / n:.2f} | {upd / n:.2f} | {hot / n:.2f} "
                             f"| {dele / n:.2f} |")
        return "\n".join(lines)
