"""Normalised cross-correlation of two 16-bit PCM signals, in pure Python (FFT, no numpy)."""

import cmath
import math
import struct


def samples(pcm: bytes) -> list[int]:
    """Signed 16-bit little-endian PCM as ints."""
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def _fft(a: list[complex], invert: bool) -> None:
    """In-place iterative radix-2 FFT; len(a) must be a power of two."""
    n = len(a)
    j = 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            a[i], a[j] = a[j], a[i]
    length = 2
    while length <= n:
        w_len = cmath.exp((2j if invert else -2j) * math.pi / length)
        half = length // 2
        ws = [1 + 0j]
        for _ in range(half - 1):
            ws.append(ws[-1] * w_len)
        for start in range(0, n, length):
            for k in range(half):
                u = a[start + k]
                v = a[start + k + half] * ws[k]
                a[start + k] = u + v
                a[start + k + half] = u - v
        length <<= 1
    if invert:
        for i in range(n):
            a[i] /= n


def best_match(needle: list[int], haystack: list[int]) -> tuple[float, int]:
    """(peak normalised correlation in -1..1, lag) of ``needle`` inside ``haystack``."""
    m, n = len(needle), len(haystack)
    if m == 0 or n < m:
        return 0.0, 0
    size = 1
    while size < n + m:
        size <<= 1
    a = [complex(x) for x in haystack] + [0j] * (size - n)
    b = [complex(x) for x in reversed(needle)] + [0j] * (size - m)
    _fft(a, False)
    _fft(b, False)
    prod = [x * y for x, y in zip(a, b, strict=True)]
    _fft(prod, True)
    needle_energy = math.sqrt(sum(x * x for x in needle))
    prefix = [0.0]
    for x in haystack:
        prefix.append(prefix[-1] + x * x)
    best, best_lag = 0.0, 0
    for lag in range(n - m + 1):
        window = math.sqrt(prefix[lag + m] - prefix[lag])
        if window <= 0 or needle_energy <= 0:
            continue
        c = prod[lag + m - 1].real / (window * needle_energy)
        if c > best:
            best, best_lag = c, lag
    return best, best_lag
