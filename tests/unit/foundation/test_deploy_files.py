"""The shipped deployment files: the example node configurations load and do not collide,
and the systemd units pass ``systemd-analyze verify`` (with an exposure score kept low)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cbserver.config import load_config, parse_host_port

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
TWISTD = Path(shutil.which("twistd", path=str(ROOT / ".venv" / "bin")) or "/usr/bin/twistd")


@pytest.fixture
def etc(tmp_path):
    """deploy/etc/cbserver copied to a folder of its own, with the secret files it names."""
    folder = tmp_path / "cbserver"
    shutil.copytree(DEPLOY / "etc" / "cbserver", folder)
    for path in folder.rglob("*.toml"):
        path.write_text(path.read_text().replace("/etc/cbserver/", f"{folder}/"))
    (folder / "trunk.secret").write_text("trunk-password\n")
    (folder / "admin.token").write_text("an-admin-token-of-32-characters!\n")
    return folder


def test_example_nodes_share_the_cluster_and_differ_where_they_must(etc):
    cfgs = [load_config(p) for p in sorted((etc / "nodes").glob("*.toml"))]
    assert len(cfgs) >= 2
    assert len({c.server.node for c in cfgs}) == len(cfgs)
    assert len({c.server.state_dir for c in cfgs}) == len(cfgs)
    assert len({parse_host_port(c.sip.listen) for c in cfgs}) == len(cfgs)
    assert len({c.web.endpoint for c in cfgs} | {c.web.admin_endpoint for c in cfgs}) == 2 * len(cfgs)
    ranges = sorted(tuple(int(x) for x in c.rtp.ports.split("-")) for c in cfgs)
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False)), ranges
    # Shared: the failover DSN, the trunk and its secret, the applications, the proxy.
    assert len({c.database.dsn for c in cfgs}) == 1
    assert "target_session_attrs=read-write" in cfgs[0].database.dsn
    assert {c.sip.trunk.password for c in cfgs} == {"trunk-password"}
    assert {c.web.trusted_proxies for c in cfgs} == {("127.0.0.1/32",)}
    assert {tuple(a.name for a in c.application) for c in cfgs} == {("Web callback",)}


def units(tmp_path: Path) -> Path:
    """The units copied with ExecStart pointing at this checkout's twistd (verify checks it)."""
    for name in ("cbserver@.service", "cbserver.target"):
        text = (DEPLOY / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/opt/cbserver/.venv/bin/twistd", str(TWISTD)))
    return tmp_path


def verify(folder: Path, unit: str) -> str:
    """What ``systemd-analyze verify`` says of ``unit`` in ``folder`` (empty: nothing wrong).

    ``--man=no``: the Documentation= page need not be installed; ``--generators=no``: the
    generators of the machine running the test have nothing to do with the unit. Skipped only
    when systemd-analyze is missing (Debian package systemd, installed by ``./cbs setup``)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd; ./cbs setup)")
    res = subprocess.run(["systemd-analyze", "verify", "--man=no", "--generators=no", f"./{unit}"],
                         cwd=folder, capture_output=True, text=True, timeout=60)
    return (res.stderr + res.stdout).strip()


def test_systemd_units_verify_cleanly(tmp_path):
    folder = units(tmp_path)
    (folder / "cbserver@1.service").symlink_to("cbserver@.service")
    assert verify(folder, "cbserver@1.service") == ""
    assert verify(folder, "cbserver.target") == ""
    # The check can fail: a misspelt setting is reported.
    text = (folder / "cbserver@.service").read_text().replace("Type=notify", "Type=notifyy")
    (folder / "cbserver@.service").write_text(text)
    assert "Failed to parse service type" in verify(folder, "cbserver@1.service")


@pytest.mark.skipif(Path("/opt/cbserver/.venv/bin/twistd").exists(),
                    reason="cbserver is installed in /opt/cbserver on this machine")
def test_verify_checks_the_execstart_path(tmp_path):
    """The shipped unit as is, cbserver not installed where it says: verify names the path
    (what an operator sees when ExecStart= was not changed to the real installation)."""
    for name in ("cbserver@.service", "cbserver.target"):
        shutil.copy(DEPLOY / "systemd" / name, tmp_path / name)
    (tmp_path / "cbserver@1.service").symlink_to("cbserver@.service")
    said = verify(tmp_path, "cbserver@1.service")
    assert "/opt/cbserver/.venv/bin/twistd is not executable" in said, said


def test_systemd_unit_is_notify_restarts_and_is_hardened(tmp_path):
    text = (DEPLOY / "systemd" / "cbserver@.service").read_text()
    for line in ("Type=notify", "Restart=on-failure", "WatchdogSec=30s",
                 "--config /etc/cbserver/nodes/%i.toml", "StateDirectory=cbserver/%i"):
        assert line in text
    res = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                          str(units(tmp_path) / "cbserver@.service")],
                         capture_output=True, text=True, timeout=60)
    score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", res.stdout + res.stderr)
    assert score and float(score.group(1)) < 3.0, res.stdout[-2000:]


@pytest.mark.parametrize("dsn", [
    "host=db1.example.net,db2.example.net port=5432,5432 dbname=cbserver user=cbserver "
    "target_session_attrs=read-write",
    "postgresql://cbserver@db1.example.net:5432,db2.example.net:5432/cbserver"
    "?target_session_attrs=read-write",
])
def test_failover_dsns_are_taken_as_written_in_both_forms(etc, dsn):
    shared = etc / "cbserver.toml"
    text = shared.read_text()
    start = text.index('dsn = "')
    end = text.index('"', start + len('dsn = "'))
    shared.write_text(text[:start] + f'dsn = "{dsn}' + text[end:])
    assert load_config(etc / "nodes" / "1.toml").database.dsn == dsn
