"""Counter-based random bits: ``random_bits(key, index)`` is a pure function, so stochastic
rounding gives the same bits on any thread count and on the GPU.

The generator is SplitMix64 evaluated at an arbitrary position: the ``index``-th output of the
SplitMix64 sequence that starts at ``key`` is ``mix64(key + (index + 1) * GOLDEN)``, where
``mix64`` is the SplitMix64 finalizer (Steele, Lea & Flood 2014; constants from Stafford's
"Mix13" variant). SplitMix64 passes BigCrush; evaluating it at ``index`` instead of stepping it
is what makes it counter-based. ``key`` comes from ``(seed, stream)`` through :func:`stream_key`
(two more finalizer rounds), so distinct streams start at unrelated points of the 2^64 cycle.
"""

from __future__ import annotations

import numpy as np
from numba import njit

GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1

_G = np.uint64(GOLDEN)
_M1 = np.uint64(MIX1)
_M2 = np.uint64(MIX2)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_S2 = np.uint64(2)


@njit(cache=True, inline="always")
def mix64(z):
    """SplitMix64 finalizer of a uint64 (wrapping multiplies)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def random_bits(key, index):
    """62 uniform random bits (an int64 in [0, 2^62)) for element ``index`` of stream ``key``."""
    z = mix64(np.uint64(key) + (np.uint64(index) + np.uint64(1)) * _G)
    return np.int64(z >> _S2)


def _mix64_py(z: int) -> int:
    z &= _MASK64
    z = ((z ^ (z >> 30)) * MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * MIX2) & _MASK64
    return z ^ (z >> 31)


def stream_key(seed: int, stream: int = 0) -> int:
    """The 64-bit key of random stream ``stream`` under ``seed`` (both any Python ints)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if isinstance(stream, bool) or not isinstance(stream, (int, np.integer)):
        raise TypeError(f"stream must be an int, got {type(stream).__name__}")
    return _mix64_py(_mix64_py(int(seed) ^ 0x5EED5EED5EED5EED) ^ ((int(stream) * GOLDEN) & _MASK64))


def random_bits_py(key: int, index: int) -> int:
    """Pure-Python twin of :func:`random_bits` (the definition tests compare against)."""
    return _mix64_py((key + (index + 1) * GOLDEN) & _MASK64) >> 2
