"""The rounding kernel equals fpsim.reference bit for bit: every format x mode x overflow policy x
carrier, on format-grid edge inputs, random inputs, and hypothesis-generated inputs."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fpsim
from fpsim import reference
from fpsim.numerics.stats import Stats
from fpsim.kernels.rng import random_bits_py, stream_key
from _inputs import all_formats, assert_same_bits, edge_values, random_values

MODES = ["rne", "rna", "rtz", "rup", "rdn", "rto", "sr"]
POLICIES = ["ieee", "saturate"]
FORMATS = all_formats()


def _cases():
    for fmt in FORMATS:
        for carrier in ("float32", "float64"):
            if carrier == "float32" and not fmt.fits_float32:
                continue
            yield pytest.param(fmt, carrier, id=f"{fmt.spec}-{carrier}")


@functools.lru_cache(maxsize=None)
def _inputs(fmt, carrier):
    return np.concatenate([edge_values(fmt, carrier), random_values(carrier, 200, seed=fmt.bits)])


def _reference(x, fmt, mode, policy, seed):
    key = stream_key(seed, 0)
    out = np.empty(x.size, np.float64)
    ev = np.zeros(x.size, np.int64)
    for i, v in enumerate(x.tolist()):
        out[i], ev[i] = reference.round_with_events(float(v), fmt, mode, policy,
                                                    random_bits_py(key, i))
    return out, ev


@pytest.mark.parametrize("fmt,carrier", list(_cases()))
def test_kernel_equals_reference_all_modes(fmt, carrier):
    """One case per format and carrier, looping over modes and policies (keeps ids readable)."""
    x_all = _inputs(fmt, carrier)
    # The policies differ only for values near or beyond max: saturate runs on those alone.
    with np.errstate(invalid="ignore"):  # signalling-NaN bit patterns warn when widened
        big = ~(np.abs(x_all.astype(np.float64)) < fmt.max / 4)
    for mode in MODES:
        for policy in POLICIES:
            x = x_all if policy == "ieee" else x_all[big]
            y, stats = fpsim.quantize(x, fmt, mode, policy, seed=7, stats=True)
            expected_dtype = np.float32 if carrier == "float32" else np.float64
            assert y.dtype == expected_dtype
            want, ev = _reference(x, fmt, mode, policy, seed=7)
            assert_same_bits(y, want, x, f"{fmt.spec} {mode} {policy} {carrier}")
            counts = [int(((ev >> j) & 1).sum()) for j in range(5)]
            got = [stats.underflow, stats.subnormal, stats.overflow, stats.nan, stats.inexact]
            assert got == counts, f"{fmt.spec} {mode} {policy}: events {got} != reference {counts}"


@pytest.mark.parametrize("mode", MODES)
def test_events_per_element_equal_reference(mode):
    """Event bits element by element (not only their totals) through single-element calls."""
    fmt = fpsim.formats.float8_e4m3fn
    x = edge_values(fmt, "float32")[::7]
    for i, v in enumerate(x):
        _, st1 = fpsim.quantize(np.array([v]), fmt, mode, stats=True)
        _, ev = reference.round_with_events(float(v), fmt, mode, "ieee",
                                            random_bits_py(stream_key(0, 0), 0))
        got = (st1.underflow, st1.subnormal, st1.overflow, st1.nan, st1.inexact)
        assert got == tuple((ev >> j) & 1 for j in range(5)), f"x={v!r}"


_fmt_strategy = st.sampled_from(FORMATS)


@settings(max_examples=150, deadline=None)
@given(fmt=_fmt_strategy, mode=st.sampled_from(MODES), policy=st.sampled_from(POLICIES),
       x=hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(allow_nan=True, allow_infinity=True)),
       seed=st.integers(0, 2**63 - 1))
def test_hypothesis_float64_inputs(fmt, mode, policy, x, seed):
    y = fpsim.quantize(x, fmt, mode, policy, seed=seed)
    want = reference.quantize(x, fmt, mode, policy, seed=seed)
    assert_same_bits(y, want, x, f"{fmt.spec} {mode} {policy}")


@settings(max_examples=150, deadline=None)
@given(fmt=st.sampled_from([f for f in FORMATS if f.fits_float32]), mode=st.sampled_from(MODES),
       x=hnp.arrays(np.float32, st.integers(1, 40), elements=st.floats(width=32)))
def test_hypothesis_float32_inputs(fmt, mode, x):
    y = fpsim.quantize(x, fmt, mode)
    assert y.dtype == np.float32
    assert_same_bits(y, reference.quantize(x, fmt, mode), x, f"{fmt.spec} {mode}")


def test_limited_bit_sr_matches_reference():
    fmt = fpsim.formats.bfloat16
    x = random_values("float32", 2000, seed=3)
    for k in (1, 2, 5, 13, 62):
        y = fpsim.quantize(x, fmt, "sr", seed=11, sr_bits=k)
        key = stream_key(11, 0)
        want = [reference.round_value(float(v), fmt, "sr", rnd=random_bits_py(key, i), sr_bits=k)
                for i, v in enumerate(x)]
        assert_same_bits(y, np.array(want), x, f"sr_bits={k}")


def test_stats_add_and_equality():
    x = random_values("float32", 1000, seed=5)
    _, a = fpsim.quantize(x[:500], "fp16", stats=True)
    _, b = fpsim.quantize(x[500:], "fp16", stats=True)
    _, ab = fpsim.quantize(x, "fp16", stats=True)
    assert a + b == ab
    assert isinstance(ab, Stats) and ab.total == 1000
