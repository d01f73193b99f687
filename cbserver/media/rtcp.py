"""RTCP (RFC 3550 section 6): receiver statistics, SR/RR/SDES/BYE packing and compound parsing.

Pure code over bytes and numbers; the session feeds it arrival times from its clock.
"""

import struct
from dataclasses import dataclass

SR, RR, SDES, BYE = 200, 201, 202, 203
_MAX_DROPOUT = 3000  # RFC 3550 A.1
_MAX_MISORDER = 100
_MIN_SEQUENTIAL = 2
_SEQ_MOD = 1 << 16
_NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 to 1970-01-01


class RtcpError(ValueError):
    """A datagram that is not a well-formed RTCP compound packet."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 6.4.1)."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int


class ReceiverStats:
    """Per-source reception statistics: RFC 3550 appendix A.1 (sequence) and A.8 (jitter)."""

    def __init__(self, ssrc: int, seq: int):
        self.ssrc = ssrc
        self._init_seq(seq)
        self.max_seq = seq - 1
        self.probation = _MIN_SEQUENTIAL
        self.jitter = 0.0
        self._transit: int | None = None
        self.lsr = 0  # middle 32 bits of the NTP time of the last SR from this source
        self.lsr_arrival: float | None = None

    def _init_seq(self, seq: int) -> None:
        """RFC 3550 A.1 init_seq()."""
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = _SEQ_MOD + 1
        self.cycles = 0
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0

    def update(self, seq: int, timestamp: int, arrival_units: int) -> bool:
        """Account for one packet; False if it is to be discarded as invalid (A.1)."""
        if not self.probation and seq == (self.max_seq + 1) & 0xFFFF:
            # The common case, in order: the A.1 branch below for udelta == 1, inlined.
            if seq == 0:
                self.cycles += _SEQ_MOD
            self.max_seq = seq
            self.received += 1
            transit = arrival_units - timestamp
            if self._transit is not None:
                d = transit - self._transit
                self.jitter += ((d if d >= 0 else -d) - self.jitter) / 16.0
            self._transit = transit
            return True
        udelta = (seq - self.max_seq) % _SEQ_MOD
        if self.probation:
            # A source is valid after MIN_SEQUENTIAL packets in sequence (A.1).
            if seq == (self.max_seq + 1) % _SEQ_MOD:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    self.received += 1
                    self._jitter(timestamp, arrival_units)
                    return True
            else:
                self.probation = _MIN_SEQUENTIAL - 1
                self.max_seq = seq
            return False
        if udelta < _MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += _SEQ_MOD  # sequence number wrapped
            self.max_seq = seq
        elif udelta <= _SEQ_MOD - _MAX_MISORDER:
            if seq == self.bad_seq:
                self._init_seq(seq)  # two in a row: the sender restarted
            else:
                self.bad_seq = (seq + 1) % _SEQ_MOD
                return False
        # else: duplicate or reordered packet, counted below
        self.received += 1
        self._jitter(timestamp, arrival_units)
        return True

    def _jitter(self, timestamp: int, arrival_units: int) -> None:
        """Interarrival jitter estimate, RFC 3550 A.8."""
        transit = arrival_units - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            self.jitter += (d - self.jitter) / 16.0
        self._transit = transit

    @property
    def extended_max(self) -> int:
        """Extended highest sequence number received."""
        return self.cycles + self.max_seq

    def lost(self) -> int:
        """Cumulative packets lost (expected minus received), RFC 3550 A.3."""
        return self.extended_max - self.base_seq + 1 - self.received

    @property
    def validated(self) -> bool:
        """True once the source passed probation (A.1); only then is it reported."""
        return self.probation == 0

    def report_block(self, now: float) -> ReportBlock:
        """Build a report block and roll the interval counters (RFC 3550 A.3)."""
        expected = self.extended_max - self.base_seq + 1
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior = expected
        self.received_prior = self.received
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lost = max(-(1 << 23), min(self.lost(), (1 << 23) - 1))
        dlsr = 0
        if self.lsr_arrival is not None:
            dlsr = int((now - self.lsr_arrival) * 65536) & 0xFFFFFFFF  # units of 1/65536 s
        return ReportBlock(
            self.ssrc, fraction, lost, self.extended_max & 0xFFFFFFFF, int(self.jitter),
            self.lsr, dlsr,
        )


def ntp_time(unix_seconds: float) -> tuple[int, int]:
    """(seconds, fraction) of an NTP timestamp for a Unix time (RFC 3550 4)."""
    whole = int(unix_seconds)
    frac = int((unix_seconds - whole) * (1 << 32)) & 0xFFFFFFFF
    return (whole + _NTP_EPOCH_OFFSET) & 0xFFFFFFFF, frac


def _blocks(blocks: list[ReportBlock]) -> bytes:
    """Packed report blocks (RFC 3550 6.4.1)."""
    out = b""
    for b in blocks:
        lost24 = b.cumulative_lost & 0xFFFFFF
        out += struct.pack(
            "!IIIIII", b.ssrc, (b.fraction_lost << 24) | lost24, b.highest_seq, b.jitter,
            b.lsr, b.dlsr,
        )
    return out


def _header(count: int, ptype: int, body: bytes) -> bytes:
    """Common RTCP header; length in 32-bit words minus one (RFC 3550 6.4.1)."""
    return struct.pack("!BBH", 0x80 | count, ptype, (len(body) + 4) // 4 - 1) + body


def pack_rr(ssrc: int, blocks: list[ReportBlock]) -> bytes:
    """A receiver report (RFC 3550 6.4.2)."""
    return _header(len(blocks), RR, struct.pack("!I", ssrc) + _blocks(blocks))


def pack_sr(
    ssrc: int, unix_now: float, rtp_ts: int, packets: int, octets: int,
    blocks: list[ReportBlock],
) -> bytes:
    """A sender report (RFC 3550 6.4.1)."""
    sec, frac = ntp_time(unix_now)
    body = struct.pack(
        "!IIIIII", ssrc, sec, frac, rtp_ts & 0xFFFFFFFF, packets & 0xFFFFFFFF,
        octets & 0xFFFFFFFF,
    )
    return _header(len(blocks), SR, body + _blocks(blocks))


def pack_sdes_cname(ssrc: int, cname: bytes) -> bytes:
    """An SDES packet with one CNAME item, padded to a word (RFC 3550 6.5)."""
    chunk = struct.pack("!IBB", ssrc, 1, len(cname)) + cname + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return _header(1, SDES, chunk)


def pack_bye(ssrc: int) -> bytes:
    """A BYE for one source (RFC 3550 6.6)."""
    return _header(1, BYE, struct.pack("!I", ssrc))


@dataclass(frozen=True, slots=True)
class RtcpReport:
    """What we read out of one compound packet."""

    sender_ssrc: int | None
    sr_ntp_middle: int | None  # middle 32 bits of the SR's NTP timestamp, for LSR
    blocks: tuple[ReportBlock, ...]
    bye_ssrcs: tuple[int, ...]


def parse_compound(data: bytes) -> RtcpReport:
    """Parse a compound RTCP packet, keeping SR/RR blocks and BYE sources (RFC 3550 6.1).

    Raises :class:`RtcpError`, and nothing else, for any datagram that is not one: a packet
    whose length field is too short for its fixed part (``80 c9 00 00``, an RR with no
    sender SSRC) is refused before any field is read past its end.
    """
    try:
        return _parse_compound(data)
    except struct.error as e:  # a bounds check missed below: still the parser's own error
        raise RtcpError(f"truncated RTCP field: {e}") from None


def _parse_compound(data: bytes) -> RtcpReport:
    """The body of :func:`parse_compound`."""
    if len(data) < 4:
        raise RtcpError("shorter than an RTCP header")
    off = 0
    sender = None
    ntp_mid = None
    blocks: list[ReportBlock] = []
    byes: list[int] = []
    while off + 4 <= len(data):
        first, ptype, words = struct.unpack_from("!BBH", data, off)
        if first >> 6 != 2:
            raise RtcpError(f"RTCP version {first >> 6}, expected 2")
        end = off + 4 * (words + 1)
        if end > len(data):
            raise RtcpError("truncated RTCP packet")
        count = first & 0x1F
        body = off + 4
        if ptype in (SR, RR):
            # RFC 3550 6.4.1/6.4.2: the sender SSRC, and for an SR the 20-octet sender info.
            if body + (24 if ptype == SR else 4) > end:
                raise RtcpError("SR/RR shorter than its sender information")
            (sender,) = struct.unpack_from("!I", data, body)
            body += 4
            if ptype == SR:
                sec, frac = struct.unpack_from("!II", data, body)
                ntp_mid = ((sec & 0xFFFF) << 16) | (frac >> 16)
                body += 20
            for _ in range(count):
                if body + 24 > end:
                    raise RtcpError("truncated report block")
                ssrc, fl, hi, jit, lsr, dlsr = struct.unpack_from("!IIIIII", data, body)
                lost = fl & 0xFFFFFF
                if lost & 0x800000:
                    lost -= 1 << 24
                blocks.append(ReportBlock(ssrc, fl >> 24, lost, hi, jit, lsr, dlsr))
                body += 24
        elif ptype == BYE:
            for i in range(count):
                if body + 4 * (i + 1) > end:
                    raise RtcpError("truncated BYE")
                byes.append(struct.unpack_from("!I", data, body + 4 * i)[0])
        off = end
    return RtcpReport(sender, ntp_mid, tuple(blocks), tuple(byes))
