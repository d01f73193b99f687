"""``cbserver demo``: a working callback server on this machine, with demo data.

Starts the checkout's private PostgreSQL, applies the schema, loads ``demo/demo.toml`` (the
operator's manual example as a provisioning file) and ``demo/carrier-numbers.toml`` (the
carrier's test numbers) into a database of its own (``cbserver_demo``: the cluster's
``cbserver`` database may hold an operator's own catalog, which re-provisioning would
overwrite), starts ``sipp`` on 127.0.0.1:5070 as the
carrier (``scripts/sipp/carrier.xml``: it answers, streams audio and hangs up after 60 s;
numbers starting 486 are busy, 603 declined, 480 never answered), writes ``var/demo/cbserver.toml`` and runs
``twistd -n cbserver`` in the foreground. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from cbserver.cli import CommandError
from cbserver.config import example_path
from cbserver.db.migrations import MigrationChanged, MigrationError, upgrade
from cbserver.devtools.democarrier import TRUNK_PASSWORD, TRUNK_USER, Carrier
from cbserver.devtools.pgcluster import ClusterError, default_cluster
from cbserver.resources import checkout_dir

CARRIER_PORT = 5070
# The demo's own database in the local cluster, rebuilt or re-provisioned at will.
DEMO_DATABASE = "cbserver_demo"


def register(sub) -> None:
    """Add the ``demo`` sub-command."""
    p = sub.add_parser("demo", help="run a demo server with demo data and a local carrier")
    p.add_argument("--port", type=int, default=8901, help="HTTPS port of the page (8901)")
    p.add_argument("--sip-port", type=int, default=5060, help="UDP port of cbserver's SIP side")
    p.add_argument("--carrier-port", type=int, default=CARRIER_PORT,
                   help="UDP port of the sipp carrier (5070)")
    p.add_argument("--rtp-ports", default="20000-29999", help="RTP port range of cbserver")
    p.add_argument("--no-carrier", action="store_true", help="do not start the sipp carrier")
    p.set_defaults(func=_demo)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600), as every secret is kept.

    The file is created with that mode (never world-readable, not even for an instant) and an
    existing file with a wider mode is narrowed first: the demo config holds the trunk password
    and the database DSN.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def demo_config(dsn: str, state: Path, port: int, sip_port: int = 5060,
                carrier_port: int = CARRIER_PORT, rtp_ports: str = "20000-29999") -> str:
    """The example configuration adjusted to the local cluster, state folder and carrier."""
    text = example_path().read_text(encoding="utf-8")
    token_file = state / "admin.token"
    if not token_file.exists():
        write_private(token_file, secrets.token_urlsafe(24) + "\n")
    repl = {
        'dsn = "host=127.0.0.1 port=5432 dbname=cbserver user=cbserver"': f'dsn = "{dsn}"',
        'state_dir = "var"': f'state_dir = "{state}"',
        'endpoint = "ssl:8901"': f'endpoint = "ssl:{port}"',
        'callback_page_address = "https://127.0.0.1:8901/web-callback"':
            f'callback_page_address = "https://127.0.0.1:{port}/web-callback"',
        'admin_token = ""': '# admin_token is read from admin_token_file',
        'listen = "127.0.0.1:5060"': f'listen = "127.0.0.1:{sip_port}"',
        'address = "127.0.0.1:5070"': f'address = "127.0.0.1:{carrier_port}"',
        'ports = "20000-29999"': f'ports = "{rtp_ports}"',
        # The demo carrier challenges calls to 407... numbers with these credentials.
        '\nusername = ""': f'\nusername = "{TRUNK_USER}"',
        '\npassword = ""': f'\npassword = "{TRUNK_PASSWORD}"',
        'admin_endpoint = "ssl:8902:interface=127.0.0.1"':
            f'admin_endpoint = "ssl:{port + 1}:interface=127.0.0.1"',
        '# admin_token_file = "admin.token"': f'admin_token_file = "{token_file}"',
    }
    for old, new in repl.items():
        if old not in text:
            raise CommandError(f"the example configuration changed; cannot adapt {old!r}")
        text = text.replace(old, new)
    return text


def _provision(dsn: str, path: Path) -> None:
    """Load the demo provisioning file when the catalog part is installed."""
    try:
        from cbserver.billing.provision import provision_file_sync
    except ImportError:
        print("cbserver demo: the billing catalog is not part of this build; no demo data",
              file=sys.stderr)
        return
    provision_file_sync(dsn, path)


def _demo_accounts(path: Path) -> list[tuple[str, str, str]]:
    """(account ID, password, balance) of the demo accounts listed in the demo file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    rows = []
    for acc in data.get("accounts", data.get("account", [])):
        if isinstance(acc, dict) and acc.get("password") and not acc.get("internal"):
            rows.append((str(acc.get("id")), str(acc["password"]),
                         str(acc.get("balance", acc.get("opening_balance", "")))))
    return rows


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    """Poll /healthz until 200; False when the server died first."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", timeout=2,
                                        context=ctx) as resp:
                if resp.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.3)
    return False


def _start_carrier(state: Path, port: int) -> Carrier:
    """Start sipp as the carrier on 127.0.0.1:5070 (see scripts/sipp/carrier.xml)."""
    if shutil.which("sipp") is None:
        raise CommandError("sipp is not installed (Debian package sip-tester; ./cbs demo "
                           "installs it)")
    # Answered calls are hung up by the carrier after 60 s unless cbserver hangs up first.
    carrier = Carrier(state, port, hold_ms=60000)
    try:
        return carrier.start()
    except RuntimeError as e:
        raise CommandError(str(e)) from None


def _stop(proc: subprocess.Popen | None, name: str) -> None:
    """Terminate a child politely, then firmly."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        print(f"cbserver demo: {name} did not stop; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()


def _upgrade_demo_database(cluster, name: str = DEMO_DATABASE) -> None:
    """Bring the demo's database to the current schema (creating it the first time).

    The demo owns the local cluster's ``cbserver_demo`` database (``name``) and provisions
    it on every run; it never touches the ``cbserver`` database.
    One built by a checkout whose applied migrations have since changed cannot be upgraded
    (``MigrationChanged``), so it is rebuilt from scratch instead: it holds demo data only.
    """
    dsn = cluster.dsn(name)

    def report(line):
        """Indent upgrade progress lines."""
        print(f"  {line}")

    try:
        cluster.ensure_database(name)
        try:
            upgrade(dsn, report=report)
        except MigrationChanged as e:
            print(f"  the demo database cannot be upgraded ({e.changed[0].path.name} changed "
                  "since it was applied); rebuilding it with the demo data")
            cluster.recreate_database(name)
            upgrade(dsn, report=report)
    except (MigrationError, ClusterError) as e:
        raise CommandError(str(e)) from None


def _demo(args) -> int:
    """Set everything up and run the server until Ctrl-C."""
    root = checkout_dir()
    state = root / "var" / "demo"
    state.mkdir(parents=True, exist_ok=True)
    cluster = default_cluster()
    was_running = cluster.running()
    try:
        cluster.start()
    except ClusterError as e:
        raise CommandError(str(e)) from None
    dsn = cluster.dsn(DEMO_DATABASE)
    carrier = server = None
    try:
        _upgrade_demo_database(cluster)
        demo_file = root / "demo" / "demo.toml"
        _provision(dsn, demo_file)
        # The carrier's test numbers and a hosted caller, beyond the manual's example.
        _provision(dsn, root / "demo" / "carrier-numbers.toml")
        config = state / "cbserver.toml"
        write_private(config, demo_config(dsn, state, args.port, args.sip_port, args.carrier_port,
                                          args.rtp_ports))
        if not args.no_carrier:
            carrier = _start_carrier(state, args.carrier_port)
        twistd = str(Path(sys.executable).parent / "twistd")
        server = subprocess.Popen([twistd, "-n", "--pidfile=", "cbserver", "--config",
                                   str(config)], env=dict(os.environ, PYTHONUNBUFFERED="1"))
        # Ctrl-C (SIGINT) or SIGTERM: ask the server to stop gracefully and wait for it;
        # the finally clause then stops the carrier and the cluster.
        def stop_server(_signum, _frame):
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGINT, stop_server)
        signal.signal(signal.SIGTERM, stop_server)
        if _wait_healthy(args.port, server):
            print("\n" + "=" * 72)
            print(f"  cbserver demo is running: https://127.0.0.1:{args.port}/web-callback")
            print("  (self-signed certificate: accept it in the browser)")
            for acc_id, password, balance in _demo_accounts(demo_file):
                print(f"  demo account: {acc_id}  password: {password}  balance: {balance}")
            print(f"  carrier (sipp) on 127.0.0.1:{args.carrier_port}; config: {config}")
            print("  Ctrl-C stops everything")
            print("=" * 72 + "\n", flush=True)
        server.wait()
        return server.returncode
    finally:
        _stop(server, "the server")
        if carrier is not None:
            carrier.stop()
        if not was_running:
            cluster.stop()
