"""The callback session's state table, tested exhaustively by a stateful property test.

Hypothesis drives one ``CallbackSession`` (Simple, Extended or Hosted) on a ``task.Clock``
with the driven fakes of ``drivenfakes.py`` through random interleavings of every event it
can receive: provisional, 2xx and 4xx/5xx/6xx responses on each leg, BYE from either side
or from the UA itself, CANCEL races (a 18x or a 2xx crossing our CANCEL, a BYE crossing
ours), RTP inactivity and RTCP BYE, DTMF and silence in the hosted IVR, prompts finishing,
the clock (please-wait pause, one-minute warning, maximum duration, explanation timeout),
PostgreSQL going away and coming back under the authorizer, the IVR's directory and
lockouts and the xDR recorder, no free media port, the UA stopping, a refused xDR, and
shutdown (also before start). After every step it checks the invariants below; the last
test checks that the runs reached every (state, event) pair the table does not declare
impossible.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from twisted.logger import LogLevel, globalLogPublisher

from cbserver.billing.authorize import AuthRequest
from cbserver.callback.ivr import HostedIvr
from cbserver.callback.session import CallbackSession, SessionContext
from cbserver.callback.states import IMPOSSIBLE, TABLE, State, reachable_pairs
from cbserver.errors import DatabaseUnavailable
from cbserver.media.collector import CollectOutcome, CollectResult
from cbserver.media.player import PlayResult
from cbserver.media.relay import RelayEnd
from tests.unit.callback.drivenfakes import (
    DrivenAuthorizer,
    DrivenDirectory,
    DrivenLockouts,
    DrivenMedia,
    DrivenRecorder,
    DrivenUA,
    World,
)
from tests.unit.callback.fakes import Request, app

PAGE_STATUS = {State.NEW: "calling_you", State.CALLING_A: "calling_you", State.IVR: "answered",
               State.AUTHORIZING_B: "answered", State.CALLING_B: "calling_destination",
               State.CONNECTED: "connected", State.WARNING: "connected", State.ENDED: "ended"}
FINISHING = (State.ENDING, State.WRITING, State.ENDED)
CUT_STATES = (State.IVR, State.AUTHORIZING_B, State.CALLING_B, State.CONNECTED, State.WARNING,
              State.EXPLAINING)
# Log lines the machine provokes on purpose (an injected fault), by their format's start.
EXPECTED_FAILURES = ("no media for leg", "xDRs refused")

LEGS = st.sampled_from(["A", "B"])
# Where the happy path takes the session before the random events begin (IVR_LAST: the
# hosted IVR is telling the minutes, its last prompt; LATE_*: legB's re-authorization is
# still in flight when the call has ended and the session is in ENDING, WRITING or ENDED).
DEPTH_NAMES = ["new", "CALLING_A", "IVR", "IVR_LAST", "AUTHORIZING_B", "CALLING_B", "CONNECTED",
               "WARNING", "EXPLAINING", "ENDED", "LATE_ENDING", "LATE_WRITING", "LATE_ENDED"]
DEPTHS = st.sampled_from(DEPTH_NAMES)
FAILURES = st.sampled_from([(404, "Not Found"), (480, "Temporarily Unavailable"),
                            (486, "Busy Here"), (487, "no answer"), (500, "Server Error"),
                            (503, "transport error: connection refused"), (603, "Decline")])
# Authorization answers: a call long enough for the one-minute warning, one too short for
# it, no balance, refusals (the IVR retries identity ones, the session explains them), and
# the connection breaking during the transaction.
AUTH_OUTCOMES = st.sampled_from([("ok", 100), ("ok", 45), ("ok", 0), ("refused", "not_rated"),
                                 ("refused", "unknown_account"), ("error", None)])
# One or two events applied right where the happy path stopped, so that every state meets
# every kind of event often; the rules then interleave everything else at random.
OPENER_NAMES = [f"{leg}:{how}" for leg in "AB" for how in (
    "ring", "answer", "answer_crossing", "fail", "remote_bye", "ua_ends", "bye_completed")] + [
    "shutdown", "flush", "db_down", "auth_ok", "auth_refused", "auth_error", "prompt_done",
    "relay_lost", "advance", "cut"]
OPENERS = st.sampled_from(OPENER_NAMES)
# How an authorization still in flight when the call ended answers.
LATE_OUTCOMES = st.sampled_from([("ok", 100), ("refused", "not_rated"), ("error", None)])
DIGITS = st.sampled_from(["1818000001", "4321", "18185550123", "*18185550123", "999", ""])


class Log:
    """Collects the error and failure events logged while the machine runs."""

    def __init__(self):
        self.bad: list[str] = []

    def __call__(self, event: dict) -> None:
        fmt = event.get("log_format") or ""
        level = event.get("log_level")
        if ("log_failure" in event or level in (LogLevel.error, LogLevel.critical)) and \
                not fmt.startswith(EXPECTED_FAILURES):
            failure = event.get("log_failure")
            self.bad.append(f"{fmt} {failure.getTraceback() if failure else ''}")


class SessionMachine(RuleBasedStateMachine):
    """One callback session and everything around it, driven by hypothesis."""

    @initialize(mode=st.sampled_from(["extended", "simple", "hosted"]), depth=DEPTHS,
                opening=st.lists(OPENERS, max_size=2))
    def create(self, mode, depth, opening):
        self.world = w = World()
        self.log = Log()
        globalLogPublisher.addObserver(self.log)
        self.ua, self.media = DrivenUA(w), DrivenMedia(w)
        self.authorizer, self.recorder = DrivenAuthorizer(w), DrivenRecorder(w)
        self.statuses: list[str] = []
        self.final: list[dict] = []
        self.pairs: list[tuple] = []
        self.rejected = False
        directory, lockouts = DrivenDirectory(w), DrivenLockouts(w)
        ctx = SessionContext(
            ua=self.ua, media=self.media, authorizer=self.authorizer, recorder=self.recorder,
            clock=w.clock, node="node1", no_answer_timeout=30,
            ivr_factory=lambda s: HostedIvr(s, directory, lockouts, 2, 900),
            on_change=lambda s: self.statuses.append(s.snapshot().status))
        if mode == "hosted":
            req = Request(mode="hosted", account=None, destination=None)
            account, cld = "cb-internal", req.phone
        else:
            req = Request(mode=mode, destination=None if mode == "simple" else "18185550123")
            account, cld = req.account, req.destination or app().second_number
        first = AuthRequest(session_id="s1", account_id=account, cli=req.phone, cld=cld)
        auth = self.authorizer.rating.authorize(first).result
        w.holds.add("s1")  # the reservation taken before the session was created
        self.session = CallbackSession("s1", req, app(), auth, ctx)
        self.session.observe = lambda state, event: self.pairs.append((state, event))
        self.started = self.shut_before_start = False
        self._drive_to(depth)
        for move in opening:
            self._open(move)

    def _open(self, move: str) -> None:
        """One of the sharp events (see OPENERS) right where the happy path stopped."""
        w = self.world
        if move == "shutdown":
            self.shutdown(True)
        elif move == "flush":
            self.recorder.flush()
        elif move == "db_down":
            w.db_up = False
        elif move.startswith("auth_"):
            ops = [op for op in w.db_ops if op[0] == "authorize" and not op[1].called]
            if ops:
                w.db_ops.remove(ops[0])
                self.authorizer.answer(ops[0][1], ops[0][2],
                                       {"auth_ok": ("ok", 100), "auth_error": ("error", None),
                                        "auth_refused": ("refused", "not_rated")}[move])
        elif move == "prompt_done":
            for m in w.media:
                if m.finish("play", PlayResult.DONE):
                    break
        elif move == "relay_lost":
            self.relay_lost(RelayEnd.INACTIVE)
        elif move == "advance":
            w.clock.advance(60.0)
        elif move == "cut":
            # To the maximum-duration cut (armed from legB's authorization: legB may still ring).
            timer = self.session._timers.get("max-duration")
            if timer is not None:
                w.clock.advance(max(0.0, timer.getTime() - w.clock.seconds()))
        else:
            leg, how = move.split(":")
            call = self._call(leg)
            if call is None:
                return
            if how in ("answer", "answer_crossing"):
                call.answer(how == "answer_crossing")
            elif how == "ring":
                call.ring(None)
            elif how == "fail":
                call.fail(486, "Busy Here")
            else:
                getattr(call, how)()

    def _drive_to(self, depth: str) -> None:
        """Take the happy path to ``depth`` first, so random events start from every state."""
        if depth == "new":
            return
        if depth.startswith("LATE_"):
            # legB's re-authorization still in flight when the call ends (ENDING: our BYE
            # on legA not answered yet; ENDED: the xDRs already stored).
            self._drive_to("AUTHORIZING_B")
            if self.session.state is State.AUTHORIZING_B:
                if depth == "LATE_ENDING":
                    self.shutdown(True)
                else:
                    self.world.calls[0].remote_bye()  # legB never placed: WRITING at once
                    if depth == "LATE_ENDED":
                        self.recorder.flush()
            return
        hosted = self.session.request.mode == "hosted"
        outcome = ("ok", 0) if depth == "EXPLAINING" else ("ok", 100)
        for _ in range(60):
            if depth == "IVR_LAST" and (not hosted or self._a_played("you_have")):
                return
            if depth == "IVR" and not hosted or self.session.state.name == depth or \
                    self.session.state in FINISHING:
                return
            self.progress(("ok", 100), False, False, outcome)

    def _a_played(self, first: str) -> bool:
        return bool(self.world.media) and any(p[0] == first for p in self.world.media[0].played)

    def teardown(self):
        globalLogPublisher.removeObserver(self.log)

    # -- the service ---------------------------------------------------------------------------

    @rule(late=LATE_OUTCOMES, crossing=st.booleans(), late_first=st.booleans())
    def progress(self, late, crossing, late_first, outcome=("ok", 100)):
        """One step along the happy path: what a caller and a healthy system do next.

        While the session ends, the legs end (our CANCEL answered by a 487 or by a crossing
        2xx, our BYE answered), the xDRs are stored, and what was in flight (legB's
        re-authorization) answers ``late``, before or after the legs (``late_first``).
        """
        w, state = self.world, self.session.state
        live = [op for op in w.db_ops if not op[1].called]
        collecting = [m for m in w.media if m.current and m.current[0] == "collect"]
        playing = [m for m in w.media if m.current and m.current[0] == "play"]
        calling = [c for c in w.calls if c.state == "calling"]
        ringing = [c for c in w.calls if c.state == "ringing"]
        if state in FINISHING:
            hanging = [c for c in w.calls if c.state in ("cancelling", "terminating")]
            if live and (late_first or not (hanging or w.records_pending)):
                kind, d, request = live[0]
                w.db_ops.remove(live[0])
                self.authorizer.answer(d, request, late)
            elif hanging and hanging[0].state == "cancelling":
                hanging[0].answer(True) if crossing else hanging[0].fail(487, "cancelled")
            elif hanging:
                hanging[0].remote_bye() if crossing else hanging[0].bye_completed()
            elif w.records_pending:
                self.recorder.flush()
        elif not self.started:
            self.start()
        elif live:
            kind, d, request = live[0]
            w.db_ops.remove(live[0])
            if kind == "authorize":
                self.authorizer.answer(d, request, outcome)
            else:
                d.callback(None if kind == "lock" else False)
        elif collecting:
            media = collecting[0]
            digits = {"enter_account_number": "1818000001", "enter_pin": "4321"}.get(
                media.played[-1][0], "18185550123")
            media.finish("collect", CollectResult(digits, CollectOutcome.TERMINATOR))
        elif calling:
            calling[0].ring(b"v=0 early" if crossing else None)
        elif playing:
            playing[0].finish("play", PlayResult.DONE)
        elif state is State.CALLING_B and "wait-prompt" in self.session._timers and crossing:
            w.clock.advance(2.0)  # the pause between two "please wait"s
        elif ringing:
            ringing[0].answer(False)
        elif w.records_pending:
            self.recorder.flush()
        else:
            w.clock.advance(15)

    @precondition(lambda self: not self.started)
    @rule()
    def start(self):
        self.started = True
        self.session.start().addCallback(self.final.append)

    @rule(really=st.sampled_from([True] + [False] * 3))
    def shutdown(self, really):
        if not really:
            return  # shutdown ends everything: hypothesis draws it a quarter as often
        d = self.session.shutdown()
        if not self.started:
            # The service shut down while the first row was being stored: it calls
            # start() once that is done (late_start).
            self.started = self.shut_before_start = True
            d.addCallback(self.final.append)

    @precondition(lambda self: self.shut_before_start)
    @rule()
    def late_start(self):
        self.shut_before_start = False
        self.session.start()

    @rule(what=st.sampled_from(["ua_stopping", "ports_exhausted", "fail_next_place"] + [None] * 3))
    def fault(self, what):
        """The next call placed meets it (once)."""
        if what is not None:
            setattr(self.world, what, True)

    # -- the legs ------------------------------------------------------------------------------

    def _live_calls(self) -> bool:
        return any(not c.finished for c in self.world.calls)

    def _call(self, leg):
        index = 0 if leg == "A" else 1
        return self.world.calls[index] if index < len(self.world.calls) else None

    @precondition(_live_calls)
    @rule(leg=LEGS, early=st.booleans())
    def provisional(self, leg, early):
        call = self._call(leg)
        if call is not None:
            call.ring(b"v=0 early" if early else None)

    @precondition(_live_calls)
    @rule(leg=LEGS, report_crossing=st.booleans())
    def answer(self, leg, report_crossing):
        call = self._call(leg)
        if call is not None:
            call.answer(report_crossing)

    @precondition(_live_calls)
    @rule(leg=LEGS, failure=FAILURES)
    def fail(self, leg, failure):
        call = self._call(leg)
        if call is not None:
            call.fail(*failure)

    @precondition(_live_calls)
    @rule(leg=LEGS, how=st.sampled_from(["remote_bye", "bye_completed", "ua_ends"]))
    def bye(self, leg, how):
        call = self._call(leg)
        if call is not None:
            getattr(call, how)()

    # -- media -----------------------------------------------------------------------------

    @precondition(lambda self: any(m.current for m in self.world.media))
    @rule(pick=st.integers(0, 3))
    def prompt_done(self, pick):
        playing = [m for m in self.world.media if m.current and m.current[0] == "play"]
        if playing:
            playing[pick % len(playing)].finish("play", PlayResult.DONE)

    @precondition(lambda self: any(m.current for m in self.world.media))
    @rule(digits=DIGITS)
    def dtmf(self, digits):
        for m in self.world.media:
            outcome = CollectOutcome.TERMINATOR if digits else CollectOutcome.FIRST_DIGIT_TIMEOUT
            if m.finish("collect", CollectResult(digits, outcome)):
                return

    @precondition(lambda self: any(r.active for r in self.world.relays))
    @rule(why=st.sampled_from([RelayEnd.INACTIVE, RelayEnd.BYE] + [None] * 2))
    def relay_lost(self, why):
        for relay in self.world.relays:
            if relay.active and why is not None:
                relay.lost_leg = "A" if why is RelayEnd.INACTIVE else "B"
                relay.done.callback(why)

    @precondition(lambda self: self.world.clock.getDelayedCalls())
    @rule(seconds=st.sampled_from([0.5, 2.0, 15.0, 40.0, 60.0]))
    def advance(self, seconds):
        self.world.clock.advance(seconds)

    # -- the database ------------------------------------------------------------------------

    @rule(up=st.booleans())
    def database(self, up):
        self.world.db_up = up

    @precondition(lambda self: any(not d.called for _, d, _ in self.world.db_ops))
    @rule(pick=st.integers(0, 3), outcome=AUTH_OUTCOMES, has_password=st.booleans(),
          locked=st.sampled_from([False] * 4 + [True]))
    def database_answers(self, pick, outcome, has_password, locked):
        # An operation the IVR cancelled is gone: its cancellation reached the database.
        self.world.db_ops = ops = [op for op in self.world.db_ops if not op[1].called]
        kind, d, request = ops.pop(pick % len(ops))
        if kind == "authorize":
            self.authorizer.answer(d, request, outcome)
        elif not self.world.db_up:
            d.errback(DatabaseUnavailable("connection refused"))
        else:
            d.callback({"lock": None, "has_password": has_password, "locked": locked}[kind])

    @precondition(lambda self: any(k == "authorize" and not d.called for k, d, _ in self.world.db_ops))
    @rule(reason=st.sampled_from(["not_rated", "unknown_account", "no_voice_service"]))
    def authorization_refused(self, reason):
        """The oldest pending authorization is refused (or fails: the database is down)."""
        op = next(op for op in self.world.db_ops if op[0] == "authorize" and not op[1].called)
        self.world.db_ops.remove(op)
        self.authorizer.answer(op[1], op[2], ("refused", reason))

    @precondition(lambda self: self.world.records_pending)
    @rule(reject=st.sampled_from([False] * 9 + [True]))
    def recorder_flushes(self, reject):
        if reject and self.world.records_pending:
            self.world.reject_next = self.rejected = True
        self.recorder.flush()

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def nothing_impossible_and_nothing_raised(self):
        if not hasattr(self, "session"):
            return
        impossible = [p for p in self.pairs if TABLE[p] == IMPOSSIBLE]
        assert not impossible, impossible
        assert not self.log.bad, self.log.bad

    @invariant()
    def the_page_shows_the_state(self):
        if not hasattr(self, "session"):
            return
        s = self.session
        if s.state in PAGE_STATUS:
            assert s.status == PAGE_STATUS[s.state], (s.state, s.status)
        if s.state is State.CONNECTED:
            assert sum(r.active for r in self.world.relays) == 1
        elif s.state is not State.WARNING:
            assert not any(r.active for r in self.world.relays)

    @invariant()
    def a_connected_lega_is_always_under_a_cut(self):
        # legA costs from its answer until the end: a maximum-duration cut is armed all along
        # (the account has a limit here), so no state lets it run unpaid (issue 13).
        if not hasattr(self, "session"):
            return
        s = self.session
        if s.a.answered_at is not None and s.state in CUT_STATES:
            assert "max-duration" in s._timers, s.state

    @invariant()
    def an_ending_session_stopped_everything(self):
        if not hasattr(self, "session") or self.session.state not in FINISHING:
            return
        s, w = self.session, self.world
        assert s.cause is not None
        assert not s._timers and not w.clock.getDelayedCalls()
        assert not any(r.active for r in w.relays)
        if s.state is not State.ENDING:
            # Both dialogs ended: every call had its one final event, none is up.
            assert all(c.finished and c.finals == 1 for c in w.calls)
            assert all(m.closed for m in w.media)

    @invariant()
    def an_ended_session_wrote_its_xdrs_and_freed_its_slot(self):
        """A session in its final state released its slot and its holds, even when the
        recorder refused an xDR (that xDR is then on the error line, not stored)."""
        if not hasattr(self, "session") or self.session.state is not State.ENDED:
            return
        s, w = self.session, self.world
        assert s.done.called and s.status == "ended"
        assert self.statuses[-1] == "ended"  # the final row frees the concurrency slot
        if self.rejected:
            assert set(w.written) <= {("s1", "A"), ("s1", "B")}
            assert all(n == 1 for n in w.written.values())  # none twice
        else:
            assert w.written == {("s1", "A"): 1, ("s1", "B"): 1}  # one xDR per leg, none twice
        assert "s1" not in w.holds  # xDRs stored (or refused): reservations released
        assert not w.clock.getDelayedCalls()
        if self.final:
            assert self.final[0]["status"] == "ended"

    @invariant()
    def a_writing_session_waits_for_the_recorder(self):
        """WRITING only while the recorder still holds the session's xDRs: once it answered
        (stored, or refused), the session is in its final state (never stuck writing)."""
        if hasattr(self, "session") and self.session.state is State.WRITING:
            assert all(c.finished for c in self.world.calls)
            assert not self.world.clock.getDelayedCalls()
            assert self.world.records_pending


# The property test: random interleavings from random starting points, shrunk on failure.
MACHINE_SETTINGS = settings(max_examples=300, stateful_step_count=25, deadline=None,
                            derandomize=True, database=None,
                            suppress_health_check=list(HealthCheck))

TestSessionMachine = SessionMachine.TestCase
TestSessionMachine.settings = MACHINE_SETTINGS


def _sweep_steps(m: SessionMachine, rng: random.Random):
    """The machine's rules with random arguments, as (enabled?, run) pairs."""
    w = m.world
    pending_auth = [op for op in w.db_ops if op[0] == "authorize" and not op[1].called]
    choice = rng.choice
    return [
        (True, lambda: m.progress(choice(LATE), choice((True, False)), choice((True, False)))),
        (True, lambda: m.shutdown(choice((True, False, False)))),
        (True, lambda: m.fault(choice(("ua_stopping", "ports_exhausted", "fail_next_place")))),
        (m.shut_before_start, m.late_start),
        (True, lambda: m.provisional(choice("AB"), choice((True, False)))),
        (True, lambda: m.answer(choice("AB"), choice((True, False)))),
        (True, lambda: m.fail(choice("AB"), choice(FAILURE_LIST))),
        (True, lambda: m.bye(choice("AB"), choice(("remote_bye", "bye_completed", "ua_ends")))),
        (True, lambda: m.prompt_done(rng.randrange(4))),
        (True, lambda: m.dtmf(choice(DIGIT_LIST))),
        (True, lambda: m.relay_lost(choice((RelayEnd.INACTIVE, RelayEnd.BYE)))),
        (True, lambda: m.advance(choice((0.5, 2.0, 15.0, 40.0, 60.0)))),
        (True, lambda: m.database(choice((True, False)))),
        (any(not op[1].called for op in w.db_ops),
         lambda: m.database_answers(rng.randrange(4), choice(OUTCOME_LIST), choice((True, False)),
                                    choice((False, False, False, True)))),
        (bool(pending_auth), lambda: m.authorization_refused(choice(("not_rated", "unknown_account")))),
        (bool(w.records_pending), lambda: m.recorder_flushes(rng.random() < 0.1)),
    ]


def _check(m: SessionMachine) -> None:
    m.nothing_impossible_and_nothing_raised()
    m.a_connected_lega_is_always_under_a_cut()
    m.the_page_shows_the_state()
    m.an_ending_session_stopped_everything()
    m.an_ended_session_wrote_its_xdrs_and_freed_its_slot()
    m.a_writing_session_waits_for_the_recorder()


LATE = [("ok", 100), ("refused", "not_rated"), ("error", None)]
FAILURE_LIST = [(486, "Busy Here"), (487, "no answer"), (503, "transport error: refused"),
                (603, "Decline"), (500, "Server Error")]
DIGIT_LIST = ["1818000001", "4321", "18185550123", "*18185550123", "999", ""]
OUTCOME_LIST = [("ok", 100), ("ok", 45), ("ok", 0), ("refused", "not_rated"), ("error", None)]
SWEEP_OPENERS = [[]] + [[o] for o in OPENER_NAMES]


def test_every_reachable_pair_of_the_state_table_is_reached():
    """A deterministic sweep: every mode, every starting depth, every opening event, then
    random rules (seeded) with the invariants checked after each; together they must reach
    every (state, event) pair the table does not declare impossible."""
    reached: set = set()
    rng = random.Random(12)
    for mode in ("extended", "simple", "hosted"):
        for depth in DEPTH_NAMES:
            for opening in SWEEP_OPENERS:
                for _ in range(2):
                    m = SessionMachine()
                    m.create(mode, depth, opening)
                    _check(m)
                    for _ in range(20):
                        steps = [run for enabled, run in _sweep_steps(m, rng) if enabled]
                        rng.choice(steps)()
                        _check(m)
                    m.teardown()
                    reached.update(m.pairs)
    missing = reachable_pairs() - reached
    assert not missing, sorted(f"{s.name}/{e.name}" for s, e in missing)
