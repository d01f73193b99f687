"""Why a callback ended: stable cause codes, and SIP final responses sorted into kinds (pure).

The page, the JSON API, the xDRs and the metrics all use these codes, so they are part of the
public interface: ``lega_busy``, ``legb_no_answer``, ``trunk_unreachable``, ``max_duration``...
"""

# RFC 3261 21.4.24 / 21.6.1: the callee is busy (486) or busy everywhere (600).
_BUSY = frozenset({486, 600})
# RFC 3261 21.4.18 (480 Temporarily Unavailable) and 408 (no final answer in time).
_NO_ANSWER = frozenset({408, 480})

CAUSES = {
    "lega_busy": "the number to call back is busy",
    "lega_no_answer": "the number to call back did not answer",
    "lega_rejected": "the call to the number to call back was rejected",
    "lega_failed": "the call to the number to call back failed",
    "trunk_unreachable": "the SIP trunk could not be reached",
    "legb_busy": "the destination is busy",
    "legb_no_answer": "the destination did not answer",
    "legb_rejected": "the call to the destination was rejected",
    "legb_failed": "the call to the destination failed",
    "legb_unreachable": "the SIP trunk could not be reached for the destination",
    "caller_hung_up": "you hung up before the destination answered",
    "lega_hung_up": "you hung up",
    "legb_hung_up": "the destination hung up",
    "local_hangup": "the call was ended by the server",
    "max_duration": "the maximum call duration allowed by the balance was reached",
    "no_balance": "not enough balance to call the destination",
    "media_timeout": "the call's audio stopped",
    "media_unavailable": "the server had no free media port for the call",
    "media_bye": "a phone ended its audio (RTCP BYE) but did not hang up",
    "ivr_failed": "the caller could not be identified",
    "ivr_no_input": "no digits were entered",
    "ivr_locked_out": "too many failed attempts: locked out for a while",
    "authorization_failed": "the balance could not be checked",
    "shutdown": "the server was shutting down",
    "drain_deadline": "the server was taken out of service and the call reached the deadline "
                      "given for it",
    "operator_hangup": "the call was ended by the operator",
    "node_lost": "the server running the call stopped; it was ended and billed up to that moment",
}


def classify_failure(status: int, reason: str) -> str:
    """Sort a failed INVITE's outcome into busy, no_answer, unreachable, rejected or failed.

    Our own no-answer timeout CANCELs the INVITE and ends in 487 "no answer" (the UA's
    reason); a transport error or a trunk that cannot be located is 503 with a reason the UA
    sets itself, which tells it apart from a 503 sent by the trunk.
    """
    if status in _BUSY:
        return "busy"
    if status in _NO_ANSWER or (status == 487 and reason == "no answer"):
        return "no_answer"
    if status == 503 and reason.startswith(("transport error", "trunk")):
        return "unreachable"
    if 400 <= status < 700:
        return "rejected" if status in (403, 404, 484, 603, 604) else "failed"
    return "failed"


def describe(code: str) -> str:
    """A sentence for the page, for a cause code (codes of authorization refusals included)."""
    if code in CAUSES:
        return CAUSES[code]
    if code.startswith("legb_"):
        return f"the destination could not be called ({code[5:].replace('_', ' ')})"
    return code.replace("_", " ")
