"""An RTP session: one call leg's media endpoint on an even UDP port, RTCP on the odd one.

Outbound it stamps SSRC, sequence and timestamp on generated audio (the player), sets the
marker bit on the first packet of each talk spurt, and rewrites relayed packets into its own
sequence/timestamp space (``forward``). Inbound it validates RTP, keeps receiver statistics,
sends RTCP receiver (or sender) reports, reads BYE, and hands packets to its sinks.

Symmetric RTP (RFC 4961): until the peer's first valid packet arrives we send to the address
from SDP; then we latch to the packet's source address and send there, which gets media through
NAT. Packets from any other source are dropped afterwards (no re-latching to strangers).

Latching is guarded (issue 14, docs/security.md "1. RTP hijack"): nothing latches before the
peer's SDP (its answer) has told us where its media comes from, so a stranger spraying the
RTP range during ringing gets nothing. In the default ``strict`` mode only a packet from the
answered SDP connection address (the same IP; the port may differ, a symmetric-RTP phone
behind a port-mapping firewall) latches; in ``nat`` mode (``[rtp] latch = "nat"``) the first
source after the answer latches, whatever its address, and then only that source is heard.
RTCP is read only from the media peer's host: before latching from the SDP RTCP address (or
the SDP RTP address, RFC 5761 rtcp-mux); after it from the latched host on the latched RTP
port, the port above it (RFC 3550 11), or the port SDP gave for RTCP (RFC 3605).

Direction (RFC 3264 5.1, 6.1): the peer's SDP says whether it wants our media. While it says
``sendonly`` or ``inactive`` (a hold) the session sends no RTP at all, whoever feeds it (the
player, the relay's general or fast path); RTCP goes on (RFC 3264 5.1). When a later offer
says ``sendrecv`` or ``recvonly`` again, sending resumes with a new talk spurt: marker bit
set and the timestamp caught up with the time spent on hold (RFC 3550 5.1).
"""

import ipaddress
import random
import struct
import weakref

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime, IReactorUDP
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol

from cbserver.logs import Logger, RateLimitedLog
from cbserver.media import rtcp, rtp
from cbserver.media.mux import MuxPort, OneReadPort, shared_mux
from cbserver.media.ports import PortPool
from cbserver.media.rewrite import StreamRewriter
from cbserver.media.rtcptimer import shared_timer

_FAST_HEADER = struct.Struct("!BHII")  # octets 1-11 of a plain RTP header (RFC 3550 5.1)
SAMPLE_RATE = 8000  # G.711 and telephone-event clock rate (RFC 3551 4.5.14, RFC 4733 2.1)
_BIND_ATTEMPTS = 10
LATCH_MODES = ("strict", "nat")
_SYSTEM_RANDOM = random.SystemRandom()


def _sendable(host: str) -> bool:
    """True for an IP literal we can send to (not a name, not the unspecified address)."""
    try:
        return not ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


class _RtcpProtocol(DatagramProtocol):
    """The odd-port half of a session: passes RTCP datagrams to the session."""

    def __init__(self, session: "RtpSession"):
        # Weak: the session owns this protocol; a strong reference back would make every
        # session a cycle, left for a full garbage collection to find.
        self._session = weakref.ref(session)

    def datagramReceived(self, data, addr):
        """Hand every datagram to the session's RTCP reader (none once the session is gone)."""
        session = self._session()
        if session is not None:
            session.rtcp_received(data, addr)


class RtpSession(DatagramProtocol):
    """One leg's RTP endpoint; see the module docstring."""

    log = Logger()
    # Network-input errors (bad RTCP, strangers' packets): a bounded number of lines per minute
    # for the whole process, however many packets a flood brings (issue 14).
    limited = RateLimitedLog(log, lines=5, interval=60.0)

    def __init__(
        self, clock: IReactorTime, reactor: IReactorUDP, pool: PortPool, host: str = "127.0.0.1",
        *, call_id: str = "", rtcp_interval: float = 5.0, rng: random.Random | None = None,
        mux="auto", latch: str = "strict",
    ):
        if latch not in LATCH_MODES:
            raise ValueError(f"latch mode {latch!r}, expected one of {LATCH_MODES}")
        self.latch_mode = latch
        self._clock = clock
        # A MediaMux serving every RTP socket; "auto": the process's shared one on an epoll
        # reactor; None: a Twisted port per socket.
        self._mux = shared_mux(reactor) if mux == "auto" else mux
        self._reactor = reactor
        self._pool = pool
        self.host = host
        self.call_id = call_id
        # SystemRandom keeps no state of its own (os.urandom), so one is shared: a Random
        # instance per leg cost 2.5 KB of unused Mersenne Twister state.
        self._rng = rng or _SYSTEM_RANDOM
        self.rtcp_interval = rtcp_interval
        # RFC 3550 5.1: SSRC, initial sequence and timestamp are random.
        self.ssrc = self._rng.getrandbits(32)
        self._seq = self._rng.getrandbits(16)
        self._ts_base = self._rng.getrandbits(32)
        self._t0: float | None = None
        self._next_ts = self._ts_base
        self._marker = True
        self._rewriter = StreamRewriter()
        self.local_port: int | None = None
        self._rtp_port = self._rtcp_port = None
        self._rtcp_proto = _RtcpProtocol(self)
        # Reports are sent by the clock's one RTCP timer (cbserver/media/rtcptimer.py).
        self._rtcp_timer = shared_timer(clock)
        # negotiated by SDP (configure)
        self.payload_type = 0
        self.codec = "PCMU"
        self.telephone_event_pt: int | None = None
        self.remote: tuple[str, int] | None = None
        self.remote_rtcp: tuple[str, int] | None = None
        self.latched = False
        # What the peer's SDP said (the answer): the media host that may latch in strict mode,
        # and the RTCP address it gave (RFC 3605 a=rtcp, else RTP port + 1).
        self.sdp_remote: tuple[str, int] | None = None
        self.sdp_rtcp: tuple[str, int] | None = None
        self.answered = False  # configure() has been given the peer's SDP
        self.rtcp_dropped = 0  # RTCP refused: malformed, or not from the media peer
        self.strangers_dropped = 0  # packets from sources that may not latch or are not latched
        # RFC 3264 5.1: False while the peer's SDP says it will not receive (hold)
        self.sending = True
        self.remote_direction = "sendrecv"
        self.direction_changed: float | None = None  # when the peer's direction last changed
        # sinks
        self.event_sink = None  # callable(RtpPacket) for telephone-event packets
        self.packet_sink = None  # callable(RtpPacket) for every valid packet (the relay)
        # (destination session, relay) while a relay forwards this leg's audio unchanged to a
        # leg with the same codec: the per-packet fast path (see datagramReceived)
        self.relay_to = None
        self.on_bye = None  # callable() when the peer sends RTCP BYE
        # counters
        self.last_received: float | None = None  # last valid RTP packet
        self.last_rtcp: float | None = None  # last valid RTCP packet
        self.packets_sent = self.octets_sent = 0
        self.packets_received = self.packets_dropped = 0
        self.send_errors = 0
        self._sock = None  # the RTP socket when the port has one (sent on directly)
        self._sent_since_report = False
        self._stats: rtcp.ReceiverStats | None = None
        self.closed = False

    # --- life cycle -----------------------------------------------------------------------

    def open(self) -> int:
        """Bind an even RTP port and the RTCP port above it; return the RTP port."""
        for _ in range(_BIND_ATTEMPTS):
            port = self._pool.allocate()
            try:
                rtp_port = self._listen(port, self)
            except CannotListenError:
                self._pool.release(port)
                continue
            try:
                rtcp_port = self._listen(port + 1, self._rtcp_proto)
            except CannotListenError:
                rtp_port.stopListening()
                self._pool.release(port)
                continue
            self._rtp_port, self._rtcp_port, self.local_port = rtp_port, rtcp_port, port
            # The media path sends straight on the socket: Twisted's Port.write re-validates
            # the address string on every packet, which costs more than the send itself.
            # The socket is kept, not its bound ``sendto``: one object fewer per leg for the
            # garbage collector to visit (issue 17).
            self._sock = getattr(rtp_port, "socket", None)
            self._schedule_rtcp()
            return port
        raise CannotListenError(self.host, 0, f"no bindable RTP pair after {_BIND_ATTEMPTS} tries")

    def _listen(self, port: int, protocol):
        """Bind an RTP or RTCP port: in the media mux if we have one, else a one-read port.

        The mux also keeps two sockets per leg out of Twisted's port machinery, which logs
        four lines for every port opened and closed.
        """
        if self._mux is not None:
            return MuxPort.bind(self._mux, protocol, self.host, port)
        if isinstance(self._reactor, PosixReactorBase):
            p = OneReadPort(port, protocol, interface=self.host, maxPacketSize=2048,
                            reactor=self._reactor)
            p.startListening()
            return p
        return self._reactor.listenUDP(port, protocol, interface=self.host)

    def configure(
        self, remote: tuple[str, int] | None, payload_type: int, codec: str,
        telephone_event_pt: int | None = None, remote_rtcp: tuple[str, int] | None = None,
    ) -> None:
        """Apply the SDP outcome: where to send (until latched), codec and event type."""
        self.payload_type = payload_type
        self.codec = codec.upper()
        self.telephone_event_pt = telephone_event_pt
        if remote is not None and not _sendable(remote[0]):
            # A host name would need a blocking DNS lookup on every send, and 0.0.0.0 means
            # "hold" (RFC 3264 8.4): send nothing until the peer's packets show us where.
            self.log.warn("rtp remote {remote} not usable call_id={call_id}; waiting to latch",
                          remote=remote, call_id=self.call_id)
            remote = None
        self.answered = True
        if remote is not None:
            self.sdp_remote = remote
            self.sdp_rtcp = remote_rtcp or (remote[0], remote[1] + 1)
        if not self.latched:
            self.remote = remote
            if remote is not None:
                # RFC 3550 11: RTCP on the next port unless SDP said otherwise (RFC 3605).
                self.remote_rtcp = self.sdp_rtcp

    def set_remote_direction(self, direction: str) -> None:
        """The peer's direction attribute from its SDP, from its own point of view (RFC 3264).

        ``sendonly`` and ``inactive`` stop our RTP to it; ``sendrecv`` and ``recvonly``
        (re)start it, the first packet after a hold opening a new talk spurt.
        """
        sending = direction in ("sendrecv", "recvonly")
        if sending and not self.sending:
            self.begin_talkspurt()
        if sending != self.sending:
            self.log.info("rtp {what} call_id={call_id} direction={direction}",
                          what="resumed" if sending else "held", call_id=self.call_id,
                          direction=direction)  # fmt: skip
        self.sending = sending
        if direction != self.remote_direction:
            self.direction_changed = self._clock.seconds()
        self.remote_direction = direction

    @property
    def expects_rtp(self) -> bool:
        """Whether the peer said it sends (sendrecv, sendonly): one on recvonly or inactive
        may stay silent without being dead (RFC 3264 5.1)."""
        return self.remote_direction in ("sendrecv", "sendonly")

    def close(self) -> defer.Deferred:
        """Send RTCP BYE, stop listening and give the ports back to the pool."""
        if self.closed:
            return defer.succeed(None)
        self.closed = True
        self._rtcp_timer.remove(self)
        if self._rtcp_port is not None and self.remote_rtcp is not None:
            self._send_rtcp(rtcp.pack_bye(self.ssrc), with_report=True)  # RFC 3550 6.3.7
        # The mux's ports stop at once (no Deferred); only a Twisted port's stopping is
        # waited for: five Deferreds per leg closed were 0.8 % of the server's CPU (issue 17).
        waits = []
        for port in (self._rtp_port, self._rtcp_port):
            if port is not None:
                try:
                    stopped = port.stopListening()
                except Exception:  # noqa: BLE001 - reported through the returned Deferred
                    waits.append(defer.fail())
                else:
                    if isinstance(stopped, defer.Deferred):
                        waits.append(stopped)
        if self.local_port is not None:
            self._pool.release(self.local_port)
        self._rtp_port = self._rtcp_port = None
        if not waits:
            return defer.succeed(None)
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    # --- sending ----------------------------------------------------------------------------

    def _wall_ts(self) -> int:
        """The RTP timestamp of 'now' on this stream's media clock (RFC 3550 5.1)."""
        now = self._clock.seconds()
        if self._t0 is None:
            self._t0 = now
        return rtp.ts_add(self._ts_base, round((now - self._t0) * SAMPLE_RATE))

    def begin_talkspurt(self) -> None:
        """The next packet starts a talk spurt: marker bit set, timestamp caught up to now.

        RFC 3550 5.1 / RFC 3551 4.1: after silence the timestamp jumps by the silent time and
        the first packet carries the marker bit.
        """
        wall = self._wall_ts()
        if rtp.ts_delta(wall, self._next_ts) > 0:
            self._next_ts = wall
        self._marker = True
        self._rewriter.reset()

    def skip_samples(self, samples: int) -> None:
        """Advance the timestamp for frames that were never sent (media clock fell behind)."""
        self._next_ts = rtp.ts_add(self._next_ts, samples)

    def send_audio(self, payload: bytes) -> None:
        """Send one frame of audio in the negotiated codec (G.711: one byte per sample)."""
        if not self.sending:
            return  # on hold: the frame is dropped, its time is caught up on resume
        if self._t0 is None:
            self._t0 = self._clock.seconds()
        self._write(
            rtp.pack(self.payload_type, self._seq, self._next_ts, self.ssrc, payload, self._marker)
        )
        self._marker = False
        self._seq = (self._seq + 1) & 0xFFFF
        self._next_ts = (self._next_ts + len(payload)) & 0xFFFFFFFF

    def forward(self, packet: rtp.RtpPacket, payload_type: int, samples: int) -> None:
        """Send a relayed packet, rewritten into this stream's SSRC/sequence/timestamp space."""
        if not self.sending:
            return
        rewriter = self._rewriter
        if rewriter.needs_anchor(packet.ssrc):
            wall = self._wall_ts()
            start_ts = wall if rtp.ts_delta(wall, self._next_ts) > 0 else self._next_ts
            rewriter.anchor(packet, self._seq, start_ts)
        seq, ts, marker = rewriter.map(packet)
        self._write(rtp.pack(payload_type, seq, ts, self.ssrc, packet.payload, marker))
        self._sent_relayed(seq, ts, samples)

    def _sent_relayed(self, seq: int, ts: int, samples: int) -> None:
        """Keep "next" at the newest position sent (modular compare, RFC 3550 A.1 style), so a
        prompt after the relay carries on from there."""
        if (seq - self._seq) & 0xFFFF < 0x8000:
            self._seq = (seq + 1) & 0xFFFF
        end = (ts + samples) & 0xFFFFFFFF
        if 0 < (end - self._next_ts) & 0xFFFFFFFF < 0x80000000:
            self._next_ts = end
        self._marker = False

    def relay_audio(self, data: bytes, sequence: int, timestamp: int, marker: bool) -> None:
        """``forward`` for the relay's fast path: an audio packet of the anchored source.

        ``data`` is the inbound datagram, a plain 12-octet header (version 2, no padding,
        extension or CSRC: checked by the caller) and the payload, already in this leg's
        codec. Only the header changes (RFC 3550 5.1: our SSRC, sequence and timestamp in
        this stream's space, RFC 7667 3.2.1.2), so it is rebuilt over a copy of the datagram
        without making a packet object.
        """
        if not self.sending:
            return
        seq, ts, marker = self._rewriter.map_fields(sequence, timestamp, marker)
        self._write(rtp.rewrite_header(data, self.payload_type, seq, ts, self.ssrc, marker))
        self._sent_relayed(seq, ts, len(data) - 12)  # G.711: one sample per payload octet

    def relaying(self, ssrc: int) -> bool:
        """Whether ``relay_audio`` may take a packet of ``ssrc`` (the rewriter is anchored on it)."""
        return not self._rewriter.needs_anchor(ssrc)

    def _write(self, data: bytes) -> None:
        if self.remote is None or self._rtp_port is None:
            return
        try:
            if self._sock is not None:
                self._sock.sendto(data, self.remote)
            else:
                self._rtp_port.write(data, self.remote)
        except OSError as e:
            # UDP: a full socket buffer or an ICMP error loses this packet, not the call.
            self.send_errors += 1
            if self.send_errors == 1:
                self.log.warn("rtp send failed call_id={call_id}: {error}",
                              call_id=self.call_id, error=e)
            return
        self.packets_sent += 1
        self.octets_sent += len(data) - 12
        self._sent_since_report = True

    # --- receiving --------------------------------------------------------------------------

    def datagramReceived(self, data, addr):
        """Validate, latch, account and dispatch one inbound RTP datagram."""
        # Fast path (every packet of an established call): latched source, plain header.
        # RFC 5761 4: a second octet of 192-223 is RTCP multiplexed on the RTP port.
        if self.latched and addr == self.remote and len(data) >= 12 and data[0] == 0x80 \
                and not 192 <= data[1] <= 223:
            second, seq, ts, ssrc = _FAST_HEADER.unpack_from(data, 1)
            relay_to, stats = self.relay_to, self._stats
            if (relay_to is not None and stats is not None and stats.ssrc == ssrc
                    and second & 0x7F == self.payload_type and relay_to[0].relaying(ssrc)):
                # The relay's fast path: what the general path below does for this packet
                # (count, receiver statistics, forward), without building a packet object.
                self.packets_received += 1
                self.last_received = now = self._clock.seconds()
                stats.update(seq, ts, int(now * SAMPLE_RATE))
                relay_to[0].relay_audio(data, seq, ts, second > 0x7F)
                relay_to[1].forwarded += 1
                return
            packet = rtp.RtpPacket(second & 0x7F, seq, ts, ssrc, data[12:], second > 0x7F)
        else:
            packet = self._slow_receive(data, addr)
            if packet is None:
                return
        self.packets_received += 1
        self.last_received = now = self._clock.seconds()
        stats = self._stats
        if stats is None or stats.ssrc != packet.ssrc:
            stats = self._stats = rtcp.ReceiverStats(packet.ssrc, packet.sequence)
        stats.update(packet.sequence, packet.timestamp, int(now * SAMPLE_RATE))
        if packet.payload_type == self.telephone_event_pt and self.event_sink is not None:
            self.event_sink(packet)
        if self.packet_sink is not None:
            self.packet_sink(packet)

    def _slow_receive(self, data, addr) -> rtp.RtpPacket | None:
        """Full validation: RTCP on the RTP port, unusual headers, latching."""
        if rtp.looks_like_rtcp(data):
            self.rtcp_received(data, addr)
            return None
        try:
            packet = rtp.unpack(data)
        except rtp.RtpError:
            self.packets_dropped += 1
            return None
        if not self._accept(packet, addr):
            self.packets_dropped += 1
            return None
        return packet

    def _accept(self, packet: rtp.RtpPacket, addr) -> bool:
        """Symmetric RTP, guarded: latch to the first allowed source of a negotiated type.

        Allowed: nobody before the SDP answer told us where the peer is; then, in strict mode,
        a source on the answered SDP host; in NAT mode, any first source (module docstring).
        """
        if self.latched:
            if addr != self.remote:
                self._stranger(addr, "not the latched source")
                return False
            return True
        if not self.answered:
            self._stranger(addr, "before the SDP answer")
            return False
        if packet.payload_type not in (self.payload_type, self.telephone_event_pt):
            return False
        if self.latch_mode == "strict" and (self.sdp_remote is None or addr[0] != self.sdp_remote[0]):
            self._stranger(addr, "not the SDP address")
            return False
        if addr != self.remote:
            self.log.info(
                "rtp latched call_id={call_id} from={sdp} to={seen}",
                call_id=self.call_id, sdp=self.remote, seen=addr,
            )
        self.remote = addr
        if self.remote_rtcp is None or self.remote_rtcp[0] != addr[0]:
            self.remote_rtcp = (addr[0], addr[1] + 1)
        self.latched = True
        return True

    def _stranger(self, addr, why: str) -> None:
        """Count (and, rate-limited, log) a packet from a source we do not listen to."""
        self.strangers_dropped += 1
        self.limited.info("rtp-stranger", "rtp ignored from {addr} call_id={call_id}: {why}",
                          addr=addr, call_id=self.call_id, why=why)

    def _rtcp_source_ok(self, addr) -> bool:
        """RTCP only from the media peer (module docstring; RFC 3550 11, RFC 3605, RFC 5761)."""
        if self.latched:
            host, port = self.remote
            return addr[0] == host and (
                addr[1] in (port, port + 1) or (self.sdp_rtcp is not None and addr == self.sdp_rtcp)
            )
        if self.sdp_remote is None:
            return False
        return addr == self.sdp_rtcp or addr == self.sdp_remote

    def unlatch(self) -> None:
        """Forget the latched address (after a re-INVITE moved the peer's media)."""
        self.latched = False

    # --- RTCP -------------------------------------------------------------------------------

    def rtcp_received(self, data: bytes, addr) -> None:
        """Read an RTCP compound: remember SR times for our reports, act on BYE."""
        if not self._rtcp_source_ok(addr):
            self.rtcp_dropped += 1
            self._stranger(addr, "RTCP not from the media peer")
            return
        try:
            report = rtcp.parse_compound(data)
        except rtcp.RtcpError as e:
            self.rtcp_dropped += 1
            self.limited.info("rtcp-malformed", "bad rtcp from {addr} call_id={call_id}: {err}",
                              addr=addr, call_id=self.call_id, err=e)
            return
        self.last_rtcp = self._clock.seconds()
        if self.latched:
            self.remote_rtcp = addr  # symmetric RTCP, like RTP
        if report.sr_ntp_middle is not None and self._stats is not None:
            if report.sender_ssrc == self._stats.ssrc:
                self._stats.lsr = report.sr_ntp_middle
                self._stats.lsr_arrival = self._clock.seconds()
        if report.bye_ssrcs:
            self.log.info("rtcp bye call_id={call_id}", call_id=self.call_id)
            if self.on_bye is not None:
                self.on_bye()

    def _schedule_rtcp(self) -> None:
        # RFC 3550 6.3.1: randomise the interval to 0.5-1.5 times the nominal value.
        delay = self.rtcp_interval * (0.5 + self._rng.random())
        self._rtcp_timer.schedule(self, delay)

    def rtcp_due(self) -> None:
        """The RTCP timer says our next report is due: send it and schedule the one after."""
        if self.closed:
            return
        if self.remote_rtcp is not None:
            self._send_rtcp(b"", with_report=True)
        self._schedule_rtcp()

    def report(self) -> bytes:
        """The SR or RR (plus SDES CNAME) this session would send now (RFC 3550 6.1)."""
        now = self._clock.seconds()
        stats = self._stats
        blocks = [stats.report_block(now)] if stats is not None and stats.validated else []
        if self._sent_since_report:
            head = rtcp.pack_sr(
                self.ssrc, now, self._wall_ts(), self.packets_sent, self.octets_sent, blocks
            )
        else:
            head = rtcp.pack_rr(self.ssrc, blocks)
        self._sent_since_report = False
        cname = f"cbserver-{self.ssrc:08x}@{self.host}".encode()
        return head + rtcp.pack_sdes_cname(self.ssrc, cname)

    def _send_rtcp(self, tail: bytes, with_report: bool) -> None:
        if self._rtcp_port is None or self.remote_rtcp is None:
            return
        data = (self.report() if with_report else b"") + tail
        try:
            self._rtcp_port.write(data, self.remote_rtcp)
        except OSError as e:  # an ICMP error or a full buffer loses a report, not the call
            self.log.debug("rtcp send failed call_id={call_id}: {error}", call_id=self.call_id,
                           error=e)

    def receiver_stats(self) -> rtcp.ReceiverStats | None:
        """Statistics of the current inbound source, if any."""
        return self._stats
