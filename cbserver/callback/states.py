"""The callback session's state table: named states, named events, one entry per pair.

``TABLE[(state, event)]`` is the name of the ``CallbackSession`` method that decides what
happens, or ``IGNORE`` (the event is expected there and changes nothing, e.g. the answer to a
re-authorization that arrives after the caller hung up), or ``IMPOSSIBLE`` (the event cannot
reach that state by construction: the session logs an error if it ever does, and the
stateful test checks that it never does). Every pair is listed: the module refuses to load
if one is missing or listed twice.

Every path to ``ENDED`` goes through ``ENDING`` (legs hung up) and ``WRITING`` (xDRs
stored); the handlers named ``finish`` below are the ways into ``ENDING``.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    """Where one callback is."""

    NEW = "new"  # created, start() not called yet
    CALLING_A = "calling_a"  # legA placed, not answered (page: calling_you)
    IVR = "ivr"  # hosted: legA answered, the IVR identifies the caller (page: answered)
    AUTHORIZING_B = "authorizing_b"  # legA answered, legB re-authorized (page: answered)
    CALLING_B = "calling_b"  # legB placed, "please wait" on legA (page: calling_destination)
    CONNECTED = "connected"  # both legs answered, media relayed
    WARNING = "warning"  # "one minute left" playing on both legs, relay paused
    EXPLAINING = "explaining"  # telling legA why it ends (cause already decided)
    ENDING = "ending"  # cause decided; CANCEL/BYE sent, waiting for the legs to end
    WRITING = "writing"  # both legs down; their xDRs are being stored
    ENDED = "ended"  # xDRs stored (or refused: logged in full), final status reported


class Event(enum.Enum):
    """What a session can be told: by its legs, its timers, its collaborators, the service."""

    START = "start"
    SHUTDOWN = "shutdown"
    PLACE_FAILED = "place_failed"  # no media port, or the UA refused the call (stopping)
    A_RINGING = "a_ringing"  # 180/183 on legA
    A_ANSWERED = "a_answered"  # 2xx on legA
    A_FAILED = "a_failed"  # final non-2xx on legA (487 after our CANCEL included)
    A_BYE = "a_bye"  # the far end of legA hung up
    A_ENDED_LOCAL = "a_ended_local"  # legA ended from our side (our BYE done, or the UA's own)
    B_RINGING = "b_ringing"
    B_ANSWERED = "b_answered"
    B_FAILED = "b_failed"
    B_BYE = "b_bye"
    B_ENDED_LOCAL = "b_ended_local"
    IVR_DONE = "ivr_done"  # hosted IVR: caller identified, destination keyed (DTMF)
    IVR_FAILED = "ivr_failed"  # hosted IVR gave up (or was cancelled, or its database failed)
    AUTH_OK = "auth_ok"  # legB's re-authorization answered (max_seconds may be 0)
    AUTH_REFUSED = "auth_refused"  # ... refused (AuthorizationError)
    AUTH_ERROR = "auth_error"  # ... failed (DatabaseUnavailable, or a bug)
    WAIT_PLAYED = "wait_played"  # one "please wait" finished (or was interrupted)
    WAIT_TIMER = "wait_timer"  # the pause between two "please wait"s is over
    WARN_TIMER = "warn_timer"  # one minute before the maximum duration
    WARNING_PLAYED = "warning_played"  # "one minute left" finished on both legs
    MAX_DURATION = "max_duration"  # the maximum duration the balance allows is reached
    RELAY_STOPPED = "relay_stopped"  # a relay we stopped says so
    RELAY_LOST = "relay_lost"  # the relay ended by itself: RTP inactivity or RTCP BYE
    EXPLAINED = "explained"  # the explanation prompt finished (or timed out)
    XDRS_WRITTEN = "xdrs_written"
    XDRS_FAILED = "xdrs_failed"  # the recorder refused a leg (not an outage: it spools): ends


IGNORE = "ignore"
IMPOSSIBLE = "impossible"

S, E = State, Event
_CALL_ENDERS = {E.A_BYE: "a_hung_up", E.A_ENDED_LOCAL: "ended_locally", E.SHUTDOWN: "shut_down"}

# state -> {event: handler}; ignored events; every other event is IMPOSSIBLE there.
_ROWS: dict[State, tuple[dict[Event, str], tuple[Event, ...]]] = {
    S.NEW: ({E.START: "start_calling", E.SHUTDOWN: "shut_down"}, ()),
    S.CALLING_A: ({E.A_RINGING: "ringing", E.A_ANSWERED: "a_answered", E.A_FAILED: "a_failed",
                   E.PLACE_FAILED: "place_failed", E.SHUTDOWN: "shut_down"}, ()),
    S.IVR: ({**_CALL_ENDERS, E.IVR_DONE: "ivr_done", E.IVR_FAILED: "ivr_failed",
             E.MAX_DURATION: "max_duration"}, ()),
    S.AUTHORIZING_B: ({**_CALL_ENDERS, E.AUTH_OK: "auth_ok", E.AUTH_REFUSED: "auth_refused",
                       E.AUTH_ERROR: "auth_error", E.MAX_DURATION: "max_duration"}, ()),
    S.CALLING_B: ({**_CALL_ENDERS, E.B_RINGING: "ringing", E.B_ANSWERED: "b_answered",
                   E.B_FAILED: "b_failed", E.PLACE_FAILED: "place_failed",
                   E.WAIT_PLAYED: "wait_played", E.WAIT_TIMER: "play_wait",
                   E.MAX_DURATION: "max_duration"}, ()),
    S.CONNECTED: ({**_CALL_ENDERS, E.B_BYE: "b_hung_up", E.B_ENDED_LOCAL: "ended_locally",
                   E.WARN_TIMER: "warn", E.MAX_DURATION: "max_duration",
                   E.RELAY_LOST: "relay_lost"}, (E.WAIT_PLAYED,)),
    S.WARNING: ({**_CALL_ENDERS, E.B_BYE: "b_hung_up", E.B_ENDED_LOCAL: "ended_locally",
                 E.WARNING_PLAYED: "rejoin", E.MAX_DURATION: "max_duration"},
                (E.RELAY_STOPPED,)),
    S.EXPLAINING: ({**_CALL_ENDERS, E.EXPLAINED: "explained", E.MAX_DURATION: "max_duration"},
                   (E.WAIT_PLAYED,)),
    # The cause is decided: leg events only tell when both legs are down; what was running
    # (IVR, prompts, relay) reports being stopped.
    S.ENDING: ({E.A_RINGING: "ringing", E.B_RINGING: "ringing",
                E.A_ANSWERED: "answered_while_ending", E.B_ANSWERED: "answered_while_ending",
                E.A_FAILED: "failed_while_ending", E.B_FAILED: "failed_while_ending",
                E.A_BYE: "ended_while_ending", E.A_ENDED_LOCAL: "ended_while_ending",
                E.B_BYE: "ended_while_ending", E.B_ENDED_LOCAL: "ended_while_ending",
                E.AUTH_ERROR: "auth_error_logged"},
               # AUTH_OK: its reservation is released with the xDRs, not written yet.
               (E.SHUTDOWN, E.IVR_DONE, E.IVR_FAILED, E.AUTH_OK, E.AUTH_REFUSED, E.WAIT_PLAYED,
                E.WARNING_PLAYED, E.RELAY_STOPPED, E.EXPLAINED)),
    # A re-authorization that outlives the call: its reservation (made after the xDRs were
    # sent) must still be released. A refusal reserved nothing.
    S.WRITING: ({E.XDRS_WRITTEN: "xdrs_written", E.XDRS_FAILED: "xdrs_failed",
                 E.AUTH_OK: "late_reservation", E.AUTH_ERROR: "auth_error_logged"},
                (E.START, E.SHUTDOWN, E.AUTH_REFUSED)),
    S.ENDED: ({E.AUTH_OK: "release_late_reservation", E.AUTH_ERROR: "auth_error_logged"},
              (E.START, E.SHUTDOWN, E.AUTH_REFUSED)),
}

# Why the rest is impossible, per group of events (the stateful test checks none happens):
# - a leg's events come from its ICall: ringing/answer before its one final event
#   (failed, or ended once answered), nothing after it; legB's only once it is placed
#   (CALLING_B), and answered legs do not ring, fail or answer again;
# - the timers are armed in CALLING_B (wait), CONNECTED (warn) and all disarmed on leaving;
#   the maximum-duration cut from legA's answer on (legA is charged from then: IVR,
#   AUTHORIZING_B, CALLING_B, CONNECTED, WARNING, EXPLAINING);
# - IVR, re-authorization, explanation and warning results come from what the state started;
#   ENDING stops each of them synchronously, so their reports never reach WRITING/ENDED;
# - the xDRs are written only in WRITING; START comes once, first (or after a shutdown).

TABLE: dict[tuple[State, Event], str] = {}
for _state, (_handled, _ignored) in _ROWS.items():
    for _event in Event:
        if _event in _handled:
            assert _event not in _ignored, (_state, _event)
            TABLE[(_state, _event)] = _handled[_event]
        else:
            TABLE[(_state, _event)] = IGNORE if _event in _ignored else IMPOSSIBLE
assert len(TABLE) == len(State) * len(Event)


def reachable_pairs() -> set[tuple[State, Event]]:
    """Every (state, event) pair the table does not declare impossible."""
    return {pair for pair, action in TABLE.items() if action != IMPOSSIBLE}
