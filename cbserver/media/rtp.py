"""RTP packets (RFC 3550 section 5.1): pack and unpack, pure code over bytes.

Also the sequence-number arithmetic every RTP receiver needs (RFC 3550 appendix A.1) and the
16/32-bit wrap helpers the relay uses when it rewrites a stream.
"""

import struct
from typing import NamedTuple

RTP_VERSION = 2
_HEADER = struct.Struct("!BBHII")
_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet."""


class RtpPacket(NamedTuple):
    """One RTP packet: the fixed header fields we use, CSRCs, and the payload.

    Header extensions (RFC 3550 5.3.1) are accepted on input and skipped; padding (the P bit)
    is removed, so ``payload`` is the media only. A tuple, because the relay makes one per
    packet and tuples are the cheapest immutable records Python builds.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()

    def pack(self) -> bytes:
        """Serialise to wire format (no padding, no extension)."""
        if not 0 <= self.payload_type < 128:
            raise RtpError(f"payload type {self.payload_type} out of range")
        if len(self.csrcs) > 15:
            raise RtpError("at most 15 CSRCs")
        # RFC 3550 5.1: V=2, P=0, X=0, CC; then M and PT in the second octet.
        first = (RTP_VERSION << 6) | len(self.csrcs)
        second = (0x80 if self.marker else 0) | self.payload_type
        head = _HEADER.pack(
            first, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc
        )
        if self.csrcs:
            head += struct.pack(f"!{len(self.csrcs)}I", *self.csrcs)
        return head + self.payload

    def replace(self, **changes) -> "RtpPacket":
        """A copy with some fields changed (the relay transcodes the payload)."""
        return self._replace(**changes)


def pack(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker=False
) -> bytes:
    """Fast path for senders: the wire bytes of a packet with no CSRC (RFC 3550 5.1)."""
    return (
        _HEADER.pack(
            0x80,
            (0x80 if marker else 0) | payload_type,
            sequence & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc,
        )
        + payload
    )


def rewrite_header(
    data: bytes, payload_type: int, sequence: int, timestamp: int, ssrc: int, marker=False
) -> bytearray:
    """A copy of a plain packet (12-octet header, no CSRC) with a new header, same payload."""
    out = bytearray(data)
    _HEADER.pack_into(out, 0, 0x80, (0x80 if marker else 0) | payload_type, sequence & 0xFFFF,
                      timestamp & 0xFFFFFFFF, ssrc)
    return out


def unpack(data: bytes) -> RtpPacket:
    """Parse a datagram as RTP; raise RtpError (and nothing else) when it is not valid RTP 2."""
    try:
        return _unpack(data)
    except struct.error as e:  # a bounds check missed in _unpack: still the parser's own error
        raise RtpError(f"truncated RTP field: {e}") from None


def _unpack(data: bytes) -> RtpPacket:
    """The body of :func:`unpack`."""
    if len(data) < _HEADER.size:
        raise RtpError("shorter than the 12-byte RTP header")
    first, second, seq, ts, ssrc = _HEADER.unpack_from(data)
    if first == 0x80:  # the common case: V=2, no padding, no extension, no CSRC
        return RtpPacket(second & 0x7F, seq, ts, ssrc, data[12:], second > 0x7F)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}, expected 2")
    cc = first & 0x0F
    offset = _HEADER.size + 4 * cc
    if len(data) < offset:
        raise RtpError("truncated CSRC list")
    csrcs = struct.unpack_from(f"!{cc}I", data, _HEADER.size) if cc else ()
    if first & 0x10:  # RFC 3550 5.3.1: X bit, a 4-byte extension header then its words
        if len(data) < offset + 4:
            raise RtpError("truncated header extension")
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
        if len(data) < offset:
            raise RtpError("truncated header extension")
    end = len(data)
    if first & 0x20:  # RFC 3550 5.1: P bit, last octet counts the padding octets
        pad = data[-1]
        if pad == 0 or end - pad < offset:
            raise RtpError("bad padding length")
        end -= pad
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrcs=tuple(csrcs),
    )


def looks_like_rtcp(data: bytes) -> bool:
    """True for RTCP arriving on an RTP port (RFC 5761 4: packet types 192-223 in octet 2)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def seq_add(seq: int, delta: int) -> int:
    """Sequence number arithmetic modulo 2^16."""
    return (seq + delta) % _SEQ_MOD


def ts_add(ts: int, delta: int) -> int:
    """Timestamp arithmetic modulo 2^32."""
    return (ts + delta) % _TS_MOD


def seq_delta(a: int, b: int) -> int:
    """Signed distance from sequence ``b`` to ``a`` in -32768..32767 (handles wrap)."""
    d = (a - b) % _SEQ_MOD
    return d - _SEQ_MOD if d >= _SEQ_MOD // 2 else d


def ts_delta(a: int, b: int) -> int:
    """Signed distance from timestamp ``b`` to ``a`` (handles wrap)."""
    d = (a - b) % _TS_MOD
    return d - _TS_MOD if d >= _TS_MOD // 2 else d
