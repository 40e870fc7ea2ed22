"""Scaled and block formats: the kernels against the slow Fraction reference, bit for bit.

Values, element codes, scale codes and Stats are compared on structured blocks (all-zero, one
non-zero, amax exactly a power of two and its float32 neighbours, subnormal-only, Inf, NaN,
scales below E8M0's / E4M3's range, huge values, signed zeros, ragged last blocks) and on random
data in every preset x rounding mode. Hand-derived examples follow the rules' text; delayed
scaling is checked against Transformer Engine's update written out here.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import fpsim
from fpsim.numerics import scaled
from fpsim.numerics.scaled import PRESETS, DelayedScaling, ScaledFormat
from fpsim.reference import scaled as ref

MODES = ["rne", "rna", "rtz", "rup", "rdn", "rto", "sr"]
F = np.float32


def _structured(k: int, rng) -> np.ndarray:
    """One row per structured case, ``k`` elements each."""
    rows = [np.zeros(k, F)]
    one = np.zeros(k, F)
    one[min(3, k - 1)] = -2.5
    rows.append(one)
    rows.append(np.linspace(-4, 4, k, dtype=F))  # amax exactly 4
    for toward in (F(0), F(100)):  # amax just below / just above 8
        r = rng.standard_normal(k).astype(F)
        r[0] = np.nextafter(F(8), toward)
        rows.append(r)
    rows.append((rng.standard_normal(k) * 1e-40).astype(F))  # float32 subnormals only
    for special in (np.inf, -np.inf, np.nan):
        r = rng.standard_normal(k).astype(F)
        r[min(2, k - 1)] = special
        rows.append(r)
    rows.append((rng.standard_normal(k) * 1e-37).astype(F))  # E8M0 scale clamps at 2^-127
    rows.append((rng.standard_normal(k) * 8e37).astype(F))  # near float32's top
    rows.append((rng.standard_normal(k) * np.exp(rng.uniform(-20, 20, k))).astype(F))
    signed = rng.standard_normal(k).astype(F)
    signed[:2] = (-0.0, 0.0)
    rows.append(signed)
    return np.stack(rows)


def _same_floats(a, b) -> bool:
    """Bitwise equality, except that any NaN equals any NaN (NaN payloads are not defined)."""
    a, b = np.asarray(a, F), np.asarray(b, F)
    nan = np.isnan(a) & np.isnan(b)
    return a.shape == b.shape and bool(np.all(nan | (a.view(np.uint32) == b.view(np.uint32))))


def _check(x, sf: ScaledFormat, mode="rne", seed=3):
    """Kernel == reference for values, codes, scale codes, tensor scale and element Stats."""
    enc_scale = 1.0 if sf.delayed else None
    e = fpsim.encode(x, sf, rounding=mode, seed=seed, state=sf.state())
    v, st = fpsim.quantize(x, sf, rounding=mode, seed=seed, stats=True, state=sf.state())
    r = ref.quantize(x, sf, mode, seed=seed, enc_scale=enc_scale)
    assert _same_floats(v, r["values"]), sf.name
    codes = r["codes"]
    if sf.int_elements:
        codes = scaled._sign_magnitude_to_twos(codes)
    np.testing.assert_array_equal(e[0].astype(np.int64), codes)
    np.testing.assert_array_equal(e[1].astype(np.int64), r["scales"])
    assert e.tensor_scale == r["tensor_scale"]
    # Element Stats: the core's rounding of the reference's scaled values, same mode and bits.
    _, want = fpsim.quantize(r["y"], sf.element, mode, sf.overflow, seed, stats=True)
    assert st.elements == want
    assert _same_floats(fpsim.decode(e, sf), v)


CASES = [pytest.param(sf, id=name) for name, sf in PRESETS.items()]


@pytest.mark.parametrize("sf", CASES)
def test_structured_blocks_match_reference(sf):
    rng = np.random.default_rng(0)
    k = 32 if sf.tile is None else sf.tile[1]
    x = _structured(k, rng)
    if sf.tile is None:  # per-tensor rules: every structured row is a tensor of its own
        for row in x:
            _check(row, sf)
    else:
        _check(x, sf)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sf", CASES)
def test_random_data_every_mode_matches_reference(sf, mode):
    rng = np.random.default_rng(abs(hash((sf.name, mode))) % 2**32)
    shape = (3, 48) if sf.tile is None or sf.tile[0] == 1 else (130, 3)
    x = (rng.standard_normal(shape) * np.exp(rng.uniform(-6, 6, shape))).astype(F)
    _check(x, sf, mode, seed=11)


@pytest.mark.parametrize("name", ["mxfp4_e2m1", "nvfp4", "fp8_tile_1x128"])
def test_ragged_last_block(name):
    sf = PRESETS[name]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, sf.tile[1] + 7)).astype(F)
    _check(x, sf)
    assert fpsim.encode(x, name)[1].shape == (2, 2)


def test_2d_tiles_ragged_over_both_axes_and_batch():
    sf = dataclasses.replace(PRESETS["fp8_tile_128x128"], tile=(4, 8), name="t4x8")
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((2, 9, 13)) * np.exp(rng.uniform(-3, 3, (2, 9, 13)))).astype(F)
    _check(x, sf)
    assert fpsim.encode(x, sf)[1].shape == (2, 3, 2)
    _check(x, dataclasses.replace(sf, pow2=True))


def test_scale_overflow_of_a_narrow_scale_format():
    """E8M0 cannot overflow for float32 inputs (floor(log2 amax) <= 127, emax_elem >= 0); a
    5-bit scale format can: its blocks become NaN, counted as scale overflow."""
    sf = ScaledFormat("mx_e5m0", "float8_e4m3fn", "mx", tile=(1, 8), scale="ue5m0fn-nozero")
    x = np.array([[1e9] * 8, [1e-12] * 8, [1.0] * 8], F)
    _check(x, sf)
    v, st = fpsim.quantize(x, sf, stats=True)
    assert np.isnan(v[0]).all() and not np.isnan(v[1:]).any()
    assert (st.scale_overflow, st.scale_underflow, st.tiles) == (1, 1, 3)


def test_scale_stats_count_clamped_and_nonfinite_blocks():
    x = np.stack([np.full(32, 1e-39, F), np.ones(32, F), np.r_[np.nan, np.ones(31)].astype(F),
                  np.zeros(32, F)])
    _, st = fpsim.quantize(x, "mxfp8_e4m3", stats=True)
    assert st.tiles == 4
    assert st.scale_underflow == 1  # 2^(-130 - 8) is below E8M0's 2^-127: clamped
    assert st.nonfinite_tiles == 1
    assert st.elements.total == 128


def test_parallel_equals_one_thread():
    import numba
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((512, 256)) * np.exp(rng.uniform(-8, 8, (512, 256)))).astype(F)
    names = ["mxfp8_e4m3", "nvfp4", "fp8_current", "fp8_tile_128x128", "s2fp8"]
    before = numba.get_num_threads()
    try:
        many = [fpsim.encode(x, n, rounding="sr", seed=2) for n in names]
        numba.set_num_threads(1)
        one = [fpsim.encode(x, n, rounding="sr", seed=2) for n in names]
    finally:
        numba.set_num_threads(before)
    for a, b in zip(many, one):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


# ---- hand-derived examples from the rules' text ------------------------------------------------
def test_ocp_mx_section_6_3_examples():
    """OCP MX v1.0 section 6.3: X = largest power of two <= amax, divided by the element's
    largest power of two; V/X rounded, normals above max clamped to max."""
    # E2M1 (emax 2): amax 3 -> X = 2 / 4 = 0.5, 3 / 0.5 = 6 exactly; amax 7 -> X = 4 / 4 = 1,
    # 7 clamps to 6; 0.3 / 0.5 = 0.6 rounds to 0.5 (the E2M1 grid 0, 0.5, 1, 1.5, 2, 3, 4, 6).
    x = np.zeros((2, 32), F)
    x[0, :3] = (3.0, 0.3, -1.1)
    x[1, :2] = (7.0, 2.4)
    e = fpsim.encode(x, "mxfp4_e2m1")
    np.testing.assert_array_equal(e[1], [[127 - 1]] * 1 + [[127]])
    v = fpsim.quantize(x, "mxfp4_e2m1")
    np.testing.assert_array_equal(v[0, :3], [3.0, 0.25, -1.0])
    np.testing.assert_array_equal(v[1, :2], [6.0, 2.0])
    # E4M3 (emax 8): amax 448 -> X = 256 / 256 = 1: values unscaled, the E4M3 cast itself.
    y = np.full((1, 32), 0.1, F)
    y[0, 0] = 448.0
    np.testing.assert_array_equal(fpsim.quantize(y, "mxfp8_e4m3")[0, :2], [448.0, 0.1015625])
    # An all-zero block takes the smallest E8M0 scale (code 0); elements stay zero.
    z = fpsim.encode(np.zeros((1, 32), F), "mxfp8_e4m3")
    assert z[1][0, 0] == 0 and not z[0].any()
    # MXINT8: codes are two's complement k with value k * 2^-6 * X; amax 1 -> X = 1.
    i8 = np.zeros((1, 32), F)
    i8[0, :3] = (1.0, -0.5, -1.984375)
    e = fpsim.encode(i8, "mxint8")
    np.testing.assert_array_equal(e[0][0, :3], [64, 256 - 32, 256 - 127])
    assert e[1][0, 0] == 127


def test_nvfp4_worked_example():
    """NVFP4 in Transformer Engine's order: tensor amax 12 gives encode scale 2688 / 12 = 224;
    a block with amax 3 gets E4M3(3 * 224 / 6) = E4M3(112) = 112, elements x * 1 / (112 / 224)
    = 2x; the element 1.3 -> 2.6 -> E2M1 3 -> dequantized 3 * 0.5 = 1.5."""
    x = np.zeros((1, 32), F)
    x[0, 0] = 12.0
    x[0, 16:18] = (3.0, 1.3)
    e = fpsim.encode(x, "nvfp4")
    gdec = np.array(e.tensor_scale, np.uint32).view(np.float32)
    assert gdec == np.float32(1 / np.float32(224.0))
    s = fpsim.decode(e[1], "float8_e4m3fn")
    assert s[0, 1] == 112.0 and s[0, 0] == 448.0
    v = fpsim.quantize(x, "nvfp4")
    assert v[0, 0] == 12.0 and v[0, 16] == 3.0 and v[0, 17] == 1.5


def test_s2fp8_maps_mean_to_one_and_max_to_2_15():
    x = np.array([1.0, 2.0, 4.0, 8.0, -16.0, 0.0], F)  # log2: 0..4, mean 2, max 4
    e = fpsim.encode(x, "s2fp8")
    alpha, beta = np.asarray(e[1], np.uint32).view(np.float32)
    assert alpha == 7.5 and beta == -15.0  # 15 / (4 - 2), -alpha * 2
    y = fpsim.decode(e[0], "float8_e5m2")
    assert y[2] == 1.0 and y[4] == -2.0 ** 15 and y[5] == 0.0
    exact = [0, 2, 4, 5]  # y = 2^-15, 1, -2^15, 0 are E5M2 values; 2 and 8 map to 2^-7.5, 2^7.5
    np.testing.assert_array_equal(fpsim.quantize(x, "s2fp8")[exact], x[exact])
    const = np.full(8, -0.3, F)  # one magnitude: alpha 1, values map to 1 and back
    np.testing.assert_array_equal(fpsim.quantize(const, "s2fp8"), const)
    np.testing.assert_array_equal(fpsim.quantize(np.zeros(4, F), "s2fp8"), np.zeros(4, F))


# ---- delayed scaling ---------------------------------------------------------------------------
def _te_delayed(amaxes, history, algo, fp8_max, margin):
    """Transformer Engine's delayed scaling written out: each step casts with the current scale,
    writes its amax into slot 0, takes max(history) (or slot 0), computes
    scale = fp8_max * 2^-margin / amax when that is finite and > 0, rolls the history by -1 and
    zeroes slot 0."""
    h = np.zeros(history, np.float32)
    scale = np.float32(1.0)
    used, hists = [], []
    for a in amaxes:
        used.append(scale)
        h[0] = a
        amax = h.max() if algo == "max" else h[0]
        if np.isfinite(amax) and amax > 0:
            scale = np.float32(np.float32(fp8_max * 2.0 ** -margin) / np.float32(amax))
        h = np.roll(h, -1)
        h[0] = 0
        hists.append(h.copy())
    return used, hists


@pytest.mark.parametrize("algo", ["max", "most_recent"])
def test_delayed_scaling_follows_transformer_engine(algo):
    sf = dataclasses.replace(PRESETS["fp8_delayed"], history=4, algo=algo, margin=1)
    rng = np.random.default_rng(9)
    mags = [3.0, 100.0, 0.0, 0.5, np.inf, 7.0, 2e-3, 2e-3, 2e-3, 2e-3, 50.0]
    xs = []
    for m in mags:
        x = (rng.standard_normal(64) * (1 if np.isfinite(m) else 1)).astype(F)
        x = x / np.abs(x).max() * F(m) if np.isfinite(m) and m > 0 else (
            np.zeros(64, F) if m == 0 else np.r_[np.inf, x[1:]].astype(F))
        xs.append(x)
    amaxes = [np.float32(np.abs(x).max()) for x in xs]
    used, hists = _te_delayed(amaxes, 4, algo, 448.0, 1)
    state = sf.state()
    for x, scale, h in zip(xs, used, hists):
        assert state.scale == scale
        v = fpsim.quantize(x, sf, state=state)
        r = ref.quantize(x, sf, enc_scale=float(scale))
        assert _same_floats(v, r["values"])
        np.testing.assert_array_equal(state.amax_history, h)
    restored = DelayedScaling(4)
    restored.load_state_dict(state.state_dict())
    assert restored.scale == state.scale and np.array_equal(restored.amax_history,
                                                            state.amax_history)


def test_current_scaling_rule():
    x = np.array([0.5, -3.0, 1e-3], F)
    e = fpsim.encode(x, "fp8_current")
    dec = np.asarray(e[1], np.uint32).view(np.float32)
    assert dec == np.float32(1 / np.float32(448 / np.float32(3.0)))
    assert np.asarray(fpsim.encode(np.zeros(3, F), "fp8_current")[1]).view(np.float32) == 1.0
    pow2 = dataclasses.replace(PRESETS["fp8_current"], pow2=True)
    assert scaled.tensor_scale(3.0, 448.0, 0, True) == 128.0  # 149.33 down to a power of two
    _check(x, pow2)


# ---- errors ------------------------------------------------------------------------------------
def test_errors_name_the_problem():
    with pytest.raises(TypeError, match="float32"):
        fpsim.quantize(np.ones(32), "mxfp8_e4m3")
    with pytest.raises(ValueError, match="state="):
        fpsim.quantize(np.ones(32, F), "fp8_delayed")
    with pytest.raises(ValueError, match="do not fit"):
        fpsim.decode((np.zeros((2, 32), np.uint8), np.zeros((2, 2), np.uint8)), "mxfp8_e4m3")
    with pytest.raises(ValueError, match="-128"):
        fpsim.decode((np.full((1, 32), 0x80, np.uint8), np.zeros((1, 1), np.uint8)), "mxint8")
    with pytest.raises(ValueError, match="tensor scale"):
        fpsim.decode((np.zeros((1, 16), np.uint8), np.zeros((1, 1), np.uint8)), "nvfp4")
    with pytest.raises(ValueError, match="rule"):
        ScaledFormat("x", "e4m3", "blocky", tile=(1, 4))
    with pytest.raises(ValueError, match="E\\*M0"):
        ScaledFormat("x", "e4m3", "mx", tile=(1, 4), scale="e4m3")
    with pytest.raises(ValueError, match="out="):
        fpsim.quantize(np.ones(32, F), "mxfp8_e4m3", out=np.empty(32, F))
