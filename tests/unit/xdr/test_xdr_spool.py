"""The spool file and the writer's spool/replay logic, with a fake database and a fake clock."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import psycopg2
import pytest
from twisted.internet import defer, task
from twisted.python.failure import Failure
from txpostgres.txpostgres import RollbackFailed
from zope.interface import implementer
from zope.interface.verify import verifyObject

from cbserver.billing.spool import Spool
from cbserver.billing.xdr import InvalidLegRecord, LegRecord, XdrRejected, XdrWriter
from cbserver.db.pool import IDatabase
from cbserver.db.stores import PostgresXdrStore
from cbserver.errors import DatabaseUnavailable

T0 = dt.datetime(2026, 3, 29, 0, 59, 59, 999999, tzinfo=dt.UTC)


def leg(session="s1", which="A", amount="0.12345"):
    return LegRecord(session_id=session, leg=which, account_id="cb1", cli="1", cld="2", node="n",
                     connect_time=T0, disconnect_time=T0 + dt.timedelta(seconds=5), duration=5,
                     charged_seconds=6, amount=Decimal(amount), currency="EUR", trigger_mode="hosted")


@implementer(IDatabase)
class FakeDatabase:
    """Stores batches in memory; ``down()`` makes it refuse work until ``up()``."""

    def __init__(self):
        self.ready = True
        self.batches: list[list] = []
        self.fail_next: Exception | None = None
        self._waiters: list[defer.Deferred] = []

    def down(self):
        self.ready = False

    def up(self):
        self.ready = True
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self)

    def when_ready(self):
        if self.ready:
            return defer.succeed(self)
        d = defer.Deferred()
        self._waiters.append(d)
        return d

    def runQuery(self, sql, params=None):
        raise NotImplementedError

    def runOperation(self, sql, params=None):
        raise NotImplementedError

    def runInteraction(self, fn, *args, **kwargs):
        legs = args[0]
        if not self.ready:
            return defer.fail(DatabaseUnavailable("down"))
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            if isinstance(error, DatabaseUnavailable):
                self.ready = False  # as the real pool does when a connection dies
            return defer.fail(error)
        self.batches.append([x.key for x in legs])
        return defer.succeed(set())

    def health(self):
        return {"status": "ok" if self.ready else "down"}

    def stored(self):
        return [k for batch in self.batches for k in batch]


def make_writer(tmp_path, db=None, **kw):
    clock = task.Clock()
    db = db or FakeDatabase()
    writer = XdrWriter(PostgresXdrStore(db), clock, Spool(tmp_path / "xdr.spool"), **kw)
    writer.startService()
    return writer, db, clock


def test_fake_database_provides_the_interface():
    assert verifyObject(IDatabase, FakeDatabase())


def test_leg_record_round_trips_through_json_with_ms_precision():
    original = leg()
    assert original.connect_time.microsecond == 999000
    text = json.dumps(original.to_dict())
    again = LegRecord.from_dict(json.loads(text))
    assert again == original and again.amount == Decimal("0.12345")


@pytest.mark.parametrize(("change", "field"), [
    ({"leg": "C"}, "leg"), ({"trigger_mode": "web"}, "trigger_mode"),
    ({"amount": 0.1}, "amount"), ({"amount": Decimal("-1")}, "amount"),
    ({"connect_time": None}, "connect_time"),
    ({"disconnect_time": dt.datetime(2026, 1, 1)}, "disconnect_time"),
])
def test_impossible_leg_records_are_refused(change, field):
    values = {**leg().__dict__, **change}
    with pytest.raises(InvalidLegRecord) as info:
        LegRecord(**values)
    assert info.value.field == field


def test_spool_appends_lines_and_replays_a_snapshot(tmp_path):
    spool = Spool(tmp_path / "s")
    assert spool.open() == 0
    spool.append([{"n": 1}, {"n": 2}])
    assert spool.depth == 2
    assert spool.begin_replay() == [{"n": 1}, {"n": 2}]
    spool.append([{"n": 3}])  # arrives during the replay: goes to a fresh spool
    assert spool.depth == 3
    spool.finish_replay()
    assert spool.depth == 1 and spool.begin_replay() == [{"n": 3}]
    spool.finish_replay()
    assert spool.depth == 0 and spool.begin_replay() == []


def test_spool_left_behind_is_counted_and_a_torn_line_is_kept_aside(tmp_path):
    path = tmp_path / "s"
    path.write_text('{"n": 1}\n{"n": 2}\n{"n": 3')
    spool = Spool(path)
    assert spool.open() == 3
    assert spool.begin_replay() == [{"n": 1}, {"n": 2}]
    assert (tmp_path / "s.corrupt").read_text() == '{"n": 3\n'
    spool.finish_replay()
    assert spool.depth == 0


def test_legs_go_to_the_spool_while_the_database_is_down_and_replay_in_order(tmp_path):
    writer, db, clock = make_writer(tmp_path)
    db.down()
    acks = [writer.record(leg(f"s{i}")) for i in range(3)]
    clock.advance(0)  # the queue is pumped at the end of the reactor turn
    assert all(d.called for d in acks)  # acknowledged: fsync'd in the spool
    assert writer.health()["depth"] == 3 and writer.health()["mode"] == "spooling"
    db.ready = True  # ready but the replay has not run yet: new legs still queue behind the spool
    writer.record(leg("s3"))
    clock.advance(0)
    assert db.stored() == [] and writer.spool.depth == 4
    db.up()
    assert db.stored() == [("s0", "A"), ("s1", "A"), ("s2", "A"), ("s3", "A")]
    assert writer.health() == {"depth": 0, "mode": "direct", "written": 4, "rejected": 0}
    writer.record(leg("s4"))
    clock.advance(0)
    assert db.stored()[-1] == ("s4", "A")
    writer.stopService()
    assert clock.getDelayedCalls() == []


def test_a_batch_failing_mid_write_is_spooled_then_replayed(tmp_path):
    writer, db, clock = make_writer(tmp_path)
    db.fail_next = DatabaseUnavailable("connection lost")
    d = writer.record(leg("s1"))
    clock.advance(0)
    assert d.called and writer.spool.depth == 1
    db.up()
    assert db.stored() == [("s1", "A")] and writer.spool.depth == 0
    writer.stopService()


def test_an_interrupted_replay_retries_after_a_pause(tmp_path):
    writer, db, clock = make_writer(tmp_path)
    db.down()
    writer.record(leg("s1"))
    clock.advance(0)
    db.fail_next = DatabaseUnavailable("flapping")
    db.up()
    assert db.stored() == [] and writer.spool.depth == 1
    clock.advance(writer.retry_delay)  # waits for the pool again ...
    assert db.stored() == []
    db.up()  # ... and replays once it is back
    assert db.stored() == [("s1", "A")] and writer.spool.depth == 0
    writer.stopService()
    assert clock.getDelayedCalls() == []


def test_a_restart_replays_the_spool_left_behind(tmp_path):
    writer, db, _ = make_writer(tmp_path)
    db.down()
    writer.record(leg("s1"))
    writer.record(leg("s1", "B"))
    writer.stopService()
    again, db2, _ = make_writer(tmp_path)
    assert db2.stored() == [("s1", "A"), ("s1", "B")] and again.spool.depth == 0
    again.stopService()


def test_a_leg_the_database_refuses_is_kept_in_the_reject_file(tmp_path):
    writer, db, clock = make_writer(tmp_path)
    db.fail_next = ValueError("numeric field overflow")
    failure = []
    writer.record(leg("bad")).addErrback(failure.append)
    clock.advance(0)
    assert failure and failure[0].check(XdrRejected)
    kept = json.loads((tmp_path / "xdr.spool.rejected").read_text())
    assert kept["leg"]["session_id"] == "bad" and "overflow" in kept["error"]
    writer.record(leg("good"))
    clock.advance(0)
    assert db.stored() == [("good", "A")]
    writer.stopService()


def test_queued_legs_wait_for_the_transaction_in_flight_then_go_together(tmp_path):
    db = FakeDatabase()
    gate = defer.Deferred()
    real = db.runInteraction

    def slow(fn, legs):
        d = real(fn, legs)  # noqa: F841 - stored now, answered when the gate opens
        if len(db.batches) == 1:
            return gate.addCallback(lambda _: d)
        return d

    db.runInteraction = slow
    writer, _, clock = make_writer(tmp_path, db, max_in_flight=1)
    first = writer.record(leg("s0"))
    clock.advance(0)
    rest = [writer.record(leg(f"s{i}")) for i in range(1, 6)]
    clock.advance(0)
    assert not first.called and len(db.batches) == 1
    gate.callback(None)
    assert first.called and all(d.called for d in rest)
    assert [len(b) for b in db.batches] == [1, 5]
    writer.stopService()


def test_up_to_max_in_flight_transactions_overlap(tmp_path):
    db = FakeDatabase()
    gates = []
    real = db.runInteraction

    def held(fn, legs):
        d = defer.Deferred()
        gates.append((d, real(fn, legs)))
        return d

    db.runInteraction = held
    writer, _, clock = make_writer(tmp_path, db, max_in_flight=2)
    acks = [writer.record(leg(f"s{i}")) for i in range(10)]
    clock.advance(0)  # all ten in one turn: one transaction
    assert [len(b) for b in db.batches] == [10]
    more = [writer.record(leg(f"t{i}")) for i in range(3)]
    clock.advance(0)  # a second transaction may overlap the first
    later = [writer.record(leg(f"u{i}")) for i in range(4)]
    clock.advance(0)  # two in flight: these four queue
    assert [len(b) for b in db.batches] == [10, 3]
    gates[0][0].callback(set())
    assert [len(b) for b in db.batches] == [10, 3, 4] and all(a.called for a in acks)
    assert not any(a.called for a in more + later)
    for d, _ in gates[1:]:
        d.callback(set())
    assert all(a.called for a in more + later)
    stopped = writer.stopService()
    assert stopped.called


def test_a_transaction_whose_rollback_failed_is_spooled_not_rejected(tmp_path):
    writer, db, clock = make_writer(tmp_path)
    db.fail_next = RollbackFailed(None, Failure(psycopg2.OperationalError("server closed the connection")))
    d = writer.record(leg("s1"))
    clock.advance(0)
    assert d.called and d.result is None
    assert writer.health()["rejected"] == 0
    db.ready = False  # the pool notices the dead connection ...
    db.up()  # ... and reconnects: the spool is replayed
    assert db.stored() == [("s1", "A")] and writer.spool.depth == 0
    writer.stopService()


def test_a_spooled_leg_the_database_refuses_does_not_block_the_replay(tmp_path):
    db = FakeDatabase()
    real = db.runInteraction

    def picky(fn, legs):
        if any(x.session_id == "poison" for x in legs):
            return defer.fail(psycopg2.errors.CheckViolation("amount out of range"))
        return real(fn, legs)

    db.runInteraction = picky
    writer, _, clock = make_writer(tmp_path, db)
    db.down()
    for name in ("s1", "poison", "s2"):
        writer.record(leg(name))
    clock.advance(0)
    writer.spool.append([{"session_id": "x", "leg": "Z"}])  # readable JSON, not a leg
    db.up()
    assert db.stored() == [("s1", "A"), ("s2", "A")]
    assert writer.health() == {"depth": 0, "mode": "direct", "written": 2, "rejected": 2}
    kept = [json.loads(line) for line in (tmp_path / "xdr.spool.rejected").read_text().splitlines()]
    assert sorted(k["leg"]["session_id"] for k in kept) == ["poison", "x"]
    writer.stopService()
    assert clock.getDelayedCalls() == []
