"""UAC-side dialog state (RFC 3261 12): identifiers, route set, remote target and CSeq.

A :class:`Dialog` is made from the INVITE we sent and the response that carried the remote
tag (12.1.2). It builds in-dialog requests (12.2.1.1), the ACK for a 2xx (13.2.2.4), and
checks in-dialog requests from the far end (12.2.2). Pure: no Twisted, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cbserver.sip.message import (
    Headers,
    Request,
    Response,
    SipParseError,
    Uri,
    parse_cseq,
    parse_name_addr,
    parse_uri,
)

__all__ = ["Dialog", "DialogError", "dialog_id_of_request"]


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
    state: str = "early"  # early -> confirmed -> terminated (RFC 3261 12)

    @property
    def id(self) -> tuple[str, str, str]:
        """(Call-ID, local tag, remote tag), RFC 3261 12."""
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_response(cls, invite: Request, response: Response) -> Dialog:
        """UAC dialog from a 1xx-with-tag or 2xx to our INVITE (RFC 3261 12.1.2)."""
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
            state="confirmed" if 200 <= response.status < 300 else "early",
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
