"""Stochastic rounding: reproducible, independent of threads and chunking, unbiased, with
probabilities equal to the distance to the neighbours, and limited-bit SR as defined.

Statistical bounds: each check draws N independent roundings of one value and accepts a deviation
of 5 standard errors (a false failure has probability below 6e-7 per check).
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

import fpsim
from fpsim.numerics import config
from fpsim.kernels.rng import random_bits, random_bits_py, stream_key

N = 1 << 20
Z = 5.0


def _up_fraction(fmt, x, sr_bits=None, seed=1):
    lo = float(fpsim.quantize(x, fmt, "rtz"))
    hi = float(fpsim.quantize(x, fmt, "rup" if x > 0 else "rdn"))
    y = fpsim.quantize(np.full(N, x), fmt, "sr", seed=seed, sr_bits=sr_bits)
    assert set(np.unique(y).tolist()) <= {lo, hi}
    return float(np.mean(y == hi)), lo, hi, y


@pytest.mark.parametrize("fmt,x", [
    ("bfloat16", 1 + 0.3 * 2 ** -7),
    ("bfloat16", -(1 + 0.7 * 2 ** -7)),
    ("float16", 2.0 ** -24 * 0.25),        # below the smallest subnormal: neighbours 0 and 2^-24
    ("float8_e4m3fn", 300.0),              # top binade: neighbours 288 and 320
    ("float8_e5m2", 2.0 ** -16 * 2.5),     # subnormal range
])
def test_sr_probability_equals_distance(fmt, x):
    p, lo, hi, _ = _up_fraction(fmt, x)
    want = (abs(x) - abs(lo)) / (abs(hi) - abs(lo))
    sigma = np.sqrt(want * (1 - want) / N)
    assert abs(p - want) <= Z * sigma, f"P(up)={p}, distance={want}, 5 sigma={Z * sigma}"


@pytest.mark.parametrize("fmt,x", [("bfloat16", 1 + 0.3 * 2 ** -7), ("float8_e4m3fn", 0.0123)])
def test_sr_is_unbiased(fmt, x):
    _, lo, hi, y = _up_fraction(fmt, x)
    f = (x - lo) / (hi - lo)
    sigma = (hi - lo) * np.sqrt(f * (1 - f) / N)
    assert abs(y.mean() - x) <= Z * sigma, f"mean {y.mean()!r} vs {x!r}, bound {Z * sigma}"


@pytest.mark.parametrize("k", [1, 2, 3, 8])
def test_limited_bit_sr_probability(k):
    """With k random bits the probability is floor(distance * 2^k) / 2^k (truncated remainder)."""
    fmt, x = "bfloat16", 1 + 0.3 * 2 ** -7
    p, *_ = _up_fraction(fmt, x, sr_bits=k)
    want = np.floor(0.3 * 2 ** k) / 2 ** k
    sigma = np.sqrt(max(want * (1 - want), 1e-12) / N)
    assert abs(p - want) <= Z * sigma + 1e-12, f"k={k}: P(up)={p}, want {want}"


def test_sr_same_seed_same_bits_other_seed_or_stream_differs():
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    a = fpsim.quantize(x, "bf16", "sr", seed=42)
    b = fpsim.quantize(x, "bf16", "sr", seed=42)
    c = fpsim.quantize(x, "bf16", "sr", seed=43)
    d = fpsim.quantize(x, "bf16", "sr", seed=42, stream=1)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_sr_independent_of_thread_count_and_chunking(monkeypatch):
    x = np.random.default_rng(1).standard_normal(300_000)
    want, want_stats = fpsim.quantize(x, "e5m2", "sr", seed=9, stats=True)
    saved = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one, one_stats = fpsim.quantize(x, "e5m2", "sr", seed=9, stats=True)
    finally:
        numba.set_num_threads(saved)
    monkeypatch.setattr(config, "MIN_CHUNK", 1000)
    monkeypatch.setattr(config, "CHUNKS_PER_THREAD", 97)
    many, many_stats = fpsim.quantize(x, "e5m2", "sr", seed=9, stats=True)
    for other in (one, many):
        assert np.array_equal(want.view(np.uint64), other.view(np.uint64))
    assert want_stats == one_stats == many_stats


def test_random_bits_kernel_equals_python_definition():
    rng = np.random.default_rng(5)
    for seed, stream in [(0, 0), (1, 0), (2**63 + 5, 3), (-7, 2**40)]:
        key = stream_key(seed, stream)
        for i in [0, 1, 2, 1000, 2**31, 2**40 + 3, *rng.integers(0, 2**62, 20).tolist()]:
            assert int(random_bits(np.uint64(key), i)) == random_bits_py(key, i)


def test_random_bits_are_uniform():
    """Each of the 62 bits is 1 with probability 1/2 (5 sigma over 2^16 draws)."""
    key = stream_key(123, 0)
    draws = np.array([random_bits_py(key, i) for i in range(1 << 16)], dtype=np.int64)
    n = draws.size
    for bit in range(62):
        p = ((draws >> bit) & 1).mean()
        assert abs(p - 0.5) <= Z * np.sqrt(0.25 / n), f"bit {bit}: {p}"
