"""The generator's notification mail (the manual: the CSV is mailed to whoever created the
cards), sent over real SMTP to a Twisted server on loopback; PostgreSQL is real too."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest
import pytest_twisted
from twisted.internet import reactor

from cbserver.billing.generator import Generator
from cbserver.billing.validation import ValidationError
from cbserver.config import NotificationsConfig
from cbserver.db.stores import PostgresCatalogStore
from cbserver.mail import Mailer
from tests.support.smtpsink import SmtpSink

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
REQUEST = {"customer": "Retail", "product": "Callback Services", "quantity": 25, "batch": "cards-1",
           "prefix": "cb1818", "length": 9, "opening_balance": "20"}


async def _setup(catalog, accounts):
    await catalog.create_tariff({"name": "Callback", "currency": "USD"})
    await catalog.create_product({"name": "Callback Services", "currency": "USD",
                                  "rating_list": [{"node": "node1", "tariff": "Callback"}]})
    await accounts.create_customer({"name": "Retail", "currency": "USD"})


def _count(dsn: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM accounts")
        n = cur.fetchone()[0]
    conn.close()
    return n


@pytest.fixture
def sink():
    s = SmtpSink(refuse=("nobody@example.net",))
    s.start()
    yield s
    pytest_twisted.blockon(s.stop())


def _mailer(port: int, **kw) -> Mailer:
    return Mailer(NotificationsConfig(smtp=f"127.0.0.1:{port}", sender="cards@example.net", **kw),
                  reactor, timeout=10)


@pytest_twisted.ensureDeferred
async def test_the_csv_is_mailed_to_the_requester_and_the_configured_recipients(
        catalog, accounts, db, tmp_path, sink):
    await _setup(catalog, accounts)
    gen = Generator(PostgresCatalogStore(db), reactor, tmp_path, _mailer(
        sink.port.getHost().port, generator_recipients=("accounting@example.net", "ops@example.net")))
    result = await gen.generate({**REQUEST, "notify": ["ops@example.net"]})
    # One message; each address once, the requester first.
    assert result["notification"] == {"to": ["ops@example.net", "accounting@example.net"],
                                      "sent": True}
    assert sorted(env for env, _ in sink.messages) == [
        ("cards@example.net", "accounting@example.net"), ("cards@example.net", "ops@example.net")]
    msg = sink.messages[0][1]
    assert msg["From"] == "cards@example.net"
    assert msg["To"] == "ops@example.net, accounting@example.net"
    assert msg["Subject"] == "cbserver: 25 accounts generated in batch cards-1"
    body = msg.get_body(("plain",)).get_content()
    assert "25 accounts were generated in batch 'cards-1'" in body and result["csv_path"] in body
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_content_type() == "text/csv"
    assert attachment.get_filename() == Path(result["csv_path"]).name
    sent = attachment.get_content()
    sent = sent.decode() if isinstance(sent, bytes) else sent
    # Byte for byte the file kept on the server (the manual's fallback), passwords included.
    assert sent.replace("\r\n", "\n") == Path(result["csv_path"]).read_text().replace("\r\n", "\n")
    rows = list(csv.DictReader(io.StringIO(sent)))
    assert len(rows) == 25 and all(r["service_password"] for r in rows)


@pytest_twisted.ensureDeferred
async def test_a_relay_that_is_down_loses_nothing(catalog, accounts, db, tmp_path, pg_dsn, sink):
    await _setup(catalog, accounts)
    port = sink.port.getHost().port
    await sink.stop()
    result = await Generator(PostgresCatalogStore(db), reactor, tmp_path, _mailer(port)).generate(
        {**REQUEST, "notify": ["ops@example.net"]})
    note = result["notification"]
    assert note["sent"] is False and note["to"] == ["ops@example.net"]
    assert f"127.0.0.1:{port}" in note["error"] and "refused" in note["error"].lower()
    assert _count(pg_dsn) == 25 and Path(result["csv_path"]).exists()
    sink.start()  # for the fixture's stop


@pytest_twisted.ensureDeferred
async def test_a_refused_recipient_is_reported(catalog, accounts, db, tmp_path, pg_dsn, sink):
    await _setup(catalog, accounts)
    result = await Generator(PostgresCatalogStore(db),
                             reactor, tmp_path, _mailer(sink.port.getHost().port)).generate(
        {**REQUEST, "notify": ["nobody@example.net"]})
    assert result["notification"]["sent"] is False
    assert "550" in result["notification"]["error"]
    assert sink.messages == [] and _count(pg_dsn) == 25


@pytest_twisted.ensureDeferred
async def test_asking_for_mail_without_a_relay_is_refused_before_anything_is_created(
        catalog, accounts, db, tmp_path, pg_dsn):
    await _setup(catalog, accounts)
    for mailer in (None, Mailer(NotificationsConfig(), reactor)):
        with pytest.raises(ValidationError) as e:
            await Generator(PostgresCatalogStore(db), reactor, tmp_path, mailer).generate(
                {**REQUEST, "notify": ["ops@example.net"]})
        assert e.value.field == "notify" and "[notifications] smtp" in e.value.reason
    with pytest.raises(ValidationError) as e:
        await Generator(PostgresCatalogStore(db), reactor, tmp_path).generate(
            {**REQUEST, "notify": ["not an address"]})
    assert e.value.field == "notify[0]"
    assert _count(pg_dsn) == 0 and list(tmp_path.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_the_cli_mails_the_csv_with_notify(pg_dsn, tmp_path):
    """``cbserver accounts generate --notify`` over the config's relay, as a subprocess."""
    from cbserver.commands.demo import demo_config

    sink = SmtpSink()
    port = sink.start()
    cbs = str(Path(sys.executable).parent / "cbserver")
    try:
        subprocess.run([cbs, "provision", str(ROOT / "demo" / "demo.toml"), "--dsn", pg_dsn],
                       check=True, capture_output=True, timeout=120)
        config = tmp_path / "cbserver.toml"
        text = demo_config(pg_dsn, tmp_path, 18901)
        assert '\nsmtp = ""\n' in text
        config.write_text(text.replace('\nsmtp = ""\n', f'\nsmtp = "127.0.0.1:{port}"\n'))
        # The relay runs on this process's reactor: run the CLI without blocking it.
        code, out, err = await _run(cbs, "accounts", "generate", "--config", str(config),
                                        "--customer", "Retail Callback", "--product",
                                        "Callback Services", "--quantity", "3", "--prefix", "cb2020",
                                        "--length", "10", "--batch", "mailed", "--notify",
                                        "ops@example.net", "--progress", "never")
    finally:
        await sink.stop()
    assert code == 0, err
    assert "the CSV was mailed to ops@example.net" in err
    csv_path = out.strip()
    assert csv_path.startswith(str(tmp_path / "cards"))  # [server] state_dir's cards folder
    [(envelope, msg)] = sink.messages
    assert envelope == ("cbserver@localhost", "ops@example.net")
    [attachment] = list(msg.iter_attachments())
    assert attachment.get_filename() == Path(csv_path).name


def _run(*argv):
    """Run a process from the reactor; fires with (exit code, stdout, stderr) as text."""
    from twisted.internet import utils

    d = utils.getProcessOutputAndValue(argv[0], argv[1:], env=dict(os.environ))
    return d.addCallback(lambda r: (r[2], r[0].decode(), r[1].decode()))


@pytest_twisted.ensureDeferred
async def test_the_admin_api_job_mails_the_csv(catalog, accounts, db, tmp_path, sink):
    from twisted.internet import task

    from cbserver.commands.demo import demo_config
    from cbserver.config import parse_config
    from tests.integration.catalog.admin_client import AdminClient

    await _setup(catalog, accounts)
    text = demo_config("dbname=unused", tmp_path, 18901).replace(
        '\nsmtp = ""\n', f'\nsmtp = "127.0.0.1:{sink.port.getHost().port}"\n')
    api = AdminClient(db, tmp_path / "cards", cfg=parse_config(text))
    job = await api.ok("POST", "/v1/generator/jobs", {**REQUEST, "notify": ["ops@example.net"]},
                       expect=202)
    while job["state"] == "running":
        await task.deferLater(reactor, 0.05, lambda: None)
        job = await api.ok("GET", f"/v1/generator/jobs/{job['id']}")
    assert job["state"] == "done", job
    assert job["result"]["notification"] == {"to": ["ops@example.net"], "sent": True}
    [(envelope, msg)] = sink.messages
    assert envelope == ("cbserver@localhost", "ops@example.net")
    assert [a.get_filename() for a in msg.iter_attachments()] == [
        Path(job["result"]["csv_path"]).name]
    # No relay on this admin endpoint's config: the request is refused at once, 400 on notify.
    bare = AdminClient(db, tmp_path / "cards")
    code, body = await bare.call("POST", "/v1/generator/jobs",
                                 {**REQUEST, "batch": "cards-2", "notify": ["ops@example.net"]})
    assert code == 400 and body["error"]["field"] == "notify"


@pytest_twisted.ensureDeferred
async def test_starttls_required_but_not_offered_sends_nothing(catalog, accounts, db, tmp_path, sink):
    # The sink offers no STARTTLS: with starttls = true the client must stop before AUTH, so the
    # password never crosses the wire in clear, and the batch is still there.
    await _setup(catalog, accounts)
    mailer = _mailer(sink.port.getHost().port, starttls=True, smtp_username="cards",
                     smtp_password="s3cret")
    result = await Generator(PostgresCatalogStore(db), reactor, tmp_path, mailer).generate(
        {**REQUEST, "notify": ["ops@example.net"]})
    assert result["notification"]["sent"] is False
    assert "TLS" in result["notification"]["error"]
    assert sink.messages == []


@pytest_twisted.ensureDeferred
async def test_a_provisioning_files_generate_entry_can_ask_for_the_mail(pg_dsn, tmp_path):
    from cbserver.commands.demo import demo_config

    sink = SmtpSink()
    port = sink.start()
    cbs = str(Path(sys.executable).parent / "cbserver")
    doc = (ROOT / "demo" / "demo.toml").read_text()
    assert doc.count("\n[[generate]]\n") == 1
    source = tmp_path / "catalog.toml"
    source.write_text(doc.replace("\n[[generate]]\n", '\n[[generate]]\nnotify = ["ops@example.net"]\n'))
    config = tmp_path / "cbserver.toml"
    config.write_text(demo_config(pg_dsn, tmp_path, 18901).replace(
        '\nsmtp = ""\n', f'\nsmtp = "127.0.0.1:{port}"\n'))
    try:
        code, out, err = await _run(cbs, "provision", str(source), "--config", str(config))
    finally:
        await sink.stop()
    assert code == 0, err
    [(envelope, msg)] = sink.messages
    assert envelope[1] == "ops@example.net" and "accounts generated in batch" in msg["Subject"]
