"""Operator hang-ups on the node's side, on a fake clock: the watcher polls only while calls
run, ends the sessions it runs with cause operator_hangup, marks every request handled; and a
session told to hang up ends both legs and writes both xDRs like a shutdown does."""

from twisted.internet import defer
from twisted.internet.task import Clock

from cbserver.callback.hangups import HangupWatcher
from tests.unit.callback.test_callback_session import Harness


class Store:
    """Pending requests in memory; records what the watcher asked."""

    def __init__(self, pending):
        self.pending = list(pending)
        self.asked = 0
        self.handled = []

    def pending_hangups(self, instance_id):
        self.asked += 1
        assert instance_id == "me"
        return defer.succeed(list(self.pending))

    def hangups_handled(self, ids):
        self.handled += list(ids)
        self.pending = [i for i in self.pending if i not in ids]
        return defer.succeed(None)


class Session:
    def __init__(self):
        self.hung = []

    def hang_up(self, code, reason):
        self.hung.append((code, reason))


class Callbacks:
    def __init__(self, sessions):
        self.sessions = sessions


def test_the_watcher_polls_only_while_calls_run_and_hangs_up_its_own():
    clock = Clock()
    mine = Session()
    callbacks = Callbacks({})
    store = Store(["s1", "gone"])
    w = HangupWatcher(store, callbacks, clock, "me", interval=1.0)
    w.startService()
    clock.advance(5)
    assert store.asked == 0  # no call on this node: no query
    callbacks.sessions["s1"] = mine
    clock.advance(1)
    assert store.asked == 1
    assert mine.hung == [("operator_hangup", "hung up by the operator")]
    assert store.handled == ["s1", "gone"]  # one that ended meanwhile is handled too
    clock.advance(1)
    assert mine.hung == [("operator_hangup", "hung up by the operator")]  # once
    w.stopService()
    assert not clock.getDelayedCalls()


def test_a_database_error_is_logged_and_the_next_poll_tries_again(logged):
    clock = Clock()
    store = Store(["s1"])
    calls = []

    def failing(instance_id):
        calls.append(instance_id)
        return defer.fail(RuntimeError("database away")) if len(calls) == 1 else defer.succeed(["s1"])

    store.pending_hangups = failing
    session = Session()
    w = HangupWatcher(store, Callbacks({"s1": session}), clock, "me", interval=1.0)
    w.startService()
    clock.advance(1)
    assert session.hung == [] and any("hang-up requests not read" in str(e.get("log_format")) for e in logged)
    clock.advance(1)
    assert len(session.hung) == 1
    w.stopService()


def test_a_connected_session_hung_up_ends_both_legs_and_bills_them():
    h = Harness()
    h.a.answer()
    h.b.answer()
    h.clock.advance(20)
    h.session.hang_up("operator_hangup", "hung up by the operator")
    assert h.final[0]["cause"] == {"code": "operator_hangup", "sip_status": None,
                                   "reason": "hung up by the operator"}
    assert h.a.hangups == 1 and h.b.hangups == 1
    recs = h.records()
    assert recs["A"].duration == 20 and recs["B"].duration == 20 and recs["B"].amount > 0
    h.assert_clean()


def test_a_ringing_session_hung_up_is_cancelled_and_a_second_request_changes_nothing():
    h = Harness()
    h.clock.advance(2)
    h.a.ring()
    h.clock.advance(1)
    h.session.hang_up("operator_hangup", "x")
    h.session.hang_up("operator_hangup", "again")  # ending already: ignored
    assert h.final[0]["cause"]["code"] == "operator_hangup"
    assert h.final[0]["legs"]["A"]["post_dial_delay"] == 2.0  # INVITE to 180
    assert h.a.hangups == 1
    h.assert_clean()
