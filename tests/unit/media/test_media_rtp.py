"""RTP packing (RFC 3550 5.1), RTCP reports, the port pool and the stream rewriter."""

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbserver.media import rtcp, rtp
from cbserver.media.ports import PortPool, PortsExhausted
from cbserver.media.rewrite import StreamRewriter


def test_pack_lays_out_the_fixed_header():
    data = rtp.pack(0, 0x1234, 0xDEADBEEF, 0x01020304, b"\xff" * 160, marker=True)
    assert data[:12] == bytes.fromhex("80801234deadbeef01020304")
    assert data[12:] == b"\xff" * 160


@given(
    st.integers(0, 127), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF), st.binary(max_size=300), st.booleans(),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
)
def test_pack_unpack_round_trip(pt, seq, ts, ssrc, payload, marker, csrcs):
    packet = rtp.RtpPacket(pt, seq, ts, ssrc, payload, marker, tuple(csrcs))
    assert rtp.unpack(packet.pack()) == packet


def test_unpack_skips_extension_and_strips_padding():
    head = struct.pack("!BBHII", 0x80 | 0x20 | 0x10, 8, 7, 1000, 42)
    ext = struct.pack("!HH", 0xBEDE, 1) + b"\x01\x02\x03\x04"
    data = head + ext + b"abc" + b"\x00\x00\x03"
    packet = rtp.unpack(data)
    assert (packet.payload_type, packet.sequence, packet.payload) == (8, 7, b"abc")


@pytest.mark.parametrize("data", [
    b"\x80\x00",                                    # too short
    b"\x40" + bytes(11),                             # version 1
    bytes([0x82]) + bytes(11),                       # two CSRCs announced, none present
    bytes([0xA0]) + bytes(11) + b"\x00",             # padding count 0
    bytes([0xA0]) + bytes(11) + b"\x05",             # padding longer than the payload
])
def test_unpack_rejects_malformed(data):
    with pytest.raises(rtp.RtpError):
        rtp.unpack(data)


def test_sequence_and_timestamp_wrap():
    assert rtp.seq_add(65535, 1) == 0
    assert rtp.seq_delta(2, 65534) == 4
    assert rtp.seq_delta(65534, 2) == -4
    assert rtp.ts_add(0xFFFFFF00, 0x200) == 0x100
    assert rtp.ts_delta(0x100, 0xFFFFFF00) == 0x200


def test_rtcp_is_recognised_on_the_rtp_port():
    assert rtp.looks_like_rtcp(rtcp.pack_rr(1, []))
    assert not rtp.looks_like_rtcp(rtp.pack(0, 1, 2, 3, b""))


def test_port_pool_hands_out_even_ports_and_reuses_least_recent():
    pool = PortPool(10001, 10008)
    got = [pool.allocate() for _ in range(pool.capacity)]
    assert sorted(got) == [10002, 10004, 10006]  # drawn at random (issue 14), every pair once
    with pytest.raises(PortsExhausted):
        pool.allocate()
    pool.release(10004)
    pool.release(10002)
    assert pool.allocate() == 10004
    with pytest.raises(ValueError):
        pool.release(10002)
    with pytest.raises(ValueError):
        PortPool(20000, 20000)


def feed(stats, seqs, ts_step=160):
    for i, s in enumerate(seqs):
        stats.update(s, i * ts_step, i * ts_step)


def test_receiver_stats_count_loss_across_wrap():
    stats = rtcp.ReceiverStats(5, 65530)
    seqs = [(65530 + i) % 65536 for i in range(20) if i not in (8, 9)]
    feed(stats, seqs)
    block = stats.report_block(now=0.0)
    assert block.cumulative_lost == 2
    assert block.highest_seq == 65536 + (65530 + 19) % 65536
    # 2 lost of the 19 expected after probation: fraction = 2*256//19
    assert block.fraction_lost == (2 << 8) // 19
    assert block.jitter == 0


def test_jitter_grows_with_irregular_arrival():
    stats = rtcp.ReceiverStats(5, 0)
    for i in range(50):
        stats.update(i, i * 160, i * 160 + (40 if i % 2 else 0))
    assert 20 < stats.report_block(0.0).jitter <= 40


def test_compound_sr_sdes_bye_round_trip():
    block = rtcp.ReportBlock(9, 12, -3, 70000, 17, 0x11223344, 65536)
    data = (
        rtcp.pack_sr(0xAABBCCDD, 1_700_000_000.5, 1234, 10, 1600, [block])
        + rtcp.pack_sdes_cname(0xAABBCCDD, b"me@host")
        + rtcp.pack_bye(0xAABBCCDD)
    )
    report = rtcp.parse_compound(data)
    assert report.sender_ssrc == 0xAABBCCDD
    assert report.blocks == (block,)
    assert report.bye_ssrcs == (0xAABBCCDD,)
    sec, frac = rtcp.ntp_time(1_700_000_000.5)
    assert report.sr_ntp_middle == ((sec & 0xFFFF) << 16) | (frac >> 16)
    assert len(rtcp.pack_sdes_cname(1, b"abc")) % 4 == 0


def test_rr_parses_and_truncation_is_an_error():
    data = rtcp.pack_rr(7, [rtcp.ReportBlock(1, 0, 0, 5, 0, 0, 0)])
    assert rtcp.parse_compound(data).blocks[0].highest_seq == 5
    with pytest.raises(rtcp.RtcpError):
        rtcp.parse_compound(data[:-4])
    with pytest.raises(rtcp.RtcpError):
        rtcp.parse_compound(b"\x00\xc9\x00\x00")


def pkt(ssrc, seq, ts, marker=False):
    return rtp.RtpPacket(0, seq, ts, ssrc, b"x", marker)


def test_rewriter_keeps_offsets_per_source_and_marks_a_change():
    rw = StreamRewriter()
    assert rw.needs_anchor(1)
    rw.anchor(pkt(1, 100, 5000), next_seq=65535, next_ts=0xFFFFFFF0)
    assert rw.map(pkt(1, 100, 5000)) == (65535, 0xFFFFFFF0, True)
    assert rw.map(pkt(1, 102, 5320)) == (1, 0x130, False)   # gap preserved, both wrap
    assert rw.map(pkt(1, 101, 5160)) == (0, 0x90, False)    # reordering preserved
    assert not rw.needs_anchor(1)
    assert rw.needs_anchor(2)
    rw.reset()
    assert rw.needs_anchor(1)


def test_port_pool_draws_ports_at_random_not_in_sequence():
    # Issue 14 (RTP hijack): the next call's port cannot be told from the last one's.
    pool = PortPool(20000, 29999)
    got = [pool.allocate() for _ in range(50)]
    assert all(p % 2 == 0 and 20000 <= p <= 29998 for p in got) and len(set(got)) == 50
    steps = {b - a for a, b in zip(got, got[1:], strict=False)}
    assert len(steps) > 40  # a sequence would step by 2 every time
    # Two pools draw different sequences (SystemRandom), and a seeded one repeats itself.
    assert [PortPool(20000, 29999).allocate() for _ in range(5)] != got[:5]
    one, two = (PortPool(20000, 29999, rng=random.Random(7)) for _ in range(2))
    assert [one.allocate() for _ in range(5)] == [two.allocate() for _ in range(5)]


def test_port_pool_rests_a_released_pair_before_reuse():
    pool = PortPool(20000, 20199)  # 100 pairs: 50 rest after release
    first = pool.allocate()
    pool.release(first)
    assert first not in [pool.allocate() for _ in range(50)]
