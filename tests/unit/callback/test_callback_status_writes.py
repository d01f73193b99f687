"""The status writer: one upsert per batch for every callback, newest state last, retries."""

import json

from twisted.internet import defer
from twisted.internet.task import Clock

from cbserver.callback.api import CallbackSnapshot
from cbserver.callback.statuswriter import StatusWriter


class SlowDb:
    """runOperation returns Deferreds the test fires by hand; records each batch's rows."""

    instance_id = "00000000-0000-0000-0000-000000000009"

    def __init__(self):
        self.batches = []
        self.params = []
        self.ready = True
        self.ready_waiters = []
        self.recovery = []  # per batch: ({session: (node, instance, data)}, [ids deleted])

    def when_ready(self):
        d = defer.Deferred()
        self.ready_waiters.append(d)
        return d

    def runOperation(self, sql, params):
        assert "ON CONFLICT (id) DO UPDATE" in sql
        self.params.append(params)
        ids, states = params[0], params[7]
        d = defer.Deferred()
        self.batches.append(({i: json.loads(s)["status"] for i, s in zip(ids, states, strict=True)}, d))
        # The crash-recovery rows riding the batch (upsert_with_recovery): saved, then deleted.
        if len(params) > 10:
            assert "INSERT INTO callback_recovery" in sql and "DELETE FROM callback_recovery" in sql
            saves = {sid: (node, inst, json.loads(data))
                     for sid, node, inst, data in zip(*params[10:14], strict=True)}
            self.recovery.append((saves, params[14]))
        else:
            self.recovery.append(({}, []))
        return d


class Session:
    """What the writer reads: only the immutable snapshot (no request, no legs)."""

    def __init__(self, sid):
        self.id = sid
        self.status = "calling_you"

    def snapshot(self):
        return CallbackSnapshot(id=self.id, application="A", mode="simple", account_id="cb1",
                                phone="15550100", destination="1818", status=self.status,
                                state={"id": self.id, "status": self.status, "application": "A",
                                       "mode": "simple"})


def writer():
    db, clock = SlowDb(), Clock()
    return StatusWriter(db, clock, "node1", linger=0.2, retry_delay=1.0, max_attempts=3), db, clock


def test_changes_within_the_linger_time_are_one_statement():
    w, db, clock = writer()
    sessions = [Session(f"s{i}") for i in range(5)]
    for s in sessions[:3]:
        w.store(s)
    clock.advance(0.1)
    for s in sessions[3:]:
        w.store(s)
    assert db.batches == []  # not one write per change
    clock.advance(0.1)
    assert len(db.batches) == 1
    assert db.batches[0][0] == {f"s{i}": "calling_you" for i in range(5)}


def test_a_new_callbacks_row_does_not_linger_and_takes_the_queued_changes_along():
    w, db, clock = writer()
    w.store(Session("old"))
    w.store(Session("new"), new=True)
    clock.advance(0)
    assert db.batches[0][0] == {"old": "calling_you", "new": "calling_you"}


def test_changes_during_a_write_are_coalesced_into_the_next_batch_with_the_newest_state():
    w, db, clock = writer()
    s, t = Session("s1"), Session("s2")
    w.store(s)
    clock.advance(0.2)
    for status in ("answered", "calling_destination", "connected"):
        s.status = status
        w.store(s)
    w.store(t)
    clock.advance(0.2)
    assert len(db.batches) == 1  # one batch in flight at a time
    settled = []
    w.settled("s1").addCallback(settled.append)
    db.batches[0][1].callback(None)
    clock.advance(0.2)
    assert db.batches[1][0] == {"s1": "connected", "s2": "calling_you"}
    assert settled == []
    db.batches[1][1].callback(None)
    assert settled == [None]
    assert w.settled("s1").called and w.pending() == []


def test_a_new_callbacks_first_row_is_confirmed_when_committed():
    w, db, clock = writer()
    confirmed = w.store(Session("s1"), new=True)
    clock.advance(0)
    assert not confirmed.called
    db.batches[0][1].callback(None)
    assert confirmed.called and confirmed.result is None


def test_a_failed_batch_refuses_new_rows_and_retries_the_others_a_few_times():
    w, db, clock = writer()
    old = Session("old")
    w.store(old)
    confirmed = w.store(Session("new"), new=True)
    clock.advance(0)
    db.batches[0][1].errback(RuntimeError("database away"))
    failures = []
    confirmed.addErrback(failures.append)
    assert len(failures) == 1 and failures[0].check(RuntimeError)
    clock.advance(0.5)
    assert len(db.batches) == 1  # the retry waits retry_delay
    clock.advance(0.5)
    assert db.batches[1][0] == {"old": "calling_you"}  # the refused new row is not retried
    db.batches[1][1].errback(RuntimeError("still away"))
    clock.advance(1.0)
    db.batches[2][1].errback(RuntimeError("still away"))
    clock.advance(5.0)
    assert len(db.batches) == 3  # max_attempts reached: given up
    assert w.settled("old").called


def test_a_final_status_is_retried_until_stored():
    w, db, clock = writer()
    s = Session("s1")
    s.status = "ended"
    w.store(s)
    clock.advance(0.2)
    for i in range(6):  # twice max_attempts: a final status is never given up
        db.batches[i][1].errback(RuntimeError("database away"))
        clock.advance(1.0)
        assert len(db.batches) == i + 2
        assert db.batches[i + 1][0] == {"s1": "ended"}
    settled = []
    w.settled("s1").addCallback(settled.append)
    assert settled == []
    db.batches[6][1].callback(None)
    assert settled == [None] and w.pending() == []


def _final_status_failed_with_the_pool_down():
    """A writer whose first batch (s1 ended) failed while the pool went down."""
    w, db, clock = writer()
    s = Session("s1")
    s.status = "ended"
    w.store(s)
    clock.advance(0.2)
    db.ready = False
    db.batches[0][1].errback(RuntimeError("database away"))
    return w, db, clock


def test_while_the_pool_is_down_the_retry_waits_for_it():
    w, db, clock = _final_status_failed_with_the_pool_down()
    w.store(Session("s2"))  # changes meanwhile queue behind the wait
    clock.advance(30.0)
    assert len(db.batches) == 1 and len(db.ready_waiters) == 1
    db.ready = True
    db.ready_waiters[0].callback(db)
    clock.advance(0)
    assert db.batches[1][0] == {"s1": "ended", "s2": "calling_you"}


def test_a_new_callbacks_row_does_not_wait_for_the_pool():
    w, db, clock = _final_status_failed_with_the_pool_down()
    confirmed = w.store(Session("new"), new=True)
    clock.advance(0)
    assert len(db.batches) == 2 and "new" in db.batches[1][0]
    db.batches[1][1].errback(RuntimeError("still away"))
    failures = []
    confirmed.addErrback(failures.append)
    assert len(failures) == 1  # refused at once, as before


def test_a_row_is_the_sessions_immutable_snapshot():
    w, db, clock = writer()
    s = Session("s1")
    w.store(s)
    clock.advance(0.2)
    ids, apps, modes, accounts, phones, destinations, statuses = db.params[0][:7]
    assert (ids, apps, modes, accounts, phones, destinations, statuses) == (
        ["s1"], ["A"], ["simple"], ["cb1"], ["15550100"], ["1818"], ["calling_you"])


# -- the crash-recovery rows ride the batches (issue 17 item 1) -------------------------------

def test_recovery_snapshots_ride_the_status_batch_newest_only_in_one_statement():
    w, db, clock = writer()
    s, t = Session("s1"), Session("s2")
    w.store(t)
    w.save_recovery(s, {"legs": ["A"]})
    clock.advance(0.1)
    w.save_recovery(s, {"legs": ["A", "B"]})  # legB answered within the linger time
    assert db.batches == []  # no statement of its own
    clock.advance(0.1)
    assert len(db.batches) == 1
    assert db.batches[0][0] == {"s1": "calling_you", "s2": "calling_you"}  # with its status
    assert db.recovery[0] == ({"s1": ("node1", SlowDb.instance_id, {"legs": ["A", "B"]})}, [])
    db.batches[0][1].callback(None)
    clock.advance(1.0)
    assert len(db.batches) == 1 and w.pending() == []  # saved once


def test_the_recovery_row_goes_in_the_statement_that_stores_the_final_status():
    w, db, clock = writer()
    s = Session("s1")
    w.save_recovery(s, {"legs": ["A"]})
    clock.advance(0.2)
    db.batches[0][1].callback(None)
    s.status = "ended"
    w.store(s)
    w.drop_recovery(s)
    clock.advance(0.2)
    assert db.batches[1][0] == {"s1": "ended"}
    assert db.recovery[1] == ({}, ["s1"])


def test_a_snapshot_not_yet_saved_when_the_callback_ends_is_never_saved():
    w, db, clock = writer()
    s = Session("s1")
    w.save_recovery(s, {"legs": ["A"]})
    s.status = "ended"
    w.store(s)
    w.drop_recovery(s)
    clock.advance(0.2)
    assert len(db.batches) == 1 and db.recovery[0] == ({}, ["s1"])


def test_a_delete_waits_for_the_final_status():
    """drop_recovery before the final status is queued: the row stays until it is."""
    w, db, clock = writer()
    s = Session("s1")
    w.drop_recovery(s)
    clock.advance(0.2)
    assert db.recovery[0] == ({}, [])  # calling_you: not final, no delete
    db.batches[0][1].callback(None)
    s.status = "ended"
    w.store(s)
    clock.advance(0.2)
    assert db.recovery[1] == ({}, ["s1"])


def test_a_failed_recovery_save_is_retried_past_max_attempts_while_the_callback_runs():
    w, db, clock = writer()
    s = Session("s1")
    w.save_recovery(s, {"legs": ["A"]})
    clock.advance(0.2)
    for i in range(6):  # twice max_attempts
        db.batches[i][1].errback(RuntimeError("database away"))
        if i == 2:
            w.save_recovery(s, {"legs": ["A", "B"]})  # newer than the one that failed
        clock.advance(1.0)
        assert len(db.batches) == i + 2
        assert db.recovery[i + 1][0]["s1"][2] == {"legs": ["A"] if i < 2 else ["A", "B"]}
    db.batches[6][1].callback(None)
    clock.advance(5.0)
    assert len(db.batches) == 7 and w.pending() == []


def test_a_failed_delete_is_retried_with_its_final_status_and_no_stale_save_follows():
    w, db, clock = writer()
    s = Session("s1")
    w.save_recovery(s, {"legs": ["A"]})
    clock.advance(0.2)
    db.batches[0][1].errback(RuntimeError("database away"))  # the save failed
    s.status = "ended"
    w.store(s)
    w.drop_recovery(s)  # ended before the retry: the failed save is not retried
    clock.advance(1.0)
    assert db.batches[1][0] == {"s1": "ended"} and db.recovery[1] == ({}, ["s1"])
    db.batches[1][1].errback(RuntimeError("database away"))
    clock.advance(1.0)
    assert db.batches[2][0] == {"s1": "ended"} and db.recovery[2] == ({}, ["s1"])
    db.batches[2][1].callback(None)
    clock.advance(5.0)
    assert len(db.batches) == 3 and w.pending() == []
