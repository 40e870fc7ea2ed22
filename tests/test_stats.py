"""Stats from the rounding kernel equal counts recomputed independently from inputs and outputs."""

from __future__ import annotations

import numpy as np
import pytest

import fpsim
from fpsim.numerics.stats import Stats
from _inputs import edge_values, random_values


def _recount(x, y, fmt):
    """Event counts from their definitions (numpy, no rounding logic)."""
    with np.errstate(invalid="ignore"):
        x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    xn, yn = np.isnan(x64), np.isnan(y64)
    with np.errstate(invalid="ignore"):
        return {
            "underflow": int(((y64 == 0) & (x64 != 0) & ~xn & ~yn).sum()),
            "subnormal": int(((y64 != 0) & np.isfinite(y64) & (np.abs(y64) < fmt.min_normal)).sum()),
            "nan": int((yn & ~xn).sum()),
            "inexact": int((~xn & ((y64 != x64) | yn)).sum()),
        }


def _hist(x):
    """(binade counts by floor(log2|x|), zeros, infs, nans) by np.frexp, exact for subnormals."""
    with np.errstate(invalid="ignore"):  # signalling NaN patterns warn when widened
        x64 = np.asarray(x, np.float64)
    finite = np.isfinite(x64) & (x64 != 0)
    _, e = np.frexp(x64[finite])
    k = e.astype(np.int64) - 1
    counts = np.bincount(k + 1074, minlength=2098)
    return counts, int((x64 == 0).sum()), int(np.isinf(x64).sum()), int(np.isnan(x64).sum())


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2fnuz",
                                  "float4_e2m1fn", "float8_e8m0fnu", "e5m10-nosub", "e11m4"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_stats_equal_independent_recount(name, dtype):
    fmt = fpsim.format(name)
    x = np.concatenate([edge_values(fmt, dtype), random_values(dtype, 100_000, seed=6)])
    y, st = fpsim.quantize(x, fmt, stats=True)
    assert st.total == x.size
    for event, count in _recount(x, y, fmt).items():
        assert getattr(st, event) == count, f"{event}: kernel {getattr(st, event)}, recount {count}"
    # RNE with ieee overflow: an overflow is a non-NaN input whose result is Inf or a new NaN
    # (or, for formats with neither, the saturated max from a larger input).
    with np.errstate(invalid="ignore"):
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        if fmt.has_inf:
            ovf = np.isinf(y64) & ~np.isinf(x64)
        elif fmt.has_nan:
            ovf = np.isnan(y64) & ~np.isnan(x64) & ~((x64 == 0) | ((x64 < 0) & (not fmt.signed)))
        else:
            ovf = ~np.isnan(x64) & (np.abs(x64) > fmt.max) & (np.abs(y64) == fmt.max) & (
                np.abs(x64) >= fmt.max + 2.0 ** (fmt.emax - fmt.man_bits) / 2)
    assert st.overflow == int(ovf.sum())
    counts, zeros, infs, nans = _hist(x)
    assert np.array_equal(st.exp_hist, counts)
    assert (st.hist_zero, st.hist_inf, st.hist_nan) == (zeros, infs, nans)


def test_histogram_of_subnormal_inputs():
    x64 = np.array([5e-324, 1e-310, 2.0 ** -1022, 3 * 2.0 ** -1070, -0.0, np.inf, np.nan])
    _, st = fpsim.quantize(x64, "fp16", stats=True)
    k, c = st.binades()
    assert {a: b for a, b in zip(k.tolist(), c.tolist()) if b} == {-1074: 1, -1030: 1, -1069: 1, -1022: 1}
    assert (k[0], k[-1]) == (-1074, -1022) and (st.hist_zero, st.hist_inf, st.hist_nan) == (1, 1, 1)
    x32 = np.array([1e-45, 2.0 ** -140, 2.0 ** -126, 1.0], np.float32)
    _, st = fpsim.quantize(x32, "bf16", stats=True)
    k, c = st.binades()
    assert {a: b for a, b in zip(k.tolist(), c.tolist()) if b} == {-149: 1, -140: 1, -126: 1, 0: 1}
    assert st.exp_edges[k[0] + 1074] == 2.0 ** -149


def test_stats_rate_and_empty():
    y, st = fpsim.quantize(np.array([1e-9, 1.0, 2.0, 3.0], np.float32), "fp16", stats=True)
    assert st.rate("underflow") == 0.25 and st.rate("inexact") == 0.25
    _, empty = fpsim.quantize(np.zeros(0, np.float32), "fp16", stats=True)
    assert empty == Stats() and empty.rate("underflow") == 0.0


def test_stats_count_inputs_when_rounding_in_place():
    """With out=x the histogram must still describe the inputs (each block is read before any
    of its outputs is written)."""
    x = np.concatenate([random_values("float32", 50_000, seed=11),
                        np.array([1e-9, 70000, 3e-6, 1.0001, np.inf, 1e-45], np.float32)])
    want_y, want = fpsim.quantize(x, "fp16", stats=True)
    y = x.copy()
    got_y, got = fpsim.quantize(y, "fp16", stats=True, out=y)
    assert got_y is y and got == want
    assert np.array_equal(y.view(np.uint32), want_y.view(np.uint32))


def _event_free_blocks(fmt, dtype, seed):
    """Runs of 3 x 2048 inputs inside ``min_normal <= |x| < 2^floor(log2 max)`` (exact ones,
    inexact ones and zeros: the rounding loop then skips the event word) alternating with runs
    holding one input of each other class (subnormal results, underflow, the top binade,
    overflow, Inf, NaN, carrier subnormals)."""
    rng = np.random.default_rng(seed)
    top = 2.0 ** np.floor(np.log2(fmt.max))
    runs = []
    for r in range(6):
        mag = np.exp2(rng.uniform(np.log2(fmt.min_normal), np.log2(top), 3 * 2048))
        mag[::5] = fpsim.quantize(mag[::5], fmt)  # exact inputs
        mag[::7] = 0.0
        x = (mag * rng.choice([-1.0, 1.0], mag.size)).astype(dtype)
        x[0], x[-1] = fmt.min_normal, np.nextafter(dtype.type(top), dtype.type(0))
        runs.append(x)
        with np.errstate(over="ignore"):  # -4 max of bfloat16 is -Inf in float32: wanted
            odd = np.array([fmt.min_normal / 3, fmt.min_subnormal / 4, top, fmt.max,
                            -4 * fmt.max, np.inf, np.nan, np.finfo(dtype).smallest_subnormal,
                            -0.0], dtype)
        runs.append(np.concatenate([odd[r:r + 1 + r % 3], x[:700 * r]]))
    return np.concatenate(runs)


@pytest.mark.parametrize("mode", ["rne", "rna", "rtz", "rup", "rdn", "rto", "sr"])
@pytest.mark.parametrize("name", ["float16", "bfloat16", "float8_e4m3fn", "float8_e5m2",
                                  "float4_e2m1fn", "float8_e5m2fnuz"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_stats_of_event_free_blocks_equal_recount(mode, name, dtype):
    """Blocks whose inputs all lie in the format's normal range below its top binade are
    rounded without the per-element event word (their inexact count comes from the input
    fractions); their Stats and results must equal an independent recount and the plain call."""
    fmt = fpsim.format(name)
    x = _event_free_blocks(fmt, np.dtype(dtype), seed=len(name))
    y, st = fpsim.quantize(x, fmt, mode, seed=5, stats=True)
    plain = fpsim.quantize(x, fmt, mode, seed=5)
    assert np.array_equal(y.view(np.uint8), plain.view(np.uint8))
    assert st.total == x.size
    for event, count in _recount(x, y, fmt).items():
        assert getattr(st, event) == count, f"{event}: kernel {getattr(st, event)}, recount {count}"
    with np.errstate(invalid="ignore"):
        huge = np.abs(x.astype(np.float64)) == 4 * fmt.max
    assert st.overflow == int(huge.sum()) + (int(np.isinf(x).sum()) if not fmt.has_inf else 0)
    counts, zeros, infs, nans = _hist(x)
    assert np.array_equal(st.exp_hist, counts)
    assert (st.hist_zero, st.hist_inf, st.hist_nan) == (zeros, infs, nans)
