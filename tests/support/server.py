"""Run the real ``twistd cbserver`` in a subprocess for integration tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from cbserver.config import example_path

TWISTD = str(Path(sys.executable).parent / "twistd")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port number free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(folder: Path, dsn: str, **overrides: str) -> tuple[Path, int]:
    """Write a config based on the shipped example; returns (path, web port)."""
    port = free_port()
    text = example_path().read_text()
    repl = {
        'dsn = "host=127.0.0.1 port=5432 dbname=cbserver user=cbserver"': f'dsn = "{dsn}"',
        'state_dir = "var"': f'state_dir = "{folder / "state"}"',
        'endpoint = "ssl:8901"': f'endpoint = "ssl:{port}:interface=127.0.0.1"',
        'admin_endpoint = "ssl:8902:interface=127.0.0.1"':
            f'admin_endpoint = "ssl:{free_port()}:interface=127.0.0.1"',
        'listen = "127.0.0.1:5060"': f'listen = "127.0.0.1:{free_port(socket.SOCK_DGRAM)}"',
    }
    repl.update(overrides)
    for old, new in repl.items():
        assert old in text, old
        text = text.replace(old, new)
    path = folder / "cbserver.toml"
    path.write_text(text)
    return path, port


def start(config: Path, *extra: str, twistd_options: tuple[str, ...] = (),
          log: Path | None = None, append: bool = False, prefix: tuple[str, ...] | list[str] = (),
          preexec_fn=None) -> subprocess.Popen:
    """Start ``twistd -n cbserver --config FILE`` with output captured.

    The output goes to a pipe the caller reads at the end, or to the file ``log`` (added to
    its end with ``append``: a restarted node's output follows its predecessor's): a test that
    makes the server log more than a pipe holds (64 KiB) must pass ``log``, or the server
    blocks writing its log and stops answering. ``prefix`` runs it through another command
    (``ip netns exec NAME``, which execs twistd: the pid is twistd's own); ``preexec_fn`` is
    run in the child before twistd starts (e.g. to lower a resource limit)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = subprocess.PIPE if log is None else open(log, "a" if append else "w")  # noqa: SIM115
    try:
        return subprocess.Popen([*prefix, TWISTD, *twistd_options, "-n", "--pidfile=", "cbserver",
                                 "--config", str(config), *extra], stdout=out,
                                stderr=subprocess.STDOUT, env=env, text=True,
                                preexec_fn=preexec_fn)
    finally:
        if log is not None:
            out.close()  # the child has its own descriptor


def get_json(url: str, timeout: float = 5.0) -> tuple[int, dict]:
    """GET a JSON URL over HTTPS without verifying the self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_health(port: int, status: int, proc: subprocess.Popen, timeout: float = 30.0) -> dict:
    """Poll /healthz until it answers ``status``; fail if the process dies first."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {proc.stdout.read()}")
        try:
            code, body = get_json(f"https://127.0.0.1:{port}/healthz", timeout=2)
            last = (code, body)
            if code == status:
                return body
        except (OSError, ValueError) as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"/healthz never answered {status}; last: {last}")


def terminate(proc: subprocess.Popen, timeout: float = 20.0) -> tuple[int, str]:
    """Send SIGTERM and return (exit code, output)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"server did not exit on SIGTERM: {out}") from None
    return proc.returncode, out
