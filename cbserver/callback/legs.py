"""One call leg of a callback, and the listener that feeds its SIP events to the session."""

from __future__ import annotations

from dataclasses import dataclass

from zope.interface import implementer

from cbserver.billing.rating import connected_seconds
from cbserver.billing.xdr import LegRecord
from cbserver.sip.ua import ICallListener


@dataclass
class Leg:
    """One call leg's progress, as the page and the xDR need it."""

    name: str  # "A" or "B"
    number: str
    state: str = "idle"  # idle, calling, ringing, answered, failed, ended
    sip_status: int | None = None
    reason: str = ""
    call: object = None
    media: object = None
    placed_at: float | None = None
    answered_at: float | None = None
    alerted_at: float | None = None  # first 18x
    ended_at: float | None = None
    record: LegRecord | None = None

    def duration(self) -> int:
        """Whole seconds from answer to end, rounded up (a started second is charged)."""
        if self.answered_at is None or self.ended_at is None:
            return 0
        return connected_seconds(self.ended_at - self.answered_at)

    def post_dial_delay(self) -> float | None:
        """Seconds from the INVITE to the first 18x or the 2xx (ITU-T E.411's post-dial
        delay, as the console's destinations report shows it); None before either."""
        first = self.alerted_at or self.answered_at
        if self.placed_at is None or first is None:
            return None
        return round(max(0.0, first - self.placed_at), 3)

    def as_dict(self) -> dict:
        """The leg as shown in the status."""
        return {"state": self.state, "sip_status": self.sip_status, "reason": self.reason,
                "number": self.number, "post_dial_delay": self.post_dial_delay()}


@implementer(ICallListener)
class LegListener:
    """Forwards one leg's call events to the session."""

    def __init__(self, session, leg: Leg):
        self.session, self.leg = session, leg

    def call_trying(self, call):
        """100 Trying: nothing to show."""

    def call_ringing(self, call, early_sdp):
        """180/183."""
        self.session.leg_ringing(self.leg, early_sdp)

    def call_answered(self, call, remote_sdp):
        """2xx."""
        self.session.leg_answered(self.leg, remote_sdp)

    def call_failed(self, call, status, reason):
        """Never answered."""
        self.session.leg_failed(self.leg, status, reason)

    def call_ended(self, call, by_remote, reason):
        """BYE either way."""
        self.session.leg_ended(self.leg, by_remote, reason)

    def call_info(self, call, content_type, body):
        """INFO: DTMF relay for the IVR."""
        if self.leg.media is not None:
            self.leg.media.info(content_type, body)

    def call_offer(self, call, remote_sdp):
        """re-INVITE/UPDATE with new SDP: follow the far end's new address and direction
        (a hold stops our RTP to it, RFC 3264 6.1); the SIP layer has answered already."""
        if self.leg.media is not None:
            self.leg.media.answer(remote_sdp)
