"""The user agent the callback service drives: places calls through the trunk, emits call events.

:class:`UserAgent` is the transaction user (RFC 3261 8) on top of a
:class:`~cbserver.sip.transaction.TransactionLayer`. It places calls (:class:`Call`), routes
in-dialog requests to them, answers 481 for requests matching no dialog (RFC 3261 12.2.2), and
answers out-of-dialog requests: OPTIONS 200 (RFC 3261 11.2), INVITE refused politely (no
inbound calls), anything else per :mod:`cbserver.sip.validate` (405/501/416/420/400...).

A stranger (a request that is not from the trunk's address and matches none of our dialogs)
gets exactly one response per request it sends: its server transaction ends as soon as the
final response is sent, so a 403 to an INVITE is not retransmitted by Timer G (RFC 3261
17.2.1) towards an address that may be forged. Issue 14, docs/security.md "8. SIP reflection".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from cbserver.logs import Logger
from cbserver.sip import validate
from cbserver.sip.auth import DigestClient
from cbserver.sip.call import Call
from cbserver.sip.call_dialog import dialog_destination
from cbserver.sip.context import CallContext, CallError, CallStateError, ICallListener, LocalParty, Trunk
from cbserver.sip.dialog import Dialog, dialog_id_of_request
from cbserver.sip.interfaces import IUserAgent
from cbserver.sip.message import (
    Request,
    Response,
    SipParseError,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_cseq,
)
from cbserver.sip.timers import SipTimers
from cbserver.sip.transaction import ITransactionUser, TransactionLayer
from cbserver.sip.transport import ISipTransport

__all__ = [
    "ICallListener",
    "UAConfig",
    "UserAgent",
    "Call",
    "CallError",
    "CallStateError",
]

log = Logger()

#: How far a recovery BYE's CSeq is put above the stored one (see ``end_recovered``).
RECOVERY_CSEQ_GAP = 1000


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
        self.local = LocalParty(transport.name, config.public_address, config.public_port,
                                config.username or "cbserver")  # fmt: skip
        self.trunk = Trunk(config.trunk_host, config.trunk_port, transport.name, locator)
        # What every call sees of the UA (a call never holds the UA itself).
        self.call_context = CallContext(
            clock=clock,
            layer=self.layer,
            transport=transport,
            timers=self.timers,
            digest=self.digest,
            local=self.local,
            trunk=self.trunk,
            forget=partial(_forget, self.calls),
            from_domain=config.from_domain,
            user_agent=config.user_agent,
            allow=self.ALLOW,
            session_expires=config.session_expires,
            keepalive_interval=config.keepalive_interval,
        )
        self.stopping = False

    @property
    def sink(self):
        """What the transport should deliver parsed messages to (the transaction layer)."""
        return self.layer

    # -- helpers

    def new_call_id(self) -> str:
        """A fresh Call-ID (RFC 3261 8.1.1.4)."""
        return new_call_id(self.config.public_address)

    def via(self, branch: str) -> str:
        """Our Via with ``rport`` (RFC 3581 3) so responses find us behind NAT."""
        return self.local.via(branch)

    def contact(self) -> str:
        """Our Contact (RFC 3261 8.1.1.8)."""
        return self.local.contact()

    def trunk_targets(self) -> Deferred:
        """Ordered (ip, port) targets for the trunk (RFC 3263), cached after the first lookup."""
        return self.trunk.targets()

    # -- public API

    def place_call(self, number: str, *, caller_id: str, display_name: str | None = None,
                   sdp_offer: bytes, extra_headers=(), no_answer_timeout: float,
                   listener: ICallListener, log_context: str | None = None) -> Call:  # fmt: skip
        """Start a call to ``number`` through the trunk; events go to ``listener``.

        ``log_context`` is the caller's correlation id (the callback id): the call logs its
        Call-ID against it once, and carries it as ``callback_id=`` on its log lines.
        """
        if self.stopping:
            raise CallStateError("user agent is stopping")
        call = Call(self.call_context, number, call_id=self.new_call_id(), caller_id=caller_id,
                    display_name=display_name, sdp_offer=sdp_offer, extra_headers=extra_headers,
                    no_answer_timeout=no_answer_timeout, listener=listener,
                    log_context=log_context)  # fmt: skip
        self.calls[call.call_id] = call
        call.start()
        return call

    def end_recovered(self, dialog_dict: dict, destination) -> Deferred:
        """Send BYE on a dialog another process left up (crash recovery); fire when answered.

        ``dialog_dict`` is a ``Dialog.to_dict()`` stored when the call was answered,
        ``destination`` the (host, port) of the trunk target it was reached through. The BYE
        goes in its own client transaction (RFC 3261 17.1.2) from this UA's transport; its
        CSeq is the stored one plus ``RECOVERY_CSEQ_GAP``, because the dead process may have
        sent in-dialog requests (session refreshes) after it was stored and RFC 3261 12.2.1.1
        wants CSeqs to grow, gaps allowed. Fires with the final status, or None when the
        transaction timed out or could not be sent (the far end is then left to its own
        session timer); never fails.
        """
        dialog = Dialog.from_dict(dialog_dict)
        dialog.local_seq += RECOVERY_CSEQ_GAP
        bye = dialog.new_request("BYE", self.via(new_branch()))
        bye.headers.add("Reason", 'SIP;cause=200;text="node lost"')  # RFC 3326
        done: Deferred = Deferred()
        dest = dialog_destination(dialog, (destination[0], int(destination[1])))
        try:
            self.layer.send_request(bye, dest, _RecoveredBye(done, dialog.call_id))
        except Exception as e:  # noqa: BLE001 - a recovery BYE never raises to its caller
            log.warn("recovery BYE not sent call_id={call_id}: {error}", call_id=dialog.call_id,
                     error=e)
            if not done.called:
                done.callback(None)
        return done

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
            call.shutdown()
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
        stranger = not self._from_trunk(source)
        if verdict.action == validate.RESPOND:
            self._respond(txn, verdict.response, stranger)
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
                self._cancel_received(request, txn, stranger)
                return
            # RFC 3261 12.2.2: a request with a To tag that matches no dialog.
            self._respond(txn, make_response(request, 481, "Call/Transaction Does Not Exist"),
                          stranger)
            return
        self._out_of_dialog(request, txn, stranger)

    def _from_trunk(self, source) -> bool:
        """Whether a request came from one of the trunk's addresses (any port)."""
        return source is not None and source[0] in self.trunk.addresses()

    @staticmethod
    def _respond(txn, response: Response, stranger: bool) -> None:
        """Answer through ``txn``; for a stranger, end the transaction once a final response
        is out, so it is sent exactly once (module docstring)."""
        txn.respond(response)
        if stranger and response.status >= 200:
            txn.terminate()

    def _out_of_dialog(self, request: Request, txn, stranger: bool = False) -> None:
        method = request.method
        if method == "OPTIONS":
            # RFC 3261 11.2: capabilities, answered as for an INVITE.
            resp = make_response(request, 200, "OK", to_tag=new_tag())
            resp.headers.add("Allow", self.ALLOW)
            resp.headers.add("Accept", "application/sdp")
            resp.headers.add("Supported", ", ".join(self.SUPPORTED))
            resp.headers.add("User-Agent", self.config.user_agent)
            self._respond(txn, resp, stranger)
        elif method == "INVITE":
            # No inbound calls: refuse politely (RFC 3261 21.4.4 403).
            self._respond(txn, make_response(request, 403, "No Inbound Calls", to_tag=new_tag()),
                          stranger)
        elif method == "CANCEL":
            self._cancel_received(request, txn, stranger)
        else:
            # BYE, INFO, UPDATE outside any dialog (RFC 3261 12.2.2, 15.1.2).
            self._respond(txn, make_response(request, 481, "Call/Transaction Does Not Exist",
                                             to_tag=new_tag()), stranger)  # fmt: skip

    def _cancel_received(self, request: Request, txn, stranger: bool = False) -> None:
        """RFC 3261 9.2: 200 if the CANCEL matches an INVITE transaction, else 481."""
        invite_txn = self.layer.find_server(request, "INVITE")
        if invite_txn is None:
            self._respond(txn, make_response(request, 481, "Call/Transaction Does Not Exist"),
                          stranger)
            return
        self._respond(txn, make_response(request, 200, "OK", to_tag=new_tag()), stranger)
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


class _RecoveredBye:
    """Owner of a recovery BYE's client transaction: fires ``done`` once, with the final
    status or None."""

    def __init__(self, done: Deferred, call_id: str) -> None:
        self.done = done
        self.call_id = call_id

    def _fire(self, status) -> None:
        if not self.done.called:
            self.done.callback(status)

    def response_received(self, txn, response) -> None:
        """A final response ends it; provisionals are ignored."""
        if response.status >= 200:
            log.info("recovery BYE answered {status} call_id={call_id}", status=response.status,
                     call_id=self.call_id)
            self._fire(response.status)

    def transaction_timed_out(self, txn) -> None:
        """Timer F (RFC 3261 17.1.2.2): nobody answered."""
        log.warn("recovery BYE timed out call_id={call_id}", call_id=self.call_id)
        self._fire(None)

    def transport_failed(self, txn, error) -> None:
        """The transport could not send it."""
        log.warn("recovery BYE not sent call_id={call_id}: {error}", call_id=self.call_id,
                 error=error)
        self._fire(None)


def _forget(calls: dict[str, Call], call: Call) -> None:
    """A call finished: stop routing requests to it (its ``CallContext.forget``)."""
    if calls.get(call.call_id) is call:
        del calls[call.call_id]
