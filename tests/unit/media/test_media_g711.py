"""G.711 against values of ITU-T G.711 tables 1a/2a and the G.191 reference behaviour."""

import struct
import warnings

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cbserver.media import g711


def pcm(*samples):
    return struct.pack(f"<{len(samples)}h", *samples)


def samples(data):
    return list(struct.unpack(f"<{len(data) // 2}h", data))


# (16-bit linear sample, μ-law code): G.711 table 2a, codes with all bits inverted.
ULAW_KNOWN = [
    (0, 0xFF),        # +0
    (-1, 0x7F),       # -0: G.191 folds -1..-4 onto negative zero
    (120, 0xF0),      # top of segment 0 (14-bit 30)
    (132, 0xEF),      # 14-bit 33: first value of segment 1
    (32124, 0x80),    # largest positive output
    (32767, 0x80),    # clipped
    (-32124, 0x00),
    (-32768, 0x00),
]

# (16-bit linear sample, A-law code): G.711 table 1a, even bits inverted.
ALAW_KNOWN = [
    (0, 0xD5),
    (8, 0xD5),        # 13-bit 1: still segment 0, step 0
    (-1, 0x55),
    (256, 0xC5),      # 13-bit 32: first value of segment 1
    (32256, 0xAA),    # largest positive output
    (32767, 0xAA),
    (-32768, 0x2A),
]

ULAW_DECODE_KNOWN = {0xFF: 0, 0x7F: 0, 0x80: 32124, 0x00: -32124, 0xF0: 120, 0xEF: 132}
ALAW_DECODE_KNOWN = {0xD5: 8, 0x55: -8, 0xAA: 32256, 0x2A: -32256, 0xC5: 264}


@pytest.mark.parametrize(("linear", "code"), ULAW_KNOWN)
def test_ulaw_encodes_itu_table_values(linear, code):
    assert g711.ulaw_encode(pcm(linear)) == bytes([code])


@pytest.mark.parametrize(("linear", "code"), ALAW_KNOWN)
def test_alaw_encodes_itu_table_values(linear, code):
    assert g711.alaw_encode(pcm(linear)) == bytes([code])


@pytest.mark.parametrize(("code", "linear"), sorted(ULAW_DECODE_KNOWN.items()))
def test_ulaw_decodes_itu_reconstruction_values(code, linear):
    assert samples(g711.ulaw_decode(bytes([code]))) == [linear]


@pytest.mark.parametrize(("code", "linear"), sorted(ALAW_DECODE_KNOWN.items()))
def test_alaw_decodes_itu_reconstruction_values(code, linear):
    assert samples(g711.alaw_decode(bytes([code]))) == [linear]


def test_every_code_survives_decode_then_encode():
    codes = bytes(range(256))
    # μ-law negative zero (0x7F) decodes to 0, which encodes as positive zero.
    expected_u = bytes(0xFF if c == 0x7F else c for c in codes)
    assert g711.ulaw_encode(g711.ulaw_decode(codes)) == expected_u
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes


def test_encoding_is_monotonic_over_the_whole_range():
    ramp = pcm(*range(-32768, 32768, 7))
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        values = samples(dec(enc(ramp)))
        assert values == sorted(values)


@given(st.lists(st.integers(-32768, 32767), min_size=1, max_size=200))
def test_quantisation_error_stays_within_half_a_step_plus_clip(values):
    for codec in (g711.PCMU, g711.PCMA):
        out = samples(g711.decode(codec, g711.encode(codec, pcm(*values))))
        for x, y in zip(values, out, strict=True):
            # G.711 step is at most 1024 (μ-law) / 1024 (A-law) in 16-bit units in segment 7;
            # beyond the largest output the error is the clipping distance.
            assert abs(x - y) <= max(512 + 8, abs(x) - 32256 + 1024)


def test_cross_check_decode_with_audioop_where_it_still_exists():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes) == audioop.ulaw2lin(codes, 2)
    assert g711.alaw_decode(codes) == audioop.alaw2lin(codes, 2)
    positive = pcm(*range(0, 32768, 3))
    assert g711.ulaw_encode(positive) == audioop.lin2ulaw(positive, 2)
    assert g711.alaw_encode(positive) == audioop.lin2alaw(positive, 2)


def test_transcoding_goes_through_the_linear_value():
    codes = bytes(range(256))
    assert g711.ulaw_to_alaw(codes) == g711.alaw_encode(g711.ulaw_decode(codes))
    assert g711.transcode("pcma", "PCMU", codes) == g711.ulaw_encode(g711.alaw_decode(codes))
    assert g711.transcode("PCMU", "PCMU", codes) is codes


def test_silence_and_unknown_codec():
    assert g711.silence("PCMU", 3) == b"\xff\xff\xff"
    assert g711.silence("PCMA", 2) == b"\xd5\xd5"
    with pytest.raises(g711.UnknownCodec):
        g711.encode("G729", b"\x00\x00")
    with pytest.raises(ValueError):
        g711.ulaw_encode(b"\x00")
