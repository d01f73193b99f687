"""The user agent the callback service drives: places calls through the trunk, emits call events.

:class:`UserAgent` is the transaction user (RFC 3261 8) on top of a
:class:`~cbserver.sip.transaction.TransactionLayer`. It places calls (:class:`Call`), routes
in-dialog requests to them, answers 481 for requests matching no dialog (RFC 3261 12.2.2), and
answers out-of-dialog requests: OPTIONS 200 (RFC 3261 11.2), INVITE refused politely (no
inbound calls), anything else per :mod:`cbserver.sip.validate` (405/501/416/420/400...).
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import Interface, implementer

from cbserver.logs import Logger
from cbserver.sip import validate
from cbserver.sip.auth import DigestClient
from cbserver.sip.call import Call, CallError, CallStateError
from cbserver.sip.dialog import Dialog, dialog_id_of_request
from cbserver.sip.interfaces import IUserAgent
from cbserver.sip.message import (
    Request,
    Response,
    SipParseError,
    make_response,
    new_call_id,
    new_tag,
    parse_cseq,
)
from cbserver.sip.timers import SipTimers
from cbserver.sip.transaction import ITransactionUser, TransactionLayer
from cbserver.sip.transport import ISipTransport, TransportError, is_ip_literal

__all__ = [
    "ICallListener",
    "UAConfig",
    "UserAgent",
    "Call",
    "CallError",
    "CallStateError",
]

log = Logger()


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
class UAConfig:
    """What the UA needs to know about itself and the trunk."""

    public_address: str
    public_port: int
    trunk_host: str
    trunk_port: int
    from_domain: str
    username: str
    password: str
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    user_agent: str = "cbserver/0.1"
    session_expires: int = 1800
    keepalive_interval: float = 30
    stop_timeout: float = 5.0


@implementer(ITransactionUser, IUserAgent)
class UserAgent:
    """Places and ends calls; the TU for one transport's transaction layer."""

    ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
    ALLOWED_METHODS = frozenset(ALLOW.replace(",", " ").split())
    SUPPORTED = ("timer",)

    def __init__(self, transport: ISipTransport, clock: IReactorTime, config: UAConfig,
                 locator=None) -> None:  # fmt: skip
        self.transport = transport
        self.clock = clock
        self.config = config
        self.locator = locator
        self.timers = SipTimers(config.t1, config.t2, config.t4).for_transport(transport.reliable)
        self.layer = TransactionLayer(transport, clock, self.timers, self)
        self.digest = DigestClient(config.username, config.password)
        self.calls: dict[str, Call] = {}
        self._trunk_targets: list[tuple[str, int]] | None = None
        self.stopping = False

    @property
    def sink(self):
        """What the transport should deliver parsed messages to (the transaction layer)."""
        return self.layer

    # -- helpers for calls

    def new_call_id(self) -> str:
        """A fresh Call-ID (RFC 3261 8.1.1.4)."""
        return new_call_id(self.config.public_address)

    def via(self, branch: str) -> str:
        """Our Via with ``rport`` (RFC 3581 3) so responses find us behind NAT."""
        cfg = self.config
        return (f"SIP/2.0/{self.transport.name} {cfg.public_address}:{cfg.public_port}"
                f";branch={branch};rport")  # fmt: skip

    def contact(self) -> str:
        """Our Contact (RFC 3261 8.1.1.8)."""
        cfg = self.config
        user = cfg.username or "cbserver"
        # RFC 3261 19.1.1: say transport=tcp so in-dialog requests come back over TCP.
        suffix = ";transport=tcp" if self.transport.name == "TCP" else ""
        return f"<sip:{user}@{cfg.public_address}:{cfg.public_port}{suffix}>"

    def trunk_targets(self) -> Deferred:
        """Ordered (ip, port) targets for the trunk (RFC 3263), cached after the first lookup."""
        cfg = self.config
        if is_ip_literal(cfg.trunk_host):
            return succeed([(cfg.trunk_host.strip("[]"), cfg.trunk_port)])
        if self._trunk_targets:
            return succeed(self._trunk_targets)
        if self.locator is None:
            return maybeDeferred(_no_locator, cfg.trunk_host)
        # RFC 3263 4.1: an explicit port skips NAPTR/SRV, so only name one when it is not
        # the default; the locator orders the targets for failover (4.3).
        where = cfg.trunk_host if cfg.trunk_port == 5060 else f"{cfg.trunk_host}:{cfg.trunk_port}"
        d = maybeDeferred(self.locator.locate, where)

        def keep(targets):
            usable = [(t.host, t.port) for t in targets if t.transport == self.transport.name]
            if not usable:
                raise TransportError(f"no {self.transport.name} target for {cfg.trunk_host}")
            self._trunk_targets = usable
            return usable

        return d.addCallback(keep)

    def destination_for(self, dialog: Dialog) -> tuple[str, int]:
        """Where an in-dialog request goes: the next hop when it is an IP literal, else the
        trunk target we reached the far end through (we never resolve names from messages)."""
        try:
            host, port = dialog.next_hop().host_port()
        except SipParseError:
            host, port = "", 0
        if is_ip_literal(host):
            return host, port
        call = self.calls.get(dialog.call_id)
        if call is not None and call._targets:
            return call.destination
        cfg = self.config
        if self._trunk_targets:
            return self._trunk_targets[0]
        return cfg.trunk_host, cfg.trunk_port

    def forget(self, call: Call) -> None:
        """A call finished: stop routing requests to it."""
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]

    # -- public API

    def place_call(self, number: str, *, caller_id: str, display_name: str | None = None,
                   sdp_offer: bytes, extra_headers=(), no_answer_timeout: float,
                   listener: ICallListener) -> Call:  # fmt: skip
        """Start a call to ``number`` through the trunk; events go to ``listener``."""
        if self.stopping:
            raise CallStateError("user agent is stopping")
        call = Call(self, number, caller_id=caller_id, display_name=display_name,
                    sdp_offer=sdp_offer, extra_headers=extra_headers,
                    no_answer_timeout=no_answer_timeout, listener=listener)  # fmt: skip
        self.calls[call.call_id] = call
        call.start()
        return call

    def stop(self) -> Deferred:
        """End every call (CANCEL/BYE); fires when all ended or after ``stop_timeout``."""
        self.stopping = True
        calls = list(self.calls.values())
        done: Deferred = Deferred()
        waits = DeferredList([c.hangup() for c in calls], consumeErrors=True)
        timer = self.clock.callLater(self.config.stop_timeout, self._force_stop, done)

        def finished(_):
            if timer.active():
                timer.cancel()
            self._force_stop(done)

        waits.addCallback(finished)
        waits.addErrback(lambda f: log.failure("stopping the user agent", f))
        return done

    def _force_stop(self, done: Deferred) -> None:
        for call in list(self.calls.values()):
            if call.state in ("confirmed", "terminating"):
                call._end(False, "shutdown")
            else:
                call._fail(503, "shutdown")
        self.layer.stop()
        if not done.called:
            done.callback(None)

    # -- ITransactionUser

    def request_received(self, request: Request, txn, source) -> None:
        """Route a new request: to its call's dialog, or answer it out of dialog."""
        call_id = request.headers.get("Call-ID") or ""
        if request.method == "ACK":
            call = self.calls.get(call_id)
            if call is not None:
                call.ack_received(request)
            return  # RFC 3261 17: an ACK is never answered
        verdict = validate.check_request(
            request, allowed_methods=self.ALLOWED_METHODS, supported=self.SUPPORTED
        )
        if verdict.action == validate.RESPOND:
            txn.respond(verdict.response)
            return
        if verdict.action == validate.DROP:
            txn.terminate()
            return
        dialog_id = dialog_id_of_request(request)
        if dialog_id is not None:
            call = self.calls.get(call_id)
            if call is not None and call.dialog is not None and call.dialog.id == dialog_id:
                call.request_received(request, txn)
                return
            if request.method == "CANCEL":
                self._cancel_received(request, txn)
                return
            # RFC 3261 12.2.2: a request with a To tag that matches no dialog.
            txn.respond(make_response(request, 481, "Call/Transaction Does Not Exist"))
            return
        self._out_of_dialog(request, txn)

    def _out_of_dialog(self, request: Request, txn) -> None:
        method = request.method
        if method == "OPTIONS":
            # RFC 3261 11.2: capabilities, answered as for an INVITE.
            resp = make_response(request, 200, "OK", to_tag=new_tag())
            resp.headers.add("Allow", self.ALLOW)
            resp.headers.add("Accept", "application/sdp")
            resp.headers.add("Supported", ", ".join(self.SUPPORTED))
            resp.headers.add("User-Agent", self.config.user_agent)
            txn.respond(resp)
        elif method == "INVITE":
            # No inbound calls: refuse politely (RFC 3261 21.4.4 403).
            txn.respond(make_response(request, 403, "No Inbound Calls", to_tag=new_tag()))
        elif method == "CANCEL":
            self._cancel_received(request, txn)
        else:
            # BYE, INFO, UPDATE outside any dialog (RFC 3261 12.2.2, 15.1.2).
            txn.respond(make_response(request, 481, "Call/Transaction Does Not Exist",
                                      to_tag=new_tag()))  # fmt: skip

    def _cancel_received(self, request: Request, txn) -> None:
        """RFC 3261 9.2: 200 if the CANCEL matches an INVITE transaction, else 481."""
        invite_txn = self.layer.find_server(request, "INVITE")
        if invite_txn is None:
            txn.respond(make_response(request, 481, "Call/Transaction Does Not Exist"))
            return
        txn.respond(make_response(request, 200, "OK", to_tag=new_tag()))
        if invite_txn.state == "proceeding":
            invite_txn.respond(make_response(invite_txn.request, 487, None, to_tag=new_tag()))

    def stray_response(self, response: Response, source) -> None:
        """A late 2xx to an INVITE gets re-ACKed by its call (RFC 3261 13.2.2.4)."""
        try:
            _, method = parse_cseq(response.headers.get("CSeq") or "")
        except SipParseError:
            return
        call = self.calls.get(response.headers.get("Call-ID") or "")
        if call is not None and method == "INVITE" and 200 <= response.status < 300:
            call.stray_2xx(response)

    def stop_listening(self) -> None:
        """Forget the transport's deliveries (used by the service on shutdown)."""
        self.layer.stop()


def _no_locator(host: str):
    raise TransportError(f"trunk host {host!r} is a name and no locator was given")
