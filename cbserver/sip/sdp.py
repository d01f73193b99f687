"""SDP (RFC 4566) parse/serialise and RFC 3264 offer/answer for G.711 and telephone-event.

Pure: no Twisted. The server speaks one audio stream of PCMU or PCMA (static payload types 0
and 8, RFC 3551 6) plus RFC 4733 telephone-event on a dynamic payload type.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

__all__ = [
    "SdpError", "Connection", "Media", "SessionDescription", "MediaChoice", "parse_sdp",
    "make_offer", "make_answer", "negotiate", "STATIC_CODECS", "DIRECTIONS", "answer_direction",
    "answer_reoffer", "peer_receives", "streams_removed",
]  # fmt: skip


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _small(text: str, digits: int = 10) -> bool:
    """ASCII digits worth at most ``digits`` significant ones: safe for int(), which refuses
    more than 4300 digits with a bare ValueError (found by fuzzing)."""
    return _digits(text) and len(text.lstrip("0")) <= digits


class SdpError(ValueError):
    """An SDP body that cannot be parsed, or offers nothing this server can accept."""


#: RFC 3551 6: static payload types of the codecs we speak.
STATIC_CODECS = {"PCMU": 0, "PCMA": 8}
#: RFC 4566 6 / RFC 3264 5.1 direction attributes.
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
# RFC 3264 6.1: what the answerer says for each direction it was offered.
_ANSWER_DIRECTION = {
    "sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
    "inactive": "inactive",
}  # fmt: skip
# (we send, we receive) -> the direction attribute saying so (RFC 3264 5.1)
_DIRECTION_OF = {
    (True, True): "sendrecv", (True, False): "sendonly", (False, True): "recvonly",
    (False, False): "inactive",
}  # fmt: skip
# RFC 4566 5: the order of session-level lines; unmodelled ones are kept and put back here.
_SESSION_ORDER = "iuepcbtrzka"
_MEDIA_ORDER = "icbka"


@dataclass
class Connection:
    """A ``c=`` line: network type, address type and address (with any /ttl kept)."""

    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpError(f"bad c= line {value!r}")
    return Connection(*parts)


@dataclass
class Media:
    """One ``m=`` section with its own lines."""

    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name[:value]`` (``""`` for a flag), or None."""
        for key, value in self.attributes:
            if key == name:
                return "" if value is None else value
        return None

    def rtpmap(self) -> dict[str, tuple[str, int, str | None]]:
        """Payload type -> (encoding name, clock rate, channels) from ``a=rtpmap``."""
        out = {}
        for key, value in self.attributes:
            if key == "rtpmap" and value:
                pt, _, enc = value.partition(" ")
                name, _, rest = enc.strip().partition("/")
                rate, _, channels = rest.partition("/")
                if _small(rate):
                    out[pt] = (name, int(rate), channels or None)
        return out

    def direction(self, default: str = "sendrecv") -> str:
        """The direction attribute of this stream, or ``default`` (the session's)."""
        for key, _ in self.attributes:
            if key in DIRECTIONS:
                return key
        return default

    def lines(self) -> list[str]:
        """The section as ``x=value`` lines."""
        ports = f"{self.port}/{self.port_count}" if self.port_count else str(self.port)
        out = [f"m={self.media} {ports} {self.proto} {' '.join(self.formats)}".rstrip()]
        for kind in _MEDIA_ORDER:
            if kind == "c" and self.connection:
                out.append(f"c={self.connection}")
            elif kind == "a":
                out.extend(f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes)
            out.extend(f"{t}={v}" for t, v in self.other if t == kind)
        return out


@dataclass
class SessionDescription:
    """A whole SDP body: origin, session name, timing, session-level lines, media sections."""

    origin: str
    name: str = "-"
    connection: Connection | None = None
    times: list[str] = field(default_factory=lambda: ["0 0"])
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)
    other: list[tuple[str, str]] = field(default_factory=list)

    def direction(self) -> str:
        """The session-level direction attribute (RFC 4566 6), sendrecv when absent."""
        for key, _ in self.attributes:
            if key in DIRECTIONS:
                return key
        return "sendrecv"

    def serialize(self) -> bytes:
        """The body as bytes with CRLF line ends."""
        out = ["v=0", f"o={self.origin}", f"s={self.name}"]
        for kind in _SESSION_ORDER:
            if kind == "c" and self.connection:
                out.append(f"c={self.connection}")
            elif kind == "t":
                out.extend(f"t={t}" for t in self.times)
            elif kind == "a":
                out.extend(f"a={k}" if v is None else f"a={k}:{v}" for k, v in self.attributes)
            out.extend(f"{t}={v}" for t, v in self.other if t == kind)
        for m in self.media:
            out.extend(m.lines())
        return ("\r\n".join(out) + "\r\n").encode("utf-8")


def _parse_media(value: str) -> Media:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"bad m= line {value!r}")
    port_text, _, count = parts[1].partition("/")
    if not _small(port_text) or int(port_text) > 65535 or (count and not _small(count)):
        raise SdpError(f"bad port in m= line {value!r}")
    return Media(parts[0], int(port_text), parts[2], parts[3:], int(count) if count else None)


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body (RFC 4566 5); raise SdpError when it is not SDP."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln]
    if not lines or lines[0].strip() != "v=0":
        raise SdpError("SDP must start with v=0")
    sd = SessionDescription(origin="", times=[])
    current: Media | None = None
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise SdpError(f"bad SDP line {line[:60]!r}")
        kind, value = line[0], line[2:].strip()
        if kind == "m":
            current = _parse_media(value)
            sd.media.append(current)
        elif kind == "a":
            name, colon, rest = value.partition(":")
            (current or sd).attributes.append((name, rest if colon else None))
        elif kind == "c":
            (current or sd).connection = _parse_connection(value)
        elif current is not None:
            current.other.append((kind, value))
        elif kind == "o":
            if len(value.split()) != 6:
                raise SdpError(f"bad o= line {value!r}")
            sd.origin = value
        elif kind == "s":
            sd.name = value
        elif kind == "t":
            sd.times.append(value)
        else:
            sd.other.append((kind, value))
    if not sd.origin:
        raise SdpError("SDP without o= line")
    return sd


@dataclass(frozen=True)
class MediaChoice:
    """The audio stream agreed on: where to send RTP and in which format."""

    address: str
    port: int
    codec: str
    payload_type: int
    telephone_event: int | None
    direction: str
    ptime: int = 20


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _choose(media: Media, codecs) -> tuple[str, int, int | None]:
    """First format of ``media`` (in its order) that is one of ``codecs``; + telephone-event."""
    rtpmap = media.rtpmap()
    wanted = {c.upper() for c in codecs}
    chosen = None
    event = None
    for fmt in media.formats:
        name, rate, _ = rtpmap.get(fmt, (None, 8000, None))
        if name is None:  # RFC 3551 6: static payload types need no rtpmap
            name = next((c for c, pt in STATIC_CODECS.items() if str(pt) == fmt), None)
        if name is None or rate != 8000 or not _digits(fmt):
            continue
        if name.upper() == "TELEPHONE-EVENT":
            event = event if event is not None else int(fmt)
        elif chosen is None and name.upper() in wanted:
            chosen = (name.upper(), int(fmt))
    if chosen is None:
        raise SdpError(f"no acceptable codec among {media.formats}")
    return chosen[0], chosen[1], event


def _audio_stream(sd: SessionDescription, codecs):
    """(index, media, codec, pt, event) of the first usable audio stream, or raise SdpError."""
    for i, m in enumerate(sd.media):
        # RFC 3264 6: port 0 marks a rejected stream; we only speak plain RTP/AVP(F).
        if m.media != "audio" or m.port == 0 or m.proto.upper() not in ("RTP/AVP", "RTP/AVPF"):
            continue
        try:
            codec, pt, event = _choose(m, codecs)
        except SdpError:
            continue
        return i, m, codec, pt, event
    raise SdpError("no acceptable audio stream")


def streams_removed(sdp: SessionDescription | bytes) -> bool:
    """Whether an SDP has no stream left: every ``m=`` line has port 0 (RFC 3264 5.1, 8.2: a
    stream offered with port 0 is removed or rejected; its answer must say port 0 too).

    Raises :class:`SdpError` for a body that does not parse."""
    sd = sdp if isinstance(sdp, SessionDescription) else parse_sdp(sdp)
    return all(m.port == 0 for m in sd.media)


def negotiate(sdp: SessionDescription | bytes, codecs=("PCMU", "PCMA")) -> MediaChoice:
    """The audio stream to use from the far end's SDP (offer or answer, raw or already
    parsed by ``parse_sdp``); SdpError if none."""
    sd = sdp if isinstance(sdp, SessionDescription) else parse_sdp(sdp)
    _, m, codec, pt, event = _audio_stream(sd, codecs)
    conn = m.connection or sd.connection
    if conn is None:
        raise SdpError("no c= line for the audio stream")  # RFC 4566 5.7
    ptime = m.attribute("ptime")
    return MediaChoice(
        address=conn.address.split("/")[0],
        port=m.port,
        codec=codec,
        payload_type=pt,
        telephone_event=event,
        direction=m.direction(sd.direction()),
        ptime=int(ptime) if ptime and _small(ptime) else 20,
    )


def _origin(username, session_id, version, address) -> str:
    sid = session_id if session_id is not None else secrets.randbelow(2**62)
    ver = version if version is not None else sid
    return f"{username} {sid} {ver} IN {_addrtype(address)} {address}"


def make_offer(address: str, port: int, codecs=("PCMU", "PCMA"), telephone_event=101,
               session_id: int | None = None, version: int | None = None,
               direction: str = "sendrecv", ptime: int = 20,
               username: str = "cbserver") -> bytes:
    """An RFC 3264 5 offer of one audio stream with ``codecs`` in preference order."""
    formats, attrs = [], []
    for codec in codecs:
        pt = STATIC_CODECS[codec.upper()]
        formats.append(str(pt))
        attrs.append(("rtpmap", f"{pt} {codec.upper()}/8000"))
    if telephone_event is not None:
        formats.append(str(telephone_event))
        attrs.append(("rtpmap", f"{telephone_event} telephone-event/8000"))
        attrs.append(("fmtp", f"{telephone_event} 0-16"))  # RFC 4733 2.4.1
    attrs.append(("ptime", str(ptime)))
    attrs.append((direction, None))
    sd = SessionDescription(
        origin=_origin(username, session_id, version, address),
        connection=Connection("IN", _addrtype(address), address),
        media=[Media("audio", port, "RTP/AVP", formats, attributes=attrs)],
    )
    return sd.serialize()


def make_answer(offer: bytes, address: str, port: int, codecs=("PCMU", "PCMA"),
                telephone_event: bool = True, session_id: int | None = None,
                version: int | None = None, direction: str | None = None,
                username: str = "cbserver") -> bytes:
    """An RFC 3264 6 answer: accept the first usable audio stream, reject every other one.

    The chosen codec is the first of the offer's formats that we speak (6.1: the offerer's
    preference wins). ``direction`` overrides the one derived from the offer's."""
    sd = parse_sdp(offer)
    if streams_removed(sd):
        # RFC 3264 6 and 8.2: a stream offered with port 0 is answered with port 0; when that
        # is every stream (the offerer removed our audio), the answer rejects them all.
        index, m, codec, pt, event = -1, None, None, None, None
    else:
        index, m, codec, pt, event = _audio_stream(sd, codecs)
    out_media = []
    for i, om in enumerate(sd.media):
        if i != index:
            # RFC 3264 6: a rejected stream keeps its place, port 0, its formats.
            out_media.append(Media(om.media, 0, om.proto, list(om.formats)))
            continue
        formats, attrs = [str(pt)], [("rtpmap", f"{pt} {codec}/8000")]
        if telephone_event and event is not None:
            formats.append(str(event))
            attrs.append(("rtpmap", f"{event} telephone-event/8000"))
            attrs.append(("fmtp", f"{event} 0-16"))
        ptime = om.attribute("ptime")
        if ptime:
            attrs.append(("ptime", ptime))
        attrs.append((direction or _ANSWER_DIRECTION[om.direction(sd.direction())], None))
        out_media.append(Media("audio", port, om.proto, formats, attributes=attrs))
    answer = SessionDescription(
        origin=_origin(username, session_id, version, address),
        connection=Connection("IN", _addrtype(address), address),
        times=list(sd.times) or ["0 0"],
        media=out_media,
    )
    return answer.serialize()


def answer_direction(offered: str, local: str = "sendrecv") -> str:
    """The direction we answer to an ``offered`` one (RFC 3264 6.1), limited by ``local``.

    sendonly is answered recvonly, recvonly sendonly, inactive inactive, sendrecv sendrecv;
    ``local`` is what our side is willing to do, so we never promise to send or receive
    more than it allows (6.1: the answerer may narrow the offered direction, never widen it).
    """
    mapped = _ANSWER_DIRECTION.get(offered, "sendrecv")
    send = mapped in ("sendrecv", "sendonly") and local in ("sendrecv", "sendonly")
    receive = mapped in ("sendrecv", "recvonly") and local in ("sendrecv", "recvonly")
    return _DIRECTION_OF[(send, receive)]



def peer_receives(direction: str) -> bool:
    """Whether a party whose SDP says ``direction`` (its own point of view) receives RTP.

    RFC 3264 5.1: sendonly and inactive mean "do not send me media"; recvonly and sendrecv
    mean it listens."""
    return direction in ("sendrecv", "recvonly")


def _origin_fields(sd: SessionDescription) -> tuple[str, int, int]:
    """(username, session id, version) of an ``o=`` line (RFC 4566 5.2)."""
    user, sid, version = sd.origin.split()[:3]
    if not (_digits(sid) and _digits(version)):
        raise SdpError(f"o= line without numeric session id and version: {sd.origin!r}")
    return user, int(sid), int(version)


def _without_origin(body: bytes) -> bytes:
    return b"\r\n".join(ln for ln in body.split(b"\r\n") if not ln.startswith(b"o="))


def answer_reoffer(offer: bytes, capabilities: bytes, previous: bytes,
                   local_direction: str = "sendrecv") -> bytes:
    """Our answer to an offer that arrives in an established session (RFC 3264 8).

    ``capabilities`` is the SDP we offered (our address, port, codecs, telephone-event);
    ``previous`` the last SDP we sent in this session. The answer keeps our address and
    port, picks from the offer a codec we offered (6.1), maps the direction (6.1, limited by
    ``local_direction``), and keeps the ``o=`` line of ``previous`` with its version
    incremented by one only when something else changed (8: an unchanged SDP keeps it).
    Raises :class:`SdpError` when the offer has nothing we accept (RFC 3261 14.2: a 488).
    """
    caps = parse_sdp(capabilities)
    ours = next((m for m in caps.media if m.media == "audio" and m.port), None)
    conn = (ours.connection or caps.connection) if ours is not None else None
    if ours is None or conn is None:
        raise SdpError("our own SDP has no audio stream")
    names = ours.rtpmap()
    codecs, events = [], False
    for fmt in ours.formats:
        name = names.get(fmt, (None,))[0]
        if name is None:
            name = next((c for c, pt in STATIC_CODECS.items() if str(pt) == fmt), None)
        if name is None:
            continue
        if name.upper() == "TELEPHONE-EVENT":
            events = True
        elif name.upper() in STATIC_CODECS:
            codecs.append(name.upper())
    user, sid, version = _origin_fields(parse_sdp(previous))
    offered = parse_sdp(offer)
    if streams_removed(offered):
        direction = "inactive"  # unused: every stream is answered rejected (RFC 3264 8.2)
    else:
        _, m, _, _, _ = _audio_stream(offered, codecs)
        direction = answer_direction(m.direction(offered.direction()), local_direction)
    address = conn.address.split("/")[0]

    def build(ver: int) -> bytes:
        return make_answer(offer, address, ours.port, codecs, telephone_event=events, session_id=sid,
                           version=ver, direction=direction, username=user)  # fmt: skip

    answer = build(version)
    if _without_origin(answer) != _without_origin(previous):
        answer = build(version + 1)  # RFC 3264 8: a changed SDP increments the version by one
    return answer
