"""What the writer does when it cannot keep a leg: the leg's Deferred fails, the log line
carries the leg in full, and the writer carries on (it never waits for ever)."""

from __future__ import annotations

import json

from twisted.logger import LogLevel

from cbserver.billing.xdr import XdrRejected
from tests.unit.xdr.test_xdr_spool import leg, make_writer


def test_a_refused_leg_whose_reject_file_cannot_be_written_still_fails_and_is_logged(tmp_path,
                                                                                       logged):
    writer, db, clock = make_writer(tmp_path)
    (tmp_path / "xdr.spool.rejected").mkdir()  # appending to it raises IsADirectoryError
    db.fail_next = ValueError("numeric field overflow")
    failure = []
    writer.record(leg("bad", amount="1.23456")).addErrback(failure.append)
    clock.advance(0)
    assert failure and failure[0].check(XdrRejected)
    [line] = [e for e in logged if e.get("log_level") == LogLevel.critical]
    assert json.loads(line["record"])["leg"]["amount"] == "1.23456"
    writer.record(leg("good"))
    clock.advance(0)
    assert db.stored() == [("good", "A")]  # the writer was not left busy
    d = writer.stopService()
    assert d.called


def test_a_leg_the_spool_cannot_take_is_logged_in_full(tmp_path, logged, monkeypatch):
    writer, db, clock = make_writer(tmp_path)
    db.down()

    def full(records):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer.spool, "append", full)
    failure = []
    writer.record(leg("s9", "B", amount="0.98765")).addErrback(failure.append)
    clock.advance(0)
    assert failure and failure[0].check(OSError)
    [line] = [e for e in logged if e.get("log_level") == LogLevel.critical]
    [kept] = json.loads(line["legs"])
    assert (kept["session_id"], kept["leg"], kept["amount"]) == ("s9", "B", "0.98765")
    assert writer.stopService().called
