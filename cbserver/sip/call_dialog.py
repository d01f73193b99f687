"""The INVITE dialog usage (RFC 5057) of a call: in-dialog requests both ways, session timers,
keepalive. Composed into :class:`~cbserver.sip.call.Call`, not mixed in.

A :class:`DialogUsage` is made by its call when a 2xx creates the dialog. It owns the
:class:`~cbserver.sip.dialog.Dialog` (the state a later issue stores) and builds every
in-dialog message through it. Outgoing: re-INVITE, UPDATE, INFO, OPTIONS and BYE, with
digest retry (RFC 3261 22.2) and RFC 3261 12.2.1.2's rule that a 481 or 408 ends the dialog.
Incoming: BYE, re-INVITE (2xx retransmitted until ACK, RFC 3261 13.3.1.4), UPDATE (RFC 3311),
INFO (RFC 6086), OPTIONS. Session timers follow RFC 4028 when the far end asks for them; a
periodic in-dialog OPTIONS notices a far end that vanished.

It never changes the call's state: whatever the far end does that matters to the call (BYE,
481/408, new SDP, INFO, a session timer, an unACKed 2xx) goes to its owner as a
:class:`~cbserver.sip.call_states.CallEvent`, and the call's transition table decides. The
usage is ``active`` while the call is ``confirmed``; the call stops it when it leaves.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail
from zope.interface import Attribute, Interface, implementer

from cbserver.logs import Logger
from cbserver.namedtimers import NamedTimersMixin
from cbserver.sip.auth import AuthAttempts, AuthError, pick_challenge
from cbserver.sip.call_states import CallEvent
from cbserver.sip.context import CallContext, CallError, CallStateError
from cbserver.sip.dialog import Dialog, DialogError
from cbserver.sip.message import Request, Response, SipParseError, make_response, new_branch
from cbserver.sip.sdp import SdpError
from cbserver.sip.transport import TransportError, is_ip_literal
from cbserver.sip.txn_client import IClientTransactionUser
from cbserver.sip.uri import is_digits

__all__ = ["DialogUsage", "IDialogOwner", "dialog_destination", "is_sdp"]

log = Logger()


class IDialogOwner(Interface):
    """What a :class:`DialogUsage` needs from the call that owns it."""

    local_sdp = Attribute("The last SDP we sent: our offer in a 2xx to an offer-less re-INVITE, "
                          "our session refreshes.")

    def answer_offer(offer):
        """Our SDP answer (bytes) to the far end's ``offer`` in the dialog (RFC 3264 8).

        Raises :class:`~cbserver.sip.sdp.SdpError` when nothing in it is acceptable: the
        request then gets a 488 and the session stays as it was (RFC 3261 14.2, RFC 3311 5.2).
        """

    def dialog_event(event, *args):
        """Something happened in the dialog that the call's state table must decide on."""


def is_sdp(message: Request | Response) -> bool:
    """True when the message carries a body of type application/sdp."""
    ctype = (message.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return bool(message.body) and ctype == "application/sdp"


def dialog_destination(dialog: Dialog, peer: tuple[str, int]) -> tuple[str, int]:
    """Where an in-dialog request goes: the next hop when it is an IP literal, else ``peer``,
    the trunk target the call reached the far end through (we never resolve names from
    messages, DESIGN.md rule 13)."""
    try:
        host, port = dialog.next_hop().host_port()
    except SipParseError:
        return peer
    return (host, port) if is_ip_literal(host) else peer


def _parse_session_expires(value: str | None) -> tuple[int, str | None] | None:
    """``delta[;refresher=uac|uas]`` (RFC 4028 4) -> (delta, refresher) or None."""
    if not value:
        return None
    parts = [p.strip() for p in value.split(";")]
    # is_digits, not str.isdigit: int("²") raises; a delta of more than 10 digits is junk too.
    if not is_digits(parts[0]) or len(parts[0].lstrip("0")) > 10 or int(parts[0]) <= 0:
        return None
    refresher = None
    for p in parts[1:]:
        name, _, v = p.partition("=")
        if name.strip().lower() == "refresher" and v.strip().lower() in ("uac", "uas"):
            refresher = v.strip().lower()
    return int(parts[0]), refresher


class DialogUsage(NamedTimersMixin):
    """The confirmed dialog of one call; see the module docstring."""

    def __init__(self, ctx: CallContext, dialog: Dialog, owner, peer: tuple[str, int],
                 callback_id: str | None = None) -> None:  # fmt: skip
        self.ctx = ctx
        self.clock = ctx.clock
        self.dialog = dialog
        self.owner = owner
        self.peer = peer
        self.callback_id = callback_id
        self.active = False
        self._timers = {}
        self._reinvite_pending = False
        self._reinvite_acks: dict[int, Request] = {}
        self._ok_to_ack: Response | None = None
        self._ok_interval = 0.0
        self._session: tuple[int, bool] | None = None  # (interval, we refresh)

    @property
    def call_id(self) -> str:
        """The dialog's Call-ID (for log lines)."""
        return self.dialog.call_id

    @property
    def destination(self) -> tuple[str, int]:
        """Where this dialog's requests go (see :func:`dialog_destination`)."""
        return dialog_destination(self.dialog, self.peer)

    # -- lifecycle, driven by the call

    def start(self, response: Response) -> None:
        """The INVITE was answered: start the session timer and the keepalive."""
        self.active = True
        self._apply_session_timer(response.headers.get("Session-Expires"), we_sent=True)
        self._schedule_keepalive()

    def stop(self) -> None:
        """The call left ``confirmed``: stop every dialog timer; requests can still be sent."""
        self.active = False
        self._cancel_all_timers()

    def release(self) -> None:
        """The call has ended: stop pointing back at it, so no cycle outlives the call.

        Requests may still be answered (a late 481/408): the call has nothing left to decide.
        """
        self.owner = _RELEASED

    # -- outgoing

    def send_quietly(self, request: Request) -> None:
        """Send without a transaction (an ACK for a 2xx, RFC 3261 13.2.2.4); log a failure."""
        try:
            self.ctx.transport.send_request(request, self.destination)
        except TransportError as exc:
            log.warn(
                "{method} not sent call_id={call_id} callback_id={callback_id}: {error}",
                method=request.method,
                call_id=self.call_id,
                callback_id=self.callback_id,
                error=exc,
            )

    def request(self, method: str, body: bytes = b"", content_type: str | None = None, extra=()) -> Deferred:
        """Send an in-dialog request; the Deferred fires with its final Response.

        A timeout is reported as a 408 and a transport error as a 503 (RFC 3261 8.1.3.1).
        A 401/407 is answered once per realm (RFC 3261 22.2).
        """
        pending = _Pending(self, method, body, content_type, list(extra))
        pending.send()
        return pending.deferred

    def build(self, method: str, body: bytes, content_type: str | None, extra) -> Request:
        """An in-dialog request from the dialog state, with our User-Agent and ``extra``."""
        local = self.ctx.local
        req = self.dialog.new_request(
            method, local.via(new_branch()), contact=local.contact(), body=body,
            content_type=content_type,
        )  # fmt: skip
        req.headers.add("User-Agent", self.ctx.user_agent)
        for name, value in extra:
            req.headers.add(name, value)
        return req

    def _checked(self, method: str, response: Response) -> Response:
        """A 2xx, or a CallError; a 481 or 408 also tells the call (RFC 3261 12.2.1.2)."""
        if 200 <= response.status < 300:
            return response
        if response.status in (481, 408):
            self.owner.dialog_event(CallEvent.DIALOG_GONE, f"{response.status} to {method}")
        raise CallError(response.status, response.reason)

    def reinvite(self, sdp: bytes) -> Deferred:
        """Send a re-INVITE with ``sdp`` (RFC 3261 14.1); fires with the 2xx."""
        if self._reinvite_pending:
            return fail(CallError(491, "Request Pending"))  # RFC 3261 14.1: one at a time
        self._reinvite_pending = True
        d = self.request("INVITE", sdp, "application/sdp", self._session_refresh_headers())

        def done(result):
            self._reinvite_pending = False
            return result

        d.addBoth(done)
        return d.addCallback(self._offer_answered, "INVITE")

    def update(self, sdp: bytes) -> Deferred:
        """Send an UPDATE with ``sdp`` (RFC 3311); fires with the 2xx."""
        d = self.request("UPDATE", sdp, "application/sdp", self._session_refresh_headers())
        return d.addCallback(self._offer_answered, "UPDATE")

    def _offer_answered(self, response: Response, method: str) -> Response:
        response = self._checked(method, response)
        self._apply_session_timer(response.headers.get("Session-Expires"), we_sent=True)
        return response

    def info(self, content_type: str, body: bytes) -> Deferred:
        """Send INFO (RFC 6086), e.g. DTMF relay; fires with the 2xx."""
        return self.request("INFO", body, content_type).addCallback(lambda r: self._checked("INFO", r))

    def reack(self, response: Response) -> None:
        """Re-send the ACK for a retransmitted 2xx to one of our re-INVITEs (13.2.2.4)."""
        number = int((response.headers.get("CSeq") or "0").split()[0])
        ack = self._reinvite_acks.get(number)
        if ack is not None:
            self.send_quietly(ack)

    def ack_reinvite(self, request: Request, response: Response) -> None:
        """ACK a 2xx to our re-INVITE ``request``; the 2xx refreshes the target (12.2.1.2)."""
        number = int((request.headers.get("CSeq") or "0").split()[0])
        if number not in self._reinvite_acks:
            self.dialog.refresh_target(response)
            self._reinvite_acks = {number: self.dialog.ack_for_2xx(number, self.ctx.local.via(new_branch()))}
        self.send_quietly(self._reinvite_acks[number])

    # -- keepalive

    def _schedule_keepalive(self) -> None:
        interval = self.ctx.keepalive_interval
        if interval and self.active:
            self._start_timer("keepalive", interval, self._keepalive)

    def _keepalive(self) -> None:
        """In-dialog OPTIONS: a 481 or 408 means the far end forgot the call (12.2.1.2)."""
        if not self.active:
            return
        d = self.request("OPTIONS")
        d.addCallback(lambda r: self._checked("OPTIONS", r))
        d.addCallbacks(lambda _: self._schedule_keepalive(), self._keepalive_failed)
        d.addErrback(
            lambda f: log.failure("keepalive call_id={call_id} callback_id={callback_id}", f,
                                  call_id=self.call_id, callback_id=self.callback_id)
        )  # fmt: skip

    def _keepalive_failed(self, failure) -> None:
        failure.trap(CallError)
        self._schedule_keepalive()  # other errors (405, 501...) still prove it is alive

    # -- session timers (RFC 4028)

    def _session_refresh_headers(self) -> list[tuple[str, str]]:
        if self._session is None:
            return []
        delta, _ = self._session
        return [("Supported", "timer"), ("Session-Expires", f"{delta};refresher=uac")]

    def _apply_session_timer(self, value: str | None, we_sent: bool) -> None:
        """Arm the refresh or expiry timer from a Session-Expires (RFC 4028 7.2, 9, 10).

        ``we_sent`` is True when the header came in a response to our request (so ``uac``
        means us) and False when it came in the far end's request (``uac`` means them).
        """
        parsed = _parse_session_expires(value)
        if parsed is None or not self.active:
            return  # once the call has left confirmed, no timer of ours has anything to do
        delta, refresher = parsed
        if refresher is None:
            refresher = "uac"  # RFC 4028 9: the UAS says; absent, the request's sender refreshes
        we_refresh = (refresher == "uac") == we_sent
        self._session = (delta, we_refresh)
        self._cancel_timer("refresh")
        self._cancel_timer("expire")
        if we_refresh:
            # RFC 4028 10: refresh at half the interval.
            self._start_timer("refresh", delta / 2, self.owner.dialog_event, CallEvent.SESSION_REFRESH)
        else:
            # RFC 4028 10: BYE at expiry minus min(32, delta/3) without a refresh.
            self._start_timer("expire", delta - min(32, delta / 3), self.owner.dialog_event,
                              CallEvent.SESSION_EXPIRED)  # fmt: skip

    def refresh_failed(self, failure) -> None:
        """Our refresh was refused or lost: expire unless the far end refreshes (RFC 4028 10)."""
        failure.trap(CallError, CallStateError)
        if self.active and self._session is not None:
            delta, _ = self._session
            self._start_timer("expire", delta / 2 - min(32, delta / 3), self.owner.dialog_event,
                              CallEvent.SESSION_EXPIRED)  # fmt: skip

    # -- incoming (the call routes them here while confirmed or terminating)

    def request_received(self, request: Request, txn) -> None:
        """A request in our dialog from the far end (RFC 3261 12.2.2)."""
        try:
            self.dialog.check_request(request)
        except DialogError as exc:
            txn.respond(make_response(request, exc.status, exc.reason))
            return
        handler = getattr(self, "_incoming_" + request.method.lower(), None)
        if handler is None:
            resp = make_response(request, 405, None)
            resp.headers.add("Allow", self.ctx.allow)
            txn.respond(resp)
            return
        handler(request, txn)

    def _ok(self, request: Request, body: bytes = b"") -> Response:
        return self.dialog.ok_response(request, contact=self.ctx.local.contact(), allow=self.ctx.allow,
                                       body=body)  # fmt: skip

    def _incoming_bye(self, request: Request, txn) -> None:
        # RFC 3261 15.1.2: answer 200 and end the session.
        txn.respond(make_response(request, 200, "OK"))
        self.owner.dialog_event(CallEvent.REMOTE_BYE)

    def _incoming_options(self, request: Request, txn) -> None:
        txn.respond(self._ok(request))

    def _incoming_cancel(self, request: Request, txn) -> None:
        # RFC 3261 9.2: our re-INVITE answers are immediate, so the CANCEL has no effect.
        txn.respond(make_response(request, 200, "OK"))

    def _incoming_info(self, request: Request, txn) -> None:
        # RFC 6086 4.2: INFO in the dialog; the body goes to the application.
        self.owner.dialog_event(CallEvent.INFO, request.headers.get("Content-Type") or "", request.body)
        txn.respond(make_response(request, 200, "OK"))

    def _incoming_offer(self, request: Request) -> Response:
        """Common part of re-INVITE and UPDATE: new SDP, target refresh, session timer.

        An offer gets a real answer (RFC 3264 8), not our first offer again; an offer with
        nothing we accept gets a 488 and changes nothing (RFC 3261 14.2, RFC 3311 5.2).
        """
        sdp = b""
        if is_sdp(request):
            try:
                sdp = self.owner.answer_offer(request.body)
            except SdpError as exc:
                log.info("unacceptable offer in {method} call_id={call_id} callback_id={callback_id}: "
                         "{error}", method=request.method, call_id=self.call_id,
                         callback_id=self.callback_id, error=exc)  # fmt: skip
                resp = make_response(request, 488, "Not Acceptable Here")
                resp.headers.add("Warning", '304 cbserver "Media type not available"')  # RFC 3261 20.43
                return resp
        elif request.method == "INVITE":
            # RFC 3264 5 / RFC 3261 14.2: an offer-less re-INVITE gets our offer in the 2xx;
            # our current SDP unchanged (same version, RFC 3264 8).
            sdp = self.owner.local_sdp
        self.dialog.refresh_target(request)
        if is_sdp(request):
            self.owner.dialog_event(CallEvent.OFFER, request.body)
        resp = self._ok(request, sdp)
        parsed = _parse_session_expires(request.headers.get("Session-Expires"))
        if parsed is not None:
            delta, refresher = parsed
            refresher = refresher or "uac"
            # RFC 4028 9: echo the interval and name the refresher in the 2xx.
            resp.headers.add("Session-Expires", f"{delta};refresher={refresher}")
            if "timer" in request.headers.get_all("Supported"):
                resp.headers.add("Require", "timer")
            self._apply_session_timer(f"{delta};refresher={refresher}", we_sent=False)
        return resp

    def _incoming_invite(self, request: Request, txn) -> None:
        # RFC 3261 14.2: a re-INVITE while ours is pending (or while our BYE is out) gets 491.
        if self._reinvite_pending or not self.active:
            txn.respond(make_response(request, 491, "Request Pending"))
            return
        resp = self._incoming_offer(request)
        txn.respond(resp)
        if resp.status >= 300:
            return  # the transaction retransmits a non-2xx and absorbs its ACK (17.2.1)
        self._ok_to_ack = resp
        self._ok_interval = self.ctx.timers.t1
        # RFC 3261 13.3.1.4: the UAS core retransmits the 2xx until the ACK arrives.
        self._start_timer("ok-retx", self._ok_interval, self._retransmit_ok)
        self._start_timer("ok-giveup", self.ctx.timers.H, self._ok_not_acked)

    def _incoming_update(self, request: Request, txn) -> None:
        # RFC 3311 5.2: UPDATE carries an offer (or just refreshes the session timer).
        txn.respond(self._incoming_offer(request))

    def _retransmit_ok(self) -> None:
        if self._ok_to_ack is None:
            return
        try:
            self.ctx.transport.send_response(self._ok_to_ack)
        except TransportError as exc:
            log.warn(
                "2xx retransmit failed call_id={call_id} callback_id={callback_id}: {error}",
                call_id=self.call_id,
                callback_id=self.callback_id,
                error=exc,
            )
        self._ok_interval = min(2 * self._ok_interval, self.ctx.timers.t2)
        self._start_timer("ok-retx", self._ok_interval, self._retransmit_ok)

    def _ok_not_acked(self) -> None:
        # RFC 3261 13.3.1.4: no ACK within 64*T1: the call ends the session with BYE.
        self._ok_to_ack = None
        self._cancel_timer("ok-retx")
        self.owner.dialog_event(CallEvent.OK_NOT_ACKED)

    def ack_received(self, request: Request) -> None:
        """ACK for our 2xx to a re-INVITE: stop retransmitting (RFC 3261 13.3.1.4)."""
        if self._ok_to_ack is None:
            return
        self._ok_to_ack = None
        self._cancel_timer("ok-retx")
        self._cancel_timer("ok-giveup")
        if is_sdp(request):
            # An offer-less re-INVITE: the ACK carries the far end's answer (RFC 3264 5).
            self.owner.dialog_event(CallEvent.OFFER, request.body)


@implementer(IClientTransactionUser)
class _Pending:
    """One outgoing in-dialog request, with its digest retry (RFC 3261 22.2)."""

    def __init__(self, usage: DialogUsage, method, body, content_type, extra) -> None:
        self.usage = usage
        self.method = method
        self.body = body
        self.content_type = content_type
        self.extra = extra
        self.auth = AuthAttempts()
        self.deferred: Deferred = Deferred()
        self.request: Request | None = None
        self.txn = None

    def send(self) -> None:
        """Build and send (again) through a new client transaction."""
        usage = self.usage
        self.request = usage.build(self.method, self.body, self.content_type, self.extra)
        layer = usage.ctx.layer
        send = layer.send_invite if self.method == "INVITE" else layer.send_request
        self.txn = send(self.request, usage.destination, self)

    def _done(self, response: Response) -> None:
        if not self.deferred.called:
            self.deferred.callback(response)

    def response_received(self, txn, response: Response) -> None:
        """Finals end it (after a digest retry if challenged); 2xx to INVITE are ACKed."""
        if response.status < 200:
            return
        if self.method == "INVITE" and response.status < 300:
            self.usage.ack_reinvite(txn.request, response)
        if txn is not self.txn:
            return
        if response.status in (401, 407) and self._authenticate(response):
            return
        self._done(response)

    def _authenticate(self, response: Response) -> bool:
        proxy = response.status == 407
        name = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        try:
            challenge = pick_challenge(response.headers.get_all(name), proxy=proxy)
        except AuthError:
            return False
        if not self.auth.should_retry(challenge):
            return False
        # RFC 7616 3.4: the digest-uri is the Request-URI of the request being answered.
        header = self.usage.ctx.digest.authorization(challenge, self.method, self.request.uri, self.body)
        self.extra = [(n, v) for n, v in self.extra if n not in ("Authorization", "Proxy-Authorization")]
        self.extra.append(header)
        self.send()
        return True

    def transaction_timed_out(self, txn) -> None:
        """Timer B/F: reported as 408 (RFC 3261 8.1.3.1)."""
        if txn is self.txn:
            self._done(Response(408, "Request Timeout"))

    def transport_failed(self, txn, error) -> None:
        """Reported as 503 (RFC 3261 8.1.3.1)."""
        if txn is self.txn:
            self._done(Response(503, "Service Unavailable"))


class _Released:
    """The owner of a usage whose call has ended: every dialog event is too late."""

    local_sdp = b""

    def dialog_event(self, event, *args):
        """Nothing to decide any more."""
        return None


_RELEASED = _Released()
