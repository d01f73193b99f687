"""What the rest of the server may ask of the SIP side: the user agent and one call.

The callback session places calls and hangs them up through these; the SIP classes declare
them (``UserAgent``, ``Call``) and the callback's test fakes implement the same ones, so
neither side can drift. This module imports nothing from the SIP stack, so the SIP side can
implement it without importing the callback layer and the callback layer can use it without
importing the SIP stack.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class ICall(Interface):
    """One outgoing call, as its owner sees it.

    The listener given to ``IUserAgent.place_call`` hears zero or more ``call_trying`` /
    ``call_ringing``, at most one ``call_answered``, then exactly one final event:
    ``call_failed`` (never answered) or ``call_ended`` (answered, then hung up either way).
    Nothing follows the final event. After ``hangup()`` a call may still report a
    provisional or the 2xx that crossed our CANCEL (RFC 3261 9.1) before its final event;
    ``cbserver.sip.call.Call`` itself ACKs and BYEs such a 2xx and reports ``call_failed``
    487. Events may be delivered synchronously, from inside ``place_call`` or ``hangup``.
    """

    call_id = Attribute("The SIP Call-ID of the call (RFC 3261 8.1.1.4).")

    def hangup():
        """End the call: CANCEL before a final response, BYE after the answer; idempotent.

        Returns a Deferred firing once the call has ended (the listener had its final event).
        """


class IUserAgent(Interface):
    """The SIP user agent, as the callback session uses it."""

    def place_call(number, *, caller_id, display_name, sdp_offer, no_answer_timeout, listener,
                   log_context):
        """Start a call to ``number`` through the trunk and return its ``ICall``.

        ``caller_id`` is the number shown (From and RFC 3325 P-Asserted-Identity),
        ``sdp_offer`` our media offer (RFC 3264), ``listener`` an ``ICallListener``. A call
        not answered within ``no_answer_timeout`` seconds is cancelled and fails 487 "no
        answer". ``log_context`` (the callback id, or None) is logged once against the call's
        Call-ID and carried as ``callback_id=`` on the call's log lines. Raises
        ``CallStateError`` when the agent is stopping.
        """
