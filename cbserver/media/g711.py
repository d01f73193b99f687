"""G.711 μ-law (PCMU) and A-law (PCMA) codecs as table lookups, without ``audioop``.

Linear PCM is 16-bit signed little-endian (what a WAV file holds). The encode tables have one
entry per possible 16-bit sample (65536 bytes each) and the decode tables one per code (256),
so coding is a C-level ``map`` over a ``memoryview``; PCMU <-> PCMA transcoding is a single
``bytes.translate``. The tables are computed once, at import, from the segment definitions of
ITU-T G.711 (tables 1a/1b and 2a/2b), not copied from anywhere.
"""

import sys
from array import array

# ITU-T G.711: μ-law works on a 14-bit magnitude with a bias of 33; A-law on 13 bits.
_ULAW_BIAS = 33
_ULAW_CLIP = 8158  # largest 14-bit magnitude that still fits segment 7 once biased
_PCMU_SILENCE = 0xFF  # μ-law code for +0 (G.711 table 2a, all bits inverted)
_PCMA_SILENCE = 0xD5  # A-law code for +0 (G.711 table 1a, even bits inverted)


def _ulaw_encode_sample(sample: int) -> int:
    """Encode one 16-bit linear sample to a μ-law code (ITU-T G.711 table 2a)."""
    mag = sample >> 2  # 16-bit -> 14-bit, floor division keeps the sign symmetric below
    if mag < 0:
        mag = -mag - 1
        sign = 0x00
    else:
        sign = 0x80
    mag = min(mag, _ULAW_CLIP) + _ULAW_BIAS
    segment = mag.bit_length() - 6  # biased magnitude 33..8191 -> segments 0..7
    quant = (mag >> (segment + 1)) & 0x0F
    return (sign | (segment << 4) | quant) ^ 0x7F  # G.711 inverts all magnitude bits


def _ulaw_decode_code(code: int) -> int:
    """Decode one μ-law code to a 16-bit linear sample (reconstruction at the interval centre)."""
    code ^= 0xFF
    segment = (code >> 4) & 0x07
    quant = code & 0x0F
    mag = (((quant << 1) + _ULAW_BIAS) << segment) - _ULAW_BIAS  # 14-bit decision centre
    mag <<= 2
    return -mag if code & 0x80 else mag


def _alaw_encode_sample(sample: int) -> int:
    """Encode one 16-bit linear sample to an A-law code (ITU-T G.711 table 1a)."""
    mag = sample >> 3  # 16-bit -> 13-bit
    if mag < 0:
        mag = -mag - 1
        sign = 0x00
    else:
        sign = 0x80
    mag = min(mag, 4095)
    if mag < 32:
        segment, quant = 0, mag >> 1
    else:
        segment = mag.bit_length() - 5  # 32..4095 -> segments 1..7
        quant = (mag >> segment) & 0x0F
    return (sign | (segment << 4) | quant) ^ 0x55  # G.711 inverts the even bits


def _alaw_decode_code(code: int) -> int:
    """Decode one A-law code to a 16-bit linear sample (reconstruction at the interval centre)."""
    code ^= 0x55
    segment = (code >> 4) & 0x07
    quant = code & 0x0F
    if segment == 0:
        mag = (quant << 1) + 1
    else:
        mag = ((quant << 1) + 33) << (segment - 1)
    mag <<= 3
    return mag if code & 0x80 else -mag


def _encode_table(encode_sample) -> bytes:
    """A 65536-entry table indexed by the unsigned view of a 16-bit sample."""
    return bytes(encode_sample(i - 65536 if i >= 32768 else i) for i in range(65536))


def _decode_table(decode_code) -> array:
    """A 256-entry table of signed 16-bit samples, one per code."""
    return array("h", (decode_code(c) for c in range(256)))


_ULAW_ENC = _encode_table(_ulaw_encode_sample)
_ALAW_ENC = _encode_table(_alaw_encode_sample)
_ULAW_DEC = _decode_table(_ulaw_decode_code)
_ALAW_DEC = _decode_table(_alaw_decode_code)
# Transcoding goes through the reconstructed linear value, as a G.711 gateway does.
_ULAW_TO_ALAW = bytes(_ALAW_ENC[_ULAW_DEC[c] & 0xFFFF] for c in range(256))
_ALAW_TO_ULAW = bytes(_ULAW_ENC[_ALAW_DEC[c] & 0xFFFF] for c in range(256))


def _samples(pcm: bytes) -> memoryview:
    """View little-endian 16-bit PCM as unsigned shorts (table indices)."""
    if len(pcm) % 2:
        raise ValueError("16-bit PCM must have an even number of bytes")
    if sys.byteorder == "little":
        return memoryview(pcm).cast("H")
    swapped = array("H", pcm)
    swapped.byteswap()
    return memoryview(swapped)


def _linear(decoded: array) -> bytes:
    """Little-endian bytes of decoded samples."""
    if sys.byteorder != "little":
        decoded.byteswap()
    return decoded.tobytes()


def ulaw_encode(pcm: bytes) -> bytes:
    """Encode 16-bit signed little-endian PCM to μ-law (PCMU), one byte per sample."""
    return bytes(map(_ULAW_ENC.__getitem__, _samples(pcm)))


def alaw_encode(pcm: bytes) -> bytes:
    """Encode 16-bit signed little-endian PCM to A-law (PCMA), one byte per sample."""
    return bytes(map(_ALAW_ENC.__getitem__, _samples(pcm)))


def ulaw_decode(data: bytes) -> bytes:
    """Decode μ-law bytes to 16-bit signed little-endian PCM."""
    return _linear(array("h", map(_ULAW_DEC.__getitem__, data)))


def alaw_decode(data: bytes) -> bytes:
    """Decode A-law bytes to 16-bit signed little-endian PCM."""
    return _linear(array("h", map(_ALAW_DEC.__getitem__, data)))


def ulaw_to_alaw(data: bytes) -> bytes:
    """Transcode PCMU to PCMA byte for byte."""
    return data.translate(_ULAW_TO_ALAW)


def alaw_to_ulaw(data: bytes) -> bytes:
    """Transcode PCMA to PCMU byte for byte."""
    return data.translate(_ALAW_TO_ULAW)


# Static RTP payload types of RFC 3551 table 4.
PCMU = "PCMU"
PCMA = "PCMA"
STATIC_PAYLOAD_TYPES = {PCMU: 0, PCMA: 8}

_ENCODERS = {PCMU: ulaw_encode, PCMA: alaw_encode}
_DECODERS = {PCMU: ulaw_decode, PCMA: alaw_decode}
_SILENCE = {PCMU: _PCMU_SILENCE, PCMA: _PCMA_SILENCE}


class UnknownCodec(ValueError):
    """A codec name that is neither PCMU nor PCMA."""


def _norm(codec: str) -> str:
    """Canonical upper-case codec name, or UnknownCodec."""
    name = codec.upper()
    if name not in _ENCODERS:
        raise UnknownCodec(codec)
    return name


def encode(codec: str, pcm: bytes) -> bytes:
    """Encode PCM with the named G.711 codec ("PCMU" or "PCMA")."""
    return _ENCODERS[_norm(codec)](pcm)


def decode(codec: str, data: bytes) -> bytes:
    """Decode G.711 bytes of the named codec to PCM."""
    return _DECODERS[_norm(codec)](data)


def silence(codec: str, samples: int) -> bytes:
    """``samples`` bytes of digital silence in the named codec."""
    return bytes((_SILENCE[_norm(codec)],)) * samples


def transcode(src: str, dst: str, data: bytes) -> bytes:
    """Convert G.711 bytes from codec ``src`` to codec ``dst`` (identity when equal)."""
    src, dst = _norm(src), _norm(dst)
    if src == dst:
        return data
    return ulaw_to_alaw(data) if src == PCMU else alaw_to_ulaw(data)
