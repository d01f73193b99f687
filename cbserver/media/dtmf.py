"""DTMF in: RFC 4733 telephone-event packets and SIP INFO bodies, as digits (pure).

RFC 4733 2.5.2: one key press is a run of packets sharing one RTP timestamp (the event's
start); the first has the marker bit, the last three carry the E bit. We report a digit on the
first packet we see of a new (timestamp, event), which gives the quickest barge-in, tolerates
lost start packets (any packet of the event reports it), and de-duplicates the repeated end
packets by their timestamp. A start packet (marker) of a (timestamp, event) that already ended
counts as a new press: replayed captures (sipp's ``play_pcap_audio``) reuse one timestamp.
A long event split into segments (RFC 4733 2.5.1.3) continues
with a later timestamp but no marker and is not reported twice.
"""

import struct
from dataclasses import dataclass

EVENT_CHARS = "0123456789*#ABCD"  # RFC 4733 3.2: events 0-15
_PAYLOAD = struct.Struct("!BBH")
_RECENT = 8  # timestamps remembered for de-duplication


class DtmfError(ValueError):
    """A malformed telephone-event payload or INFO body."""


#: The name the other parsers' errors follow (``RtpError``, ``RtcpError``): RFC 4733 events.
DtmfEventError = DtmfError


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """The four fields of an RFC 4733 2.3 payload."""

    event: int
    end: bool
    volume: int
    duration: int

    @property
    def digit(self) -> str | None:
        """The DTMF character, or None for non-DTMF events (tones, flash)."""
        return EVENT_CHARS[self.event] if self.event < len(EVENT_CHARS) else None


def parse_event(payload: bytes) -> TelephoneEvent:
    """Parse the first 4-byte event of a telephone-event payload (RFC 4733 2.3)."""
    if len(payload) < 4:
        raise DtmfError("telephone-event payload shorter than 4 bytes")
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def pack_event(event: int, end: bool, volume: int, duration: int) -> bytes:
    """A 4-byte telephone-event payload (used by tests and the DTMF sender)."""
    return _PAYLOAD.pack(event, (0x80 if end else 0) | (volume & 0x3F), duration & 0xFFFF)


class EventReceiver:
    """Turns a stream of telephone-event packets into digits, each exactly once."""

    def __init__(self):
        # (timestamp, event) -> end seen; the most recent events, oldest first
        self._recent: dict[tuple[int, int], bool] = {}
        self._last: tuple[int, int, int, bool] | None = None  # (ts, event, duration, end)
        self.malformed = 0

    def packet(self, timestamp: int, marker: bool, payload: bytes) -> str | None:
        """Feed one packet; return the digit if it starts a new key press, else None."""
        try:
            ev = parse_event(payload)
        except DtmfError:
            self.malformed += 1
            return None
        key = (timestamp, ev.event)
        ended = self._recent.get(key)
        if ended is not None and not (ended and marker):
            # A continuation, or a retransmitted end packet (RFC 4733 2.5.1.4). A marker after
            # the end of the same (timestamp, event) is a new press by a sender that reuses
            # timestamps (a replayed capture); real senders never do.
            self._recent[key] = ended or ev.end
            self._last = (timestamp, ev.event, ev.duration, ev.end)
            return None
        continuation = ended is None and self._is_segment_continuation(timestamp, marker, ev)
        self._recent.pop(key, None)
        self._recent[key] = ev.end
        while len(self._recent) > _RECENT:
            del self._recent[next(iter(self._recent))]
        self._last = (timestamp, ev.event, ev.duration, ev.end)
        return None if continuation else ev.digit

    def _is_segment_continuation(self, timestamp: int, marker: bool, ev: TelephoneEvent) -> bool:
        """RFC 4733 2.5.1.3: a long event goes on with timestamp = previous ts + duration."""
        if marker or self._last is None:
            return False
        ts, event, duration, ended = self._last
        return not ended and event == ev.event and timestamp == (ts + duration) & 0xFFFFFFFF


_SIGNALS = {str(i): str(i) for i in range(10)}
_SIGNALS.update({"*": "*", "#": "#", "10": "*", "11": "#", "A": "A", "B": "B", "C": "C",
                 "D": "D", "12": "A", "13": "B", "14": "C", "15": "D"})


def parse_info(content_type: str, body: bytes | str) -> str:
    """The digit carried by a SIP INFO body.

    ``application/dtmf-relay`` carries ``Signal=5`` (and ``Duration=160``) lines;
    ``application/dtmf`` carries the bare digit (some phones send the event number, 10 for *
    and 11 for #).
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype == "application/dtmf-relay":
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip().lower() == "signal":
                return _signal(value)
        raise DtmfError("application/dtmf-relay body without a Signal line")
    if ctype == "application/dtmf":
        return _signal(text)
    raise DtmfError(f"not a DTMF INFO content type: {content_type!r}")


def _signal(value: str) -> str:
    """Normalise one signal value to a DTMF character."""
    v = value.strip().upper()
    try:
        return _SIGNALS[v]
    except KeyError:
        raise DtmfError(f"unknown DTMF signal {value.strip()!r}") from None
