"""Maps a relayed stream into the sending session's own sequence and timestamp space (pure).

When a leg's source changes (our prompt, then the other leg's audio; or the other leg's phone
switches SSRC after a transfer), the receiver must still see one continuous stream: the same
SSRC, sequence numbers that carry on without a jump, and a timestamp that reflects elapsed
time (RFC 3550 5.1, and RFC 7667 3.2.1.2 on media-translating middleboxes). The rewriter keeps
constant offsets per inbound source, so gaps and reordering of the inbound stream are
preserved, and marks the first packet after a change as the start of a talk spurt.
"""

from cbserver.media import rtp


class StreamRewriter:
    """Offsets from one inbound source (by SSRC) to the outbound sequence/timestamp space."""

    def __init__(self):
        self._source: int | None = None
        self._seq_offset = 0
        self._ts_offset = 0
        self._mark_next = False

    def reset(self) -> None:
        """Forget the source: the next forwarded packet will re-anchor (e.g. after a prompt)."""
        self._source = None

    def needs_anchor(self, ssrc: int) -> bool:
        """True when a packet of ``ssrc`` is not covered by the current mapping."""
        return ssrc != self._source

    def anchor(self, packet: rtp.RtpPacket, next_seq: int, next_ts: int) -> None:
        """Start mapping ``packet``'s source so that it lands on ``next_seq``/``next_ts``."""
        self._source = packet.ssrc
        self._seq_offset = (next_seq - packet.sequence) & 0xFFFF
        self._ts_offset = (next_ts - packet.timestamp) & 0xFFFFFFFF
        self._mark_next = True  # RFC 3551 4.1: first packet of a talk spurt

    def map(self, packet: rtp.RtpPacket) -> tuple[int, int, bool]:
        """(sequence, timestamp, marker) for ``packet`` in the outbound space."""
        return self.map_fields(packet.sequence, packet.timestamp, packet.marker)

    def map_fields(self, sequence: int, timestamp: int, marker: bool) -> tuple[int, int, bool]:
        """``map`` for a packet of the current source given by its header fields alone."""
        marker = marker or self._mark_next
        self._mark_next = False
        return (
            (sequence + self._seq_offset) & 0xFFFF,
            (timestamp + self._ts_offset) & 0xFFFFFFFF,
            marker,
        )
