"""The states and events of an outgoing call, and its one transition table (DESIGN.md rule 12).

:class:`~cbserver.sip.call.Call` looks every event up here: ``TRANSITIONS[(state, event)]`` names
the ``Call`` method that handles it; an event a state has no entry for goes to
``UNHANDLED[event]`` (a refusal) or, when absent there too, is ignored (a timer or a late
response the call has outgrown). Every path to ``ended``/``failed`` is in this one table.

States are ``StrEnum`` members, so ``call.state == "confirmed"`` keeps working for callers.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CallEvent", "CallState", "TRANSITIONS", "UNHANDLED", "FINAL_STATES"]


class CallState(StrEnum):
    """Where an outgoing call is (RFC 3261 13.2, 17.1.1.2, 15)."""

    NEW = "new"  # the trunk is being located (RFC 3263), nothing sent yet
    CALLING = "calling"  # INVITE sent, no response (17.1.1.2 Calling)
    PROCEEDING = "proceeding"  # a provisional arrived: ringing / early media (13.2.2.1)
    CANCELLING = "cancelling"  # we asked to end it before a final response (9.1)
    CONFIRMED = "confirmed"  # answered and ACKed (13.2.2.4); in-dialog requests both ways
    TERMINATING = "terminating"  # our BYE is on its way (15.1.1)
    ENDED = "ended"  # final: an answered call is over (listener got call_ended)
    FAILED = "failed"  # final: never answered (listener got call_failed)


FINAL_STATES = frozenset({CallState.ENDED, CallState.FAILED})


class CallEvent(StrEnum):
    """What can happen to a call. The values of the application's requests name them in errors."""

    LOCATED = "trunk located"  # RFC 3263 gave targets
    LOCATE_FAILED = "trunk not located"
    PROVISIONAL = "1xx"  # to the current INVITE
    ANSWERED = "2xx"  # to the current INVITE (or a retransmission of it)
    REJECTED = "3xx-6xx"  # to the current INVITE
    TIMED_OUT = "Timer B"  # the INVITE had no response at all (17.1.1.2)
    TRANSPORT_ERROR = "transport error"  # the INVITE could not be sent (17.1.4)
    NO_ANSWER = "no-answer timer"
    CANCEL_GUARD = "cancel guard"  # 64*T1 after our CANCEL, still no final response (9.1)
    HANGUP = "hangup"  # the application ends the call
    SHUTDOWN = "shutdown"  # the UA stops and gives up waiting
    BYE_DONE = "BYE completed"  # our BYE got a final response, timed out or failed
    REMOTE_BYE = "BYE received"  # 15.1.2
    DIALOG_GONE = "481/408 in dialog"  # 12.2.1.2: the far end forgot the dialog
    SESSION_REFRESH = "refresh due"  # RFC 4028 10: we refresh at half the interval
    SESSION_EXPIRED = "session expired"  # RFC 4028 10: the far end did not refresh
    OK_NOT_ACKED = "2xx not ACKed"  # 13.3.1.4: our 2xx to a re-INVITE got no ACK in 64*T1
    OFFER = "SDP offer"  # new SDP from the far end (re-INVITE, UPDATE, ACK)
    INFO = "INFO received"  # RFC 6086
    REQUEST = "in-dialog request"  # a request from the far end naming our dialog (12.2.2)
    REINVITE = "re-INVITE"  # the application's requests (RFC 3261 14.1, RFC 3311, RFC 6086)
    UPDATE = "UPDATE"
    SEND_INFO = "INFO"


S, E = CallState, CallEvent

# (state, event) -> Call method. Comments cite the section that decides.
TRANSITIONS: dict[tuple[CallState, CallEvent], str] = {
    # new: locating the trunk (RFC 3263)
    (S.NEW, E.LOCATED): "_send_first_invite",  # 4.3: first target; none -> failed 503
    (S.NEW, E.LOCATE_FAILED): "_trunk_not_found",  # -> failed 503
    (S.NEW, E.NO_ANSWER): "_no_answer",  # nothing sent: -> failed 487
    (S.NEW, E.HANGUP): "_cancel_on_hangup",  # nothing sent: -> failed 487
    (S.NEW, E.SHUTDOWN): "_shutdown_unanswered",  # -> failed 503
    # calling: INVITE sent (RFC 3261 17.1.1.2)
    (S.CALLING, E.PROVISIONAL): "_provisional",  # 13.2.2.1 -> proceeding
    (S.CALLING, E.ANSWERED): "_answered",  # 13.2.2.4: ACK -> confirmed
    (S.CALLING, E.REJECTED): "_rejected",  # 22.2 digest / RFC 4028 422 retry, else -> failed
    (S.CALLING, E.TIMED_OUT): "_failover_or_time_out",  # RFC 3263 4.3 next target, else -> failed 408
    (S.CALLING, E.TRANSPORT_ERROR): "_failover_or_fail_transport",  # 17.1.4: next target, else -> failed 503
    (S.CALLING, E.NO_ANSWER): "_no_answer",  # -> cancelling (CANCEL waits for a 1xx, 9.1)
    (S.CALLING, E.HANGUP): "_cancel_on_hangup",  # -> cancelling
    (S.CALLING, E.SHUTDOWN): "_shutdown_unanswered",  # -> failed 503
    # proceeding: ringing (RFC 3261 13.2.2.1)
    (S.PROCEEDING, E.PROVISIONAL): "_provisional",
    (S.PROCEEDING, E.ANSWERED): "_answered",  # -> confirmed
    (S.PROCEEDING, E.REJECTED): "_rejected",  # 13.2.2.2-3 -> failed (after retries)
    (S.PROCEEDING, E.TIMED_OUT): "_fail_timed_out",  # -> failed 408
    (S.PROCEEDING, E.TRANSPORT_ERROR): "_fail_transport",  # -> failed 503
    (S.PROCEEDING, E.NO_ANSWER): "_no_answer",  # -> cancelling, CANCEL sent (9.1)
    (S.PROCEEDING, E.HANGUP): "_cancel_on_hangup",  # -> cancelling, CANCEL sent
    (S.PROCEEDING, E.SHUTDOWN): "_shutdown_unanswered",  # -> failed 503
    # cancelling: CANCEL sent or waiting for a 1xx to send it (RFC 3261 9.1)
    (S.CANCELLING, E.PROVISIONAL): "_provisional_while_cancelling",  # 9.1: now the CANCEL may go
    (S.CANCELLING, E.ANSWERED): "_answer_crossed_cancel",  # 15: ACK, BYE -> failed 487
    (S.CANCELLING, E.REJECTED): "_cancelled",  # the INVITE's 487 (or other final) -> failed
    (S.CANCELLING, E.TIMED_OUT): "_fail_cancelled",  # -> failed 487
    (S.CANCELLING, E.CANCEL_GUARD): "_fail_cancelled",  # 9.1: 64*T1 without a final -> failed 487
    (S.CANCELLING, E.TRANSPORT_ERROR): "_fail_transport",  # -> failed 503
    (S.CANCELLING, E.SHUTDOWN): "_shutdown_unanswered",  # -> failed 503
    # confirmed: the dialog is up (RFC 3261 13.2.2.4, 12.2)
    (S.CONFIRMED, E.ANSWERED): "_stray_2xx",  # 13.2.2.4: re-ACK the retransmitted 2xx
    (S.CONFIRMED, E.HANGUP): "_bye_on_hangup",  # 15.1.1 -> terminating
    (S.CONFIRMED, E.REMOTE_BYE): "_end_by_remote_bye",  # 15.1.2 -> ended
    (S.CONFIRMED, E.DIALOG_GONE): "_remote_gone",  # 12.2.1.2 -> ended (BYE first on a 408)
    (S.CONFIRMED, E.SESSION_REFRESH): "_refresh_session",  # RFC 4028 10: re-INVITE our SDP
    (S.CONFIRMED, E.SESSION_EXPIRED): "_bye_session_expired",  # RFC 4028 10 -> terminating
    (S.CONFIRMED, E.OK_NOT_ACKED): "_bye_not_acked",  # 13.3.1.4 -> terminating
    (S.CONFIRMED, E.SHUTDOWN): "_shutdown_answered",  # -> ended
    (S.CONFIRMED, E.OFFER): "_offer_received",  # listener gets call_offer
    (S.CONFIRMED, E.INFO): "_info_received",  # listener gets call_info
    (S.CONFIRMED, E.REQUEST): "_in_dialog_request",  # 12.2.2
    (S.CONFIRMED, E.REINVITE): "_send_reinvite",  # 14.1
    (S.CONFIRMED, E.UPDATE): "_send_update",  # RFC 3311
    (S.CONFIRMED, E.SEND_INFO): "_send_info",  # RFC 6086
    # terminating: our BYE is out (RFC 3261 15.1.1)
    (S.TERMINATING, E.ANSWERED): "_stray_2xx",
    (S.TERMINATING, E.BYE_DONE): "_end_after_bye",  # any final, timeout or error -> ended
    (S.TERMINATING, E.SHUTDOWN): "_shutdown_answered",  # -> ended
    (S.TERMINATING, E.OFFER): "_offer_received",
    (S.TERMINATING, E.INFO): "_info_received",
    (S.TERMINATING, E.REQUEST): "_in_dialog_request",  # BYE crossing ours: 200; re-INVITE: 491
    # ended / failed: only retransmitted 2xx still get their ACK (RFC 6026 7.2)
    (S.ENDED, E.ANSWERED): "_stray_2xx",
    (S.FAILED, E.ANSWERED): "_stray_2xx",
}

# What an event gets in a state with no entry above, when it must not be ignored.
UNHANDLED: dict[CallEvent, str] = {
    E.REQUEST: "_no_such_dialog",  # 12.2.2: 481
    E.REINVITE: "_wrong_state",  # CallStateError
    E.UPDATE: "_wrong_state",
    E.SEND_INFO: "_wrong_state",
}
