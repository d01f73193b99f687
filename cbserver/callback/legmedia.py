"""What a callback session needs of the media layer, for one call leg.

``LegMedia`` bundles one leg's RTP session, its DTMF input and prompt playback behind a few
verbs (offer, answer, play, collect, close), so the session state machine speaks in call
terms and never touches ports or packets. ``MediaEnvironment`` holds what every leg shares:
the port pool, the one media clock, the prompt libraries and the relay settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet import defer
from zope.interface import Interface, implementer

from cbserver.logs import Logger
from cbserver.media.collector import CollectResult
from cbserver.media.listen import DtmfInput, prompt_and_collect
from cbserver.media.player import Player, PlayResult
from cbserver.media.relay import Relay
from cbserver.media.session import RtpSession
from cbserver.sip.sdp import MediaChoice, SdpError, make_offer, negotiate, parse_sdp, streams_removed

log = Logger()


@dataclass
class MediaEnvironment:
    """Shared media resources: reactor, port pool, media clock, prompt libraries."""

    clock: object  # IReactorTime
    reactor: object  # IReactorUDP
    pool: object  # PortPool
    media_clock: object  # MediaClock
    bind_address: str
    public_address: str
    inactivity_timeout: float = 30.0
    # After a leg's RTCP BYE, how long its SIP BYE (or RTP) may take before the media is lost.
    rtcp_bye_grace: float = 5.0
    # Whose RTP a leg latches to: "strict" or "nat" (``rtp.latch``, docs/security.md).
    rtp_latch: str = "strict"
    libraries: dict = field(default_factory=dict)  # application name -> IPromptLibrary

    def library(self, application: str):
        """The prompt library of an instance (its overrides applied)."""
        return self.libraries[application]


class ILegMedia(Interface):
    """One leg's media, as the callback session and the hosted IVR use it."""

    def open():
        """Bind the RTP/RTCP ports and return our SDP offer (bytes)."""

    def answer(remote_sdp):
        """Apply the far end's SDP (answer, early media, or a re-INVITE's new offer)."""

    def info(content_type, body):
        """A SIP INFO body carrying DTMF; True when it was a digit."""

    def play(names):
        """Play prompts; a Deferred firing with a ``PlayResult`` (an interrupted play fires
        ``INTERRUPTED``, also when cancelled)."""

    def stop_prompt():
        """Interrupt the prompt playing, if any (its Deferred fires at once)."""

    def collect(names, max_digits, first_digit_timeout, inter_digit_timeout, terminator):
        """Play ``names`` and collect DTMF digits; a Deferred firing with a ``CollectResult``."""

    def close():
        """Stop prompts and collection, release the ports; a Deferred."""


class IMediaFactory(Interface):
    """Makes the media of a session's legs and joins them."""

    def new_leg(application, call_id):
        """An unopened ``ILegMedia`` for one leg of ``application``; may raise when no port is free."""

    def join(a, b, call_id):
        """An ``IRelay`` between two legs' media (their prompts stopped first), not started."""


@implementer(ILegMedia)
class LegMedia:
    """One leg's media endpoint anchored at the server."""

    def __init__(self, env: MediaEnvironment, application: str, call_id: str = ""):
        self.env = env
        self.library = env.library(application)
        self.call_id = call_id
        # The callback's own id: legs are named "<callback id>-A" / "-B".
        self.callback_id = call_id.rsplit("-", 1)[0]
        self.session = RtpSession(env.clock, env.reactor, env.pool, env.bind_address,
                                  call_id=call_id, latch=env.rtp_latch)
        self.dtmf = DtmfInput(call_id)
        self.port: int | None = None
        self._player: Player | None = None
        self._pending: list[defer.Deferred] = []

    def open(self) -> bytes:
        """Bind the RTP/RTCP ports and return our SDP offer (PCMU, PCMA, telephone-event)."""
        self.port = self.session.open()
        self.dtmf.attach(self.session)
        return make_offer(self.env.public_address, self.port)

    def answer(self, remote_sdp: bytes | None) -> None:
        """Apply the far end's SDP (its answer, or a later offer it made, RFC 3264): where to
        send, codec, event type, and whether it wants our media at all (its direction)."""
        if not remote_sdp:
            return
        try:
            remote = parse_sdp(remote_sdp)  # once, for both questions below
            if streams_removed(remote):
                # RFC 3264 8.2: the far end removed the audio stream (port 0; answered with
                # port 0): send it nothing until an offer brings a stream back.
                self.session.set_remote_direction("inactive")
                return
            choice = negotiate(remote)
        except SdpError as e:
            log.warn("unusable SDP answer callback_id={callback_id} call_id={call_id}: {err}",
                     callback_id=self.callback_id, call_id=self.call_id, err=e)
            return
        self.session.configure((choice.address, choice.port), choice.payload_type, choice.codec,
                               choice.telephone_event)
        self.session.set_remote_direction(remote_direction(choice))

    def info(self, content_type: str, body: bytes) -> bool:
        """A SIP INFO DTMF body (application/dtmf-relay, application/dtmf)."""
        return self.dtmf.info(content_type, body)

    def play(self, names) -> defer.Deferred:
        """Play prompts; fires with a PlayResult (DONE, or INTERRUPTED by ``stop_prompt``)."""
        self.stop_prompt()
        player = Player(self.env.media_clock, self.session, self.library, names, self.call_id)
        self._player = player
        return self._track(player.play())

    def stop_prompt(self) -> None:
        """Interrupt whatever prompt is playing."""
        if self._player is not None:
            self._player.stop()
            self._player = None

    def collect(self, names, max_digits: int, first_digit_timeout: float = 6.0,
                inter_digit_timeout: float = 4.0, terminator: str | None = "#") -> defer.Deferred:
        """Play ``names`` and collect digits with barge-in; fires with a CollectResult."""
        self.stop_prompt()
        d = prompt_and_collect(self.env.clock, self.env.media_clock, self.session, self.library,
                               self.dtmf, names, max_digits, first_digit_timeout,
                               inter_digit_timeout, terminator, self.call_id)
        return self._track(d)

    def _track(self, d: defer.Deferred) -> defer.Deferred:
        """Remember an unfinished media operation so ``close`` can cancel it."""
        self._pending.append(d)

        def forget(result):
            if d in self._pending:
                self._pending.remove(d)
            return result

        return d.addBoth(forget)

    def close(self) -> defer.Deferred:
        """Stop playback and collection and release the ports."""
        self.stop_prompt()
        for d in list(self._pending):
            d.cancel()
        return self.session.close()


def remote_direction(choice: MediaChoice) -> str:
    """The far end's direction, its own point of view; ``c=0.0.0.0`` is the old way of
    saying "send me nothing" (RFC 3264 8.4), read as ``sendonly``/``inactive``."""
    if choice.address in ("0.0.0.0", "::") and choice.direction in ("sendrecv", "recvonly"):
        return "sendonly" if choice.direction == "sendrecv" else "inactive"
    return choice.direction


def join(env: MediaEnvironment, a: LegMedia, b: LegMedia, call_id: str = "") -> Relay:
    """Relay media between two legs (prompts stopped first)."""
    a.stop_prompt()
    b.stop_prompt()
    return Relay(env.clock, a.session, b.session, env.inactivity_timeout, call_id,
                 bye_grace=env.rtcp_bye_grace)


__all__ = ["CollectResult", "ILegMedia", "IMediaFactory", "LegMedia", "MediaEnvironment", "PlayResult",
           "join"]
