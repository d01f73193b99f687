"""The relay: legA <-> legB packet forwarding through the server once the call is joined.

Each leg's session rewrites what it forwards into its own SSRC/sequence/timestamp space, so a
phone that heard our prompt and then the far end sees one continuous stream (see
``rewrite.py``). Audio is transcoded PCMU <-> PCMA when the legs negotiated different codecs;
telephone-event packets pass through with the payload type the receiving leg negotiated.

The relay ends (its Deferred fires with a ``RelayEnd``) when ``stop()`` is called, or when a
leg has sent neither RTP nor RTCP for ``inactivity_timeout`` seconds (``INACTIVE``), or when a
leg sent RTCP BYE and then no RTP for ``bye_grace`` seconds (``BYE``): the media of that call
stopped, and the caller should hang the call up. ``lost_leg`` ("A" or "B") names the leg.
A leg on hold that said it sends nothing (recvonly, inactive) is not timed out, and what it
sends is not forwarded to a leg that said it receives nothing (the sessions drop it).

An RTCP BYE alone never ends the relay: a phone hanging up sends it with its SIP BYE, and
the SIP BYE, often relayed by a proxy, arrives later; the SIP dialog says who hung up. The
BYE only shortens the wait for media from the leg that sent it.
"""

import enum

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import Attribute, Interface, implementer

from cbserver.logs import Logger
from cbserver.media import g711


class RelayEnd(enum.Enum):
    """Why a relay ended."""

    STOPPED = "stopped"
    INACTIVE = "inactive"
    BYE = "bye"


class IRelay(Interface):
    """A media relay between two legs, as the callback session drives it."""

    def start():
        """Join the legs; returns a Deferred firing with a ``RelayEnd`` when the relay ends."""

    def stop():
        """Unjoin the legs (the Deferred of ``start`` fires with ``RelayEnd.STOPPED``)."""

    lost_leg = Attribute("'A' or 'B': the leg whose media was lost, once the relay ended so")


@implementer(IRelay)
class Relay:
    """Joins two RtpSessions; see the module docstring."""

    log = Logger()

    def __init__(
        self, clock: IReactorTime, leg_a, leg_b, inactivity_timeout: float = 60.0,
        call_id: str = "", bye_grace: float = 5.0,
    ):
        self._clock = clock
        self.leg_a, self.leg_b = leg_a, leg_b
        self.inactivity_timeout = inactivity_timeout
        self.bye_grace = bye_grace
        self.call_id = call_id
        self.lost_leg: str | None = None
        self._byes: dict[str, float] = {}  # leg name -> when its RTCP BYE arrived
        self._timer = None
        self._started_at = 0.0
        self._done: defer.Deferred | None = None
        self.forwarded = 0
        self.dropped = 0

    def start(self) -> defer.Deferred:
        """Join the legs; the Deferred fires with a RelayEnd."""
        self._done = defer.Deferred(canceller=lambda _d: self._end(RelayEnd.STOPPED))
        self._started_at = self._clock.seconds()
        for src, dst in ((self.leg_a, self.leg_b), (self.leg_b, self.leg_a)):
            dst.begin_talkspurt()  # the first relayed packet re-anchors and carries the marker
            src.packet_sink = self._forwarder(src, dst)
            # Same codec: audio of the source the destination is anchored on takes the
            # session's fast path; the first packet (which anchors) and everything else still
            # go through packet_sink.
            src.relay_to = (dst, self) if src.codec == dst.codec else None
            src.on_bye = lambda src=src: self._bye(src)
        self._schedule(self._started_at + self.inactivity_timeout)
        self.log.debug("relay joined call_id={call_id}", call_id=self.call_id)
        return self._done

    def stop(self) -> None:
        """Unjoin the legs (they stay open; prompts may play again)."""
        self._end(RelayEnd.STOPPED)

    def _forwarder(self, src, dst):
        """The packet sink for ``src``: forward to ``dst``."""
        same_codec = src.codec == dst.codec

        def forward(packet):
            pt = packet.payload_type
            if pt == src.payload_type:
                if not same_codec:
                    packet = packet.replace(
                        payload=g711.transcode(src.codec, dst.codec, packet.payload)
                    )
                dst.forward(packet, dst.payload_type, len(packet.payload))
                self.forwarded += 1
            elif pt == src.telephone_event_pt and dst.telephone_event_pt is not None:
                # RFC 4733 2.3: the event's timestamp stays the start of the event, so no
                # samples are added to the stream's end-of-media position.
                dst.forward(packet, dst.telephone_event_pt, 0)
                self.forwarded += 1
            else:
                self.dropped += 1  # e.g. comfort noise the other leg did not negotiate

        return forward

    def _name(self, leg) -> str:
        return "A" if leg is self.leg_a else "B"

    def _bye(self, leg) -> None:
        """RTCP BYE from ``leg`` (RFC 3550 6.3.7): its source left the RTP session.

        A phone sends it as it hangs up, with its SIP BYE, which decides the call's end and
        says who hung up; if neither the SIP BYE nor RTP follows within ``bye_grace``, the
        leg's media is taken as lost (``_check``).
        """
        if self._done is None:
            return
        name = self._name(leg)
        now = self._clock.seconds()
        self._byes.setdefault(name, now)
        self.log.debug("rtcp bye on leg {leg} call_id={call_id}: waiting {grace}s for a SIP BYE",
                      leg=name, call_id=self.call_id, grace=self.bye_grace)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._schedule(self._next_check())

    def _next_check(self) -> float:
        """When the earliest inactivity or BYE deadline falls."""
        oldest = min(self._last_heard(self.leg_a), self._last_heard(self.leg_b))
        return min([oldest + self.inactivity_timeout,
                    *(at + self.bye_grace for at in self._byes.values())])

    def _last_heard(self, leg) -> float:
        """When ``leg`` last showed it is alive: RTP, RTCP, or a change of its SDP direction
        (the silence of a hold is not counted after a resume). A leg that said it will not
        send (recvonly, inactive: a hold, RFC 3264 5.1) counts as heard now; the SIP
        dialog's session timer and keepalive notice a far end that vanished while held."""
        if not getattr(leg, "expects_rtp", True):
            return self._clock.seconds()
        times = (leg.last_received, getattr(leg, "last_rtcp", None), getattr(leg, "direction_changed", None))
        return max([self._started_at, *(t for t in times if t is not None)])

    def _schedule(self, when: float) -> None:
        self._timer = self._clock.callLater(max(0.0, when - self._clock.seconds()), self._check)

    def _check(self) -> None:
        self._timer = None
        if self._done is None:
            return
        now = self._clock.seconds()
        for leg in (self.leg_a, self.leg_b):
            name = self._name(leg)
            at = self._byes.get(name)
            if at is None:
                continue
            if leg.last_received is not None and leg.last_received > at:
                del self._byes[name]  # RTP again after the BYE (a new source): still alive
            elif now >= at + self.bye_grace - 1e-9:  # the very time _next_check asked for
                self.log.warn("media lost on leg {leg} call_id={call_id}: RTCP BYE and no SIP BYE "
                              "or RTP for {grace}s", leg=name, call_id=self.call_id,
                              grace=self.bye_grace)
                self.lost_leg = name
                self._end(RelayEnd.BYE)
                return
        # RFC 3550 6.3.5 times a member out after silence; we end the call when either leg
        # has gone quiet (RTP and RTCP) for the configured time.
        quiet = min((self.leg_a, self.leg_b), key=self._last_heard)
        oldest = self._last_heard(quiet)
        if now - oldest >= self.inactivity_timeout:
            self.log.warn(
                "media inactive {seconds:.0f}s on leg {leg} call_id={call_id}",
                seconds=now - oldest, leg=self._name(quiet), call_id=self.call_id,
            )
            self.lost_leg = self._name(quiet)
            self._end(RelayEnd.INACTIVE)
        else:
            self._schedule(self._next_check())

    def _end(self, why: RelayEnd) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for leg in (self.leg_a, self.leg_b):
            leg.packet_sink = None
            leg.relay_to = None
            leg.on_bye = None
        d, self._done = self._done, None
        if d is not None:
            # Per-call detail at debug: the callback's own end line says how the call ended.
            self.log.debug(
                "relay ended call_id={call_id} why={why} forwarded={forwarded}",
                call_id=self.call_id, why=why.value, forwarded=self.forwarded,
            )
            d.callback(why)
