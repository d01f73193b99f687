"""The pool hands a freed connection to running callbacks' work before admissions' (issue 17
item 4), and estimates how long a new admission statement would wait (the gate's input)."""

from twisted.internet import defer
from twisted.internet.task import Clock

from cbserver import priority
from cbserver.db.pool import Database


class SlowConnection:
    """A connection whose statements finish only when the test fires them."""

    def __init__(self, pending):
        self.pending = pending

    def connect(self, dsn, **kw):
        return defer.succeed(self)

    def runQuery(self, sql, params=None):
        if "to_regclass" in sql:
            return defer.succeed([(True,)])
        if "max(version)" in sql:
            return defer.succeed([(1,)])
        d = defer.Deferred()
        self.pending.append((sql, d))
        return d

    runOperation = runQuery

    def close(self):
        pass


def make(size=2):
    pending = []
    clock = Clock()
    db = Database("dbname=x", clock, size=size, connection_factory=lambda: SlowConnection(pending),
                  required=1, register=False)
    db.startService()
    assert db.ready
    return db, clock, pending


def admission_query(db, sql):
    """Issue ``sql`` the way Admission does: from a generator marked as admission work."""

    @defer.inlineCallbacks
    def admit():
        token = priority.admission()
        try:
            return (yield db.runQuery(sql))
        finally:
            priority.restore(token)

    return admit()


def finish_first(pending, clock, step=0.1):
    """Let the oldest statement in progress finish after ``step`` seconds; its text."""
    clock.advance(step)
    sql, d = pending.pop(0)
    d.callback([(sql,)])
    return sql


def test_running_work_overtakes_queued_admissions():
    db, clock, pending = make(size=2)
    done = []
    for i in range(6):
        admission_query(db, f"admit {i}").addCallback(lambda rows: done.append(rows[0][0]))
    assert [sql for sql, _ in pending] == ["admit 0", "admit 1"]
    assert db.queued() == (0, 4)
    # A running callback's statement (reactor context: unmarked) arrives behind four admissions.
    db.runQuery("legB reauthorize").addCallback(lambda rows: done.append(rows[0][0]))
    assert db.queued() == (1, 4)
    finish_first(pending, clock)
    # The first connection freed goes to the running callback, not to "admit 2".
    assert [sql for sql, _ in pending] == ["admit 1", "legB reauthorize"]
    while pending:
        finish_first(pending, clock)
    assert done == ["admit 0", "admit 1", "legB reauthorize", "admit 2", "admit 3", "admit 4",
                    "admit 5"]
    assert db.queued() == (0, 0) and len(db._idle) == 2


def test_admissions_keep_their_order_and_go_when_no_running_work_waits():
    db, clock, pending = make(size=1)
    order = []
    for name in ("a1", "a2"):
        admission_query(db, name).addCallback(lambda rows: order.append(rows[0][0]))
    db.runQuery("r1").addCallback(lambda rows: order.append(rows[0][0]))
    admission_query(db, "a3").addCallback(lambda rows: order.append(rows[0][0]))
    db.runQuery("r2").addCallback(lambda rows: order.append(rows[0][0]))
    while pending:
        finish_first(pending, clock)
    assert order == ["a1", "r1", "r2", "a2", "a3"]


def test_a_callback_started_from_admission_is_running_work():
    """``priority.running`` drops the admission mark for what it starts (a session)."""
    db, clock, pending = make(size=1)
    seen = []

    @defer.inlineCallbacks
    def session_life():
        seen.append(priority.current())
        yield db.runQuery("recovery row")

    @defer.inlineCallbacks
    def admit():
        token = priority.admission()
        try:
            seen.append(priority.current())
            yield db.runQuery("admit")
            priority.running(session_life)
            seen.append(priority.current())
        finally:
            priority.restore(token)

    admit()
    admission_query(db, "queued admission 1")
    admission_query(db, "queued admission 2")
    finish_first(pending, clock)  # "admit": its connection goes to the first queued admission
    assert seen == [priority.ADMISSION, priority.RUNNING, priority.ADMISSION]
    # The session's statement queued as running work: it goes before the second admission.
    assert db.queued() == (1, 1)
    assert finish_first(pending, clock) == "queued admission 1"
    assert [sql for sql, _ in pending] == ["recovery row"]
    assert priority.current() == priority.RUNNING


def test_admission_wait_estimate():
    db, clock, pending = make(size=2)
    assert db.admission_wait() == 0.0
    for i in range(2):
        admission_query(db, f"a{i}")
    # Both connections busy, nobody waiting, no hold time measured yet.
    assert db.admission_wait() == 0.0
    finish_first(pending, clock, step=0.2)  # held 0.2 s: the first measure
    assert db.hold_avg == 0.2
    db.runQuery("r")  # takes the freed connection
    for i in range(3):
        admission_query(db, f"q{i}")
    db.runQuery("r2")
    # Ahead of a newcomer: 1 running + 3 admissions + itself, 0.2 s each over 2 connections.
    assert abs(db.admission_wait() - 5 * 0.2 / 2) < 1e-9
    clock.advance(4.0)
    # The oldest admission has waited 4 s: the measure wins over the estimate.
    assert abs(db.admission_wait() - 4.0) < 1e-9
    assert db.admission_checkouts == 5


def test_dropped_pool_fails_waiters_of_both_queues():
    db, clock, pending = make(size=1)
    db.runQuery("busy")
    failures = []
    admission_query(db, "a").addErrback(failures.append)
    db.runQuery("r").addErrback(failures.append)
    db._drop_connections("gone")
    assert len(failures) == 2 and db.queued() == (0, 0)


def test_legb_reauthorization_overtakes_other_running_work():
    """URGENT (a caller listening to silence) before RUNNING (rows, xDRs) before ADMISSION."""
    db, clock, pending = make(size=1)
    order = []

    def note(rows):
        order.append(rows[0][0])

    db.runQuery("busy").addCallback(note)
    admission_query(db, "admission").addCallback(note)
    db.runQuery("xDR").addCallback(note)
    priority.urgent(db.runQuery, "legB authorization").addCallback(note)
    assert db.queued() == (2, 1) and priority.current() == priority.RUNNING
    while pending:
        finish_first(pending, clock)
    assert order == ["busy", "legB authorization", "xDR", "admission"]
