"""What a call needs from the user agent, as one small object, and what it reports back.

:class:`~cbserver.sip.call.Call` does not see the :class:`~cbserver.sip.ua.UserAgent`: the UA
builds one :class:`CallContext` (the clock, the transaction layer, the transport, the RFC 3261
timers, the digest credentials, our Via/Contact, the trunk, a few settings, and a ``forget``
callback) and hands it to every call it places. Events go to the application through
:class:`ICallListener`. This module sits below both ``call.py`` and ``ua.py`` so that neither
imports the other's interfaces (``ua.py`` imports ``call.py``, never the reverse).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface

from cbserver.sip.auth import DigestClient
from cbserver.sip.timers import SipTimers
from cbserver.sip.transaction import TransactionLayer
from cbserver.sip.transport import ISipTransport, TransportError, is_ip_literal

__all__ = [
    "CallContext",
    "CallError",
    "CallStateError",
    "ICallListener",
    "LocalParty",
    "Trunk",
]


class CallError(Exception):
    """An operation on a call failed; ``status`` is the SIP status that said so."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class CallStateError(Exception):
    """The call is not in a state where the operation makes sense."""


class ICallListener(Interface):
    """Call-control events from the UA to the application (cf. sippy's CCEvents)."""

    def call_trying(call):
        """The trunk answered 100 Trying."""

    def call_ringing(call, early_sdp):
        """180/183; ``early_sdp`` is the early-media SDP (bytes) or None."""

    def call_answered(call, remote_sdp):
        """A 2xx arrived and was ACKed; ``remote_sdp`` is its SDP (or None)."""

    def call_failed(call, status, reason):
        """Never answered: final non-2xx, timeout (408), transport error (503), our CANCEL (487)."""

    def call_ended(call, by_remote, reason):
        """An answered call ended: BYE either way, session timer or keepalive expiry."""

    def call_info(call, content_type, body):
        """INFO received in the dialog (e.g. DTMF relay, RFC 6086)."""

    def call_offer(call, remote_sdp):
        """New SDP from the far end (re-INVITE/UPDATE, or an ACK answer); we keep our SDP."""


@dataclass(frozen=True)
class LocalParty:
    """How we name ourselves in Via and Contact (RFC 3261 8.1.1.7, 8.1.1.8)."""

    transport: str  # "UDP" or "TCP", as the Via's sent-protocol names it
    address: str  # the public address written into Via and Contact
    port: int
    user: str  # user part of our Contact

    def via(self, branch: str) -> str:
        """Our Via with ``rport`` (RFC 3581 3) so responses find us behind NAT."""
        return f"SIP/2.0/{self.transport} {self.address}:{self.port};branch={branch};rport"

    def contact(self) -> str:
        """Our Contact (RFC 3261 8.1.1.8)."""
        # RFC 3261 19.1.1: say transport=tcp so in-dialog requests come back over TCP.
        suffix = ";transport=tcp" if self.transport == "TCP" else ""
        return f"<sip:{self.user}@{self.address}:{self.port}{suffix}>"


class Trunk:
    """The operator's trunk and where it is: RFC 3263 location, cached after the first answer."""

    def __init__(self, host: str, port: int, transport: str, locator=None) -> None:
        self.host = host
        self.port = port
        self.transport = transport  # only targets over this transport are usable
        self.locator = locator  # cbserver.sip.locate.ServerLocator, needed when ``host`` is a name
        self._cached: list[tuple[str, int]] | None = None

    @property
    def hostport(self) -> str:
        """``host[:port]`` for URIs; the port is left out when it is the default 5060."""
        return self.host if self.port == 5060 else f"{self.host}:{self.port}"

    def addresses(self) -> frozenset[str]:
        """The trunk's IP addresses known so far (its literal, or the cached lookup)."""
        if is_ip_literal(self.host):
            return frozenset({self.host.strip("[]")})
        return frozenset(host for host, _port in self._cached or ())

    def targets(self) -> Deferred:
        """Ordered (ip, port) targets for the trunk (RFC 3263), cached after the first lookup."""
        if is_ip_literal(self.host):
            return succeed([(self.host.strip("[]"), self.port)])
        if self._cached:
            return succeed(self._cached)
        if self.locator is None:
            return maybeDeferred(_no_locator, self.host)
        # RFC 3263 4.1: an explicit port skips NAPTR/SRV, so only name one when it is not
        # the default; the locator orders the targets for failover (4.3).
        d = maybeDeferred(self.locator.locate, self.hostport)

        def keep(targets):
            usable = [(t.host, t.port) for t in targets if t.transport == self.transport]
            if not usable:
                raise TransportError(f"no {self.transport} target for {self.host}")
            self._cached = usable
            return usable

        return d.addCallback(keep)


def _no_locator(host: str):
    raise TransportError(f"trunk host {host!r} is a name and no locator was given")


@dataclass(frozen=True)
class CallContext:
    """Everything a :class:`~cbserver.sip.call.Call` uses that it does not own; one per UA."""

    clock: IReactorTime  # every call timer (no-answer, keepalive, session timers, 2xx retransmit)
    layer: TransactionLayer  # send_invite / send_request: client transactions (RFC 3261 17.1)
    transport: ISipTransport  # ACK for a 2xx, 2xx retransmission: no transaction (13.2.2.4, 13.3.1.4)
    timers: SipTimers  # T1, T2, Timer B and H for the UA core's own retransmissions
    digest: DigestClient  # credentials for 401/407 (RFC 3261 22.2)
    local: LocalParty  # our Via and Contact
    trunk: Trunk  # where INVITEs go, and the Request-URI's host
    forget: Callable[[Any], None]  # the call ended: the UA stops routing requests to it
    from_domain: str  # host part of From and P-Asserted-Identity
    user_agent: str  # User-Agent header value
    allow: str  # Allow header value (RFC 3261 20.5)
    session_expires: int  # offered in the INVITE (RFC 4028); 0 = not offered
    keepalive_interval: float  # in-dialog OPTIONS period; 0 = off
