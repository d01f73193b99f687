"""Start-up: building the service tree does no I/O, and the database gate opens when it is ready."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from twisted.application import service
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher

from cbserver import tap
from cbserver.config import example_path

# -- building the tree --------------------------------------------------------------------


def config_file(folder: Path) -> Path:
    """The shipped example with its state under ``folder`` and a database nothing answers on."""
    text = example_path().read_text()
    for old, new in {
        'state_dir = "var"': f'state_dir = "{folder / "state"}"',
        'dsn = "host=127.0.0.1 port=5432 dbname=cbserver user=cbserver"':
            'dsn = "host=127.0.0.1 port=9 dbname=cbserver user=cbserver connect_timeout=1"',
        'endpoint = "ssl:8901"': 'endpoint = "ssl:18901:interface=127.0.0.1"',
    }.items():
        assert old in text, old
        text = text.replace(old, new)
    path = folder / "cbserver.toml"
    path.write_text(text)
    return path


def files_under(folder: Path) -> list[str]:
    """Every path under ``folder``, relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_make_service_writes_no_file_and_opens_no_socket(tmp_path, monkeypatch):
    installed = []
    monkeypatch.setattr(tap, "_install_signal_handlers", installed.append)
    path = config_file(tmp_path)
    options = tap.Options()
    options.parseOptions(["--config", str(path), "--no-preflight"])
    before = files_under(tmp_path)
    tree = tap.makeService(options)
    assert isinstance(tree, tap.CallbackServer)
    assert files_under(tmp_path) == before  # no state folder, no certificate, no spool
    assert not (tmp_path / "state" / "tls" / "cert.pem").exists()


def test_the_certificate_is_written_and_the_web_port_opened_by_start_service(tmp_path):
    reactor = MemoryReactorClock()
    options = tap.Options()
    options.parseOptions(["--config", str(config_file(tmp_path)), "--no-preflight"])
    server = tap.CallbackServer(options.config, reactor)
    cert = tmp_path / "state" / "tls" / "cert.pem"
    assert not cert.exists()
    assert (reactor.tcpServers, reactor.sslServers, reactor.tcpClients) == ([], [], [])
    server.startService()
    try:
        assert cert.exists() and (tmp_path / "state" / "tls" / "key.pem").exists()
        # The public endpoint listens at once (for /healthz); the admin endpoint and the SIP
        # port (UDP: this reactor has none, so starting it would fail) wait for the database,
        # which never answers here.
        assert [port for port, *_ in reactor.sslServers] == [18901]
        assert not server.gated.children_started and not server.sip.running
    finally:
        server.stopService()
    assert not server.running and not server.gated.running


# -- the database gate ----------------------------------------------------------------------


class LaterDatabase:
    """A database whose ``when_ready()`` fires when the test says so."""

    def __init__(self):
        self.waiters: list[defer.Deferred] = []

    def when_ready(self) -> defer.Deferred:
        d = defer.Deferred()
        self.waiters.append(d)
        return d

    def become_ready(self) -> None:
        for d in self.waiters:
            d.callback(self)


class Recording(service.Service):
    """A child that records its starts and stops."""

    def __init__(self, name: str, journal: list):
        self.name = name
        self.journal = journal

    def startService(self):
        super().startService()
        self.journal.append(("start", self.name))

    def stopService(self):
        super().stopService()
        self.journal.append(("stop", self.name))


@pytest.fixture
def errors():
    """Critical/error log events (unhandled Deferred failures are logged at critical)."""
    seen = []

    def observe(event):
        if event.get("log_level") is not None and event["log_level"].name in ("error", "critical"):
            seen.append(event)

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def gate_with_children(journal: list, started: list):
    db = LaterDatabase()
    gate = tap.DatabaseGated(db, on_started=lambda: started.append(True))
    Recording("sip", journal).setServiceParent(gate)
    Recording("callbacks", journal).setServiceParent(gate)
    return db, gate


def test_children_start_only_once_the_database_is_ready_and_stop_in_reverse(errors):
    journal, started = [], []
    db, gate = gate_with_children(journal, started)
    gate.privilegedStartService()
    gate.startService()
    assert gate.running and journal == [] and started == []
    late = Recording("admin", journal)
    late.setServiceParent(gate)  # added while waiting: waits with the others
    assert journal == [] and not late.running
    db.become_ready()
    assert journal == [("start", "sip"), ("start", "callbacks"), ("start", "admin")]
    assert started == [True] and gate.children_started
    d = gate.stopService()
    assert d.called
    assert journal[3:] == [("stop", "admin"), ("stop", "callbacks"), ("stop", "sip")]
    assert not gate.running and errors == []


def test_stopping_before_the_database_is_ready_leaves_nothing_running(errors):
    journal, started = [], []
    db, gate = gate_with_children(journal, started)
    gate.startService()
    d = gate.stopService()
    assert d.called and not gate.running
    db.become_ready()  # too late: the wait was cancelled
    assert journal == [] and started == []
    assert not any(child.running for child in gate)
    del d, db
    gc.collect()  # an unhandled failure in a Deferred is logged when it is collected
    assert errors == []


def test_a_gate_restarted_after_an_early_stop_opens_on_readiness(errors):
    journal, started = [], []
    db, gate = gate_with_children(journal, started)
    gate.startService()
    gate.stopService()
    gate.startService()
    db.become_ready()
    assert journal == [("start", "sip"), ("start", "callbacks")] and started == [True]
    gate.stopService()
    assert errors == []


def test_the_demo_writes_secrets_owner_only(tmp_path):
    """Issue 14 item 12: the demo config (trunk password) is 0600, even over a wider file."""
    import stat

    from cbserver.commands.demo import write_private

    path = tmp_path / "cbserver.toml"
    path.write_text("old")
    path.chmod(0o644)
    write_private(path, "password = 'x'\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "password = 'x'\n"
    write_private(tmp_path / "new.toml", "y")
    assert stat.S_IMODE((tmp_path / "new.toml").stat().st_mode) == 0o600


def test_recovery_and_cut_margin_settings_reach_the_services(tmp_path):
    path = config_file(tmp_path)
    text = path.read_text()
    for old, new in {"stale_after = 15": "stale_after = 40", "interval = 5.0": "interval = 7.5",
                     "cut_margin = 2.0": "cut_margin = 3.25"}.items():
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    options = tap.Options()
    options.parseOptions(["--config", str(path), "--no-preflight"])
    server = tap.CallbackServer(options.config, MemoryReactorClock())
    assert (server.recovery.stale_after, server.recovery.interval) == (40, 7.5)
    app = options.config.application[0]
    assert server.callbacks._context(app).cut_margin == 3.25
