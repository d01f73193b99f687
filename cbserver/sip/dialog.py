"""UAC-side dialog state (RFC 3261 12): identifiers, route set, remote target, CSeq, secure flag.

A :class:`Dialog` is made from the INVITE we sent and the response that carried the remote
tag (12.1.2). Every in-dialog message a call sends is built here: requests (12.2.1.1: BYE,
re-INVITE, UPDATE, INFO, OPTIONS), the ACK for a 2xx (13.2.2.4), and the 2xx answering the
far end's in-dialog requests. It checks in-dialog requests from the far end (12.2.2).

Its state is exactly what :meth:`Dialog.to_dict` returns (plain JSON values), so a dialog can
be stored and rebuilt with :meth:`Dialog.from_dict` (crash recovery, DESIGN.md rule 15).
Pure: no Twisted, no I/O. The behaviour of a call's confirmed dialog (timers, retries) lives
in :mod:`cbserver.sip.call_dialog`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zope.interface import Attribute, Interface, implementer

from cbserver.sip.message import (
    Headers,
    Request,
    Response,
    SipParseError,
    Uri,
    make_response,
    parse_cseq,
    parse_name_addr,
    parse_uri,
)

__all__ = ["Dialog", "DialogError", "IDialog", "dialog_id_of_request"]


class DialogError(Exception):
    """An in-dialog request we must refuse; ``status`` is the response code (RFC 3261 12.2.2)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def dialog_id_of_request(request: Request) -> tuple[str, str, str] | None:
    """The dialog ID an incoming request names, from our side: (Call-ID, To tag, From tag).

    RFC 3261 12.2.2: the local tag is the request's To tag, the remote tag its From tag.
    None when the request has no To tag (it is outside any dialog).
    """
    try:
        to_tag = parse_name_addr(request.headers.get("To") or "").tag
        from_tag = parse_name_addr(request.headers.get("From") or "").tag
    except SipParseError:
        return None
    if not to_tag:
        return None
    return (request.headers.get("Call-ID") or "", to_tag, from_tag or "")


class IDialog(Interface):
    """The state of one dialog (RFC 3261 12) and the in-dialog messages built from it."""

    call_id = Attribute("Call-ID (str).")
    local_tag = Attribute("Our tag, the From tag of our requests (str).")
    remote_tag = Attribute("The far end's tag (str).")
    local_party = Attribute("Our From value, with its tag (str).")
    remote_party = Attribute("The far end's To value, with its tag (str).")
    remote_target = Attribute("Request-URI of in-dialog requests: the far end's Contact (str).")
    route_set = Attribute("Route set from Record-Route, in the order Route headers carry it (list).")
    local_seq = Attribute("CSeq number of our last request (int).")
    remote_seq = Attribute("CSeq number of the far end's last request, or None (int | None).")
    secure = Attribute("RFC 3261 12.1.2 secure flag: TLS and a SIPS Request-URI (bool).")
    state = Attribute("'early', 'confirmed' or 'terminated' (str).")
    id = Attribute("(Call-ID, local tag, remote tag).")

    def next_hop():
        """The URI an in-dialog request goes to first: the top route, else the remote target."""

    def new_request(method, via, *, contact=None, cseq=None, body=b"", content_type=None):
        """An in-dialog request (RFC 3261 12.2.1.1); the CSeq goes up unless ``cseq`` is given."""

    def ack_for_2xx(invite_cseq, via, body=b""):
        """The ACK for a 2xx to an INVITE (RFC 3261 13.2.2.4)."""

    def ok_response(request, *, contact, allow, body=b"", content_type="application/sdp"):
        """A 200 answering the far end's in-dialog request, naming our Contact and Allow."""

    def check_request(request):
        """Apply RFC 3261 12.2.2 to a request from the far end; raise DialogError if bad."""

    def refresh_target(message):
        """Take a new remote target from a Contact (RFC 3261 12.2.1.2, 12.2.2)."""

    def to_dict():
        """The state as plain JSON values; ``from_dict`` rebuilds an equal dialog."""


@implementer(IDialog)
@dataclass
class Dialog:
    """One dialog as seen by the UAC that sent the INVITE (RFC 3261 12.1.2)."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_party: str  # our From value, with its tag
    remote_party: str  # the far end's To value, with its tag
    remote_target: str  # Request-URI for in-dialog requests (the far end's Contact)
    route_set: list[str] = field(default_factory=list)
    local_seq: int = 1
    remote_seq: int | None = None
    secure: bool = False  # RFC 3261 12.1.2; we have no TLS transport, so always False today
    state: str = "early"  # early -> confirmed -> terminated (RFC 3261 12)

    @property
    def id(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag), RFC 3261 12."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_response(cls, invite: Request, response: Response, *, secure: bool = False) -> Dialog:
        """UAC dialog from a 1xx-with-tag or 2xx to our INVITE (RFC 3261 12.1.2).

        ``secure`` is True only when the INVITE went over TLS to a SIPS Request-URI (12.1.2).
        """
        to = response.headers.get("To") or ""
        remote_tag = parse_name_addr(to).tag or ""
        local_tag = parse_name_addr(invite.headers.get("From") or "").tag or ""
        # 12.1.2: route set is the Record-Route list in reverse order.
        routes = list(reversed(response.headers.get_all("Record-Route")))
        contact = response.headers.get("Contact")
        target = str(parse_name_addr(contact).uri) if contact else invite.uri
        number, _ = parse_cseq(invite.headers.get("CSeq") or "1 INVITE")
        return cls(
            call_id=invite.headers.get("Call-ID") or "",
            local_tag=local_tag,
            remote_tag=remote_tag,
            local_party=invite.headers.get("From") or "",
            remote_party=to,
            remote_target=target,
            route_set=routes,
            local_seq=number,
            secure=secure,
            state="confirmed" if 200 <= response.status < 300 else "early",
        )

    def to_dict(self) -> dict[str, Any]:
        """The dialog's whole state as plain JSON values (str, int, bool, None, list of str)."""
        return {
            "call_id": self.call_id,
            "local_tag": self.local_tag,
            "remote_tag": self.remote_tag,
            "local_party": self.local_party,
            "remote_party": self.remote_party,
            "remote_target": self.remote_target,
            "route_set": list(self.route_set),
            "local_seq": self.local_seq,
            "remote_seq": self.remote_seq,
            "secure": self.secure,
            "state": self.state,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Dialog:
        """Rebuild a dialog from :meth:`to_dict`'s output (e.g. after a JSON round trip)."""
        remote_seq = data["remote_seq"]
        return cls(
            call_id=str(data["call_id"]),
            local_tag=str(data["local_tag"]),
            remote_tag=str(data["remote_tag"]),
            local_party=str(data["local_party"]),
            remote_party=str(data["remote_party"]),
            remote_target=str(data["remote_target"]),
            route_set=[str(r) for r in data["route_set"]],
            local_seq=int(data["local_seq"]),
            remote_seq=None if remote_seq is None else int(remote_seq),
            secure=bool(data["secure"]),
            state=str(data["state"]),
        )

    def confirm(self, response: Response) -> None:
        """A 2xx arrived: the dialog is confirmed; 12.1.2 recomputes the route set."""
        self.state = "confirmed"
        self.route_set = list(reversed(response.headers.get_all("Record-Route")))
        self.refresh_target(response)

    def refresh_target(self, message: Request | Response) -> None:
        """Target refresh from a Contact (RFC 3261 12.2.1.2, 12.2.2)."""
        contact = message.headers.get("Contact")
        if contact:
            try:
                self.remote_target = str(parse_name_addr(contact).uri)
            except SipParseError:
                return  # keep the old target rather than adopt a broken one

    def next_hop(self) -> Uri:
        """Where an in-dialog request goes first: the top route, else the remote target."""
        if self.route_set:
            return parse_name_addr(self.route_set[0]).uri
        return parse_uri(self.remote_target)

    def _route_headers(self) -> tuple[str, list[str]]:
        """Request-URI and Route values per RFC 3261 12.2.1.1 (loose and strict routing)."""
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0]).uri
        if "lr" in first.params:
            return self.remote_target, list(self.route_set)
        # Strict router: it becomes the Request-URI, the remote target goes last.
        first.headers = {}
        return str(first), self.route_set[1:] + [f"<{self.remote_target}>"]

    def new_request(
        self,
        method: str,
        via: str,
        *,
        contact: str | None = None,
        cseq: int | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """Build an in-dialog request (RFC 3261 12.2.1.1).

        The CSeq is incremented unless ``cseq`` is given (ACK and CANCEL reuse the
        INVITE's, 13.2.2.4 and 9.1).
        """
        if cseq is None:
            self.local_seq += 1
            cseq = self.local_seq
        uri, routes = self._route_headers()
        h = Headers()
        h.add("Via", via)
        for route in routes:
            h.add("Route", route)
        h.add("Max-Forwards", "70")
        h.add("From", self.local_party)
        h.add("To", self.remote_party)
        h.add("Call-ID", self.call_id)
        h.add("CSeq", f"{cseq} {method}")
        if contact and method in ("INVITE", "UPDATE"):
            h.add("Contact", contact)  # 12.2.1.1 / RFC 3311: target refresh requests
        if content_type and body:
            h.add("Content-Type", content_type)
        h.add("Content-Length", str(len(body)))
        return Request(method=method, uri=uri, headers=h, body=body)

    def ack_for_2xx(self, invite_cseq: int, via: str, body: bytes = b"") -> Request:
        """The ACK for a 2xx to an INVITE (RFC 3261 13.2.2.4): own branch, INVITE's CSeq."""
        return self.new_request(
            "ACK", via, cseq=invite_cseq, body=body,
            content_type="application/sdp" if body else None,
        )  # fmt: skip

    def ok_response(
        self, request: Request, *, contact: str, allow: str, body: bytes = b"",
        content_type: str = "application/sdp",
    ) -> Response:  # fmt: skip
        """A 200 to the far end's in-dialog request: our Contact (RFC 3261 12.2.2 target
        refresh, 13.3.1.4) and Allow, and ``body`` (our SDP when answering an offer)."""
        resp = make_response(request, 200, "OK")
        resp.headers.add("Contact", contact)
        resp.headers.add("Allow", allow)
        if body:
            resp.headers.add("Content-Type", content_type)
            resp.body = body
        return resp

    def check_request(self, request: Request) -> None:
        """Apply RFC 3261 12.2.2 to a request from the far end; raise DialogError if bad."""
        number, method = parse_cseq(request.headers.get("CSeq") or "")
        if method in ("ACK", "CANCEL"):
            return  # they reuse the CSeq of the request they refer to
        if self.remote_seq is not None and number <= self.remote_seq:
            # 12.2.2: lower CSeq is out of order -> 500. An equal one is a retransmission
            # the transaction layer absorbs, or a merged request.
            raise DialogError(500, "CSeq out of order")
        self.remote_seq = number
