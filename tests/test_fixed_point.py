"""Fixed-point and integer-grid formats against the Fraction oracle (fpsim.reference.fixed),
numpy's own integer rounding, and the statistics of stochastic rounding."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import fpsim
from fpsim.kernels.rng import random_bits_py, stream_key
from fpsim.numerics import config
from fpsim.numerics.fixed import Fixed, IntGrid, parse_fixed_spec
from fpsim.numerics.modes import Event
from fpsim.reference import fixed as ref

MODES = ["rne", "rna", "rtz", "rup", "rdn", "rto", "sr"]
POLICIES = ["saturate", "wrap", "error"]

#: Formats covering the cases: power-of-two steps (Q-formats, integers, a tiny step, a point
#: outside the word), steps that are not powers of two (0.1, 3·2^-10, 1/3, a tiny odd one),
#: unsigned and symmetric ranges, the widest (53 bits).
FORMATS = [
    Fixed(8, 4), Fixed(8, 0), Fixed(4, 0), Fixed(8, 8, signed=False), Fixed(16, 8),
    Fixed(8, 7, symmetric=True), Fixed(12, 40, any_point=True), Fixed(6, -3, any_point=True),
    Fixed(53, 20), Fixed(25, 0),
    IntGrid(8, 0.1), IntGrid(8, 3 * 2.0 ** -10), IntGrid(4, 1 / 3), IntGrid(8, 0.05, symmetric=True),
    IntGrid(8, 0.7, signed=False), IntGrid(16, 1e-30), IntGrid(53, 0.1), IntGrid(30, 12345.678),
]


def _ids(fmts):
    return [str(f) for f in fmts]


def structured_inputs(fmt, rng, n_random=300):
    """Boundaries of ``fmt``: ties, exact grid points and their float neighbours, ±max, just
    outside the range, zeros, specials, float64 subnormals, and random values over the range
    and far beyond it."""
    d = Fraction(fmt.delta)
    ks = sorted({fmt.k_min, fmt.k_min + 1, -3, -2, -1, 0, 1, 2, 3, fmt.k_max - 1, fmt.k_max,
                 fmt.k_max + 1, fmt.k_min - 1, fmt.k_max + 2})
    xs = []
    for k in ks:
        for num in (Fraction(k), Fraction(2 * k + 1, 2), Fraction(4 * k + 1, 4), Fraction(4 * k + 3, 4)):
            v = float(num * d)
            if math.isfinite(v):
                xs += [v, np.nextafter(v, np.inf), np.nextafter(v, -np.inf)]
                f32 = float(np.float32(v))
                if math.isfinite(f32):
                    xs += [f32]
    xs += [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 2.2250738585072014e-308,
           1e300, -1e300, 1.7976931348623157e308]
    span = max(abs(fmt.k_min), fmt.k_max) * fmt.delta
    xs += list(rng.uniform(-1.5 * span, 1.5 * span, n_random))
    xs += list(np.exp(rng.uniform(-200, 200, n_random // 3)) * rng.choice([-1, 1], n_random // 3))
    return np.array(xs, np.float64)


def _check(x, fmt, mode, policy, *, seed=3, sr_bits=None, dtype=np.float64):
    """Kernel quantize/encode/Stats of ``x`` equal the reference element by element."""
    x = np.asarray(x, dtype)
    srk = 62 if sr_bits is None else sr_bits
    key = stream_key(seed, 0)
    want_k, want_ev = [], []
    for i, v in enumerate(x.tolist()):
        rnd = random_bits_py(key, i) if mode == "sr" else 0
        k, ev = ref.round_grid(v, fmt, mode, policy, rnd, srk)
        want_k.append(k)
        want_ev.append(ev)
    if policy == "error":
        if any(k is None and (ev & Event.OVERFLOW) for k, ev in zip(want_k, want_ev)):
            with pytest.raises(ValueError, match="outside the range"):
                fpsim.quantize(x, fmt, mode, policy, seed=seed, sr_bits=sr_bits)
        # The values that no rounding takes out of the range (exactly), with their references
        # recomputed: stochastic rounding's bits follow the index.
        lo, hi = fmt.k_min * Fraction(fmt.delta), fmt.k_max * Fraction(fmt.delta)
        x = np.array([v for v in x.tolist() if math.isnan(v) or (math.isfinite(v) and lo <= Fraction(v) <= hi)],
                     x.dtype)
        pairs = [ref.round_grid(v, fmt, mode, policy, random_bits_py(key, i) if mode == "sr" else 0, srk)
                 for i, v in enumerate(x.tolist())]
        want_k = [k for k, _ in pairs]
        want_ev = [e for _, e in pairs]
    got, st = fpsim.quantize(x, fmt, mode, policy, seed=seed, stats=True, sr_bits=sr_bits)
    out_dtype = "float32" if got.dtype == np.float32 else "float64"
    want_v = np.array([np.nan if k is None else ref.value(k, fmt, out_dtype) for k in want_k],
                      got.dtype)
    bad = np.flatnonzero(~((got.view(np.uint8).reshape(got.size, -1) ==
                            want_v.view(np.uint8).reshape(want_v.size, -1)).all(axis=1)
                           | (np.isnan(got) & np.isnan(want_v))))
    assert bad.size == 0, [(x[i], got[i], want_v[i], want_k[i]) for i in bad[:5]]
    for name, bit in (("underflow", Event.UNDERFLOW), ("overflow", Event.OVERFLOW),
                      ("nan", Event.NAN), ("inexact", Event.INEXACT)):
        assert getattr(st, name) == sum(bool(e & bit) for e in want_ev), name
    assert st.subnormal == 0 and st.total == x.size
    # Without statistics other loops run (float32 decisions, the nearest modes' shortcut).
    plain = fpsim.quantize(x, fmt, mode, policy, seed=seed, sr_bits=sr_bits)
    assert np.array_equal(plain.view(np.uint8), got.view(np.uint8))
    # Codes: two's complement of k; NaN results cannot be encoded.
    if any(k is None for k in want_k):
        with pytest.raises(ValueError, match="cannot encode"):
            fpsim.encode(x, fmt, mode, policy, seed=seed, sr_bits=sr_bits)
    else:
        codes = fpsim.encode(x, fmt, mode, policy, seed=seed, sr_bits=sr_bits)
        assert codes.dtype == fpsim.code_dtype(fmt)
        assert codes.tolist() == [k % (1 << fmt.bits) for k in want_k]
        back = fpsim.decode(codes, fmt)
        assert back.tolist() == [ref.value(k, fmt) for k in want_k]


@pytest.mark.parametrize("fmt", FORMATS, ids=_ids(FORMATS))
@pytest.mark.parametrize("mode", MODES)
def test_kernel_equals_reference_structured(fmt, mode):
    rng = np.random.default_rng(abs(hash((str(fmt), mode))) % 2**32)
    x = structured_inputs(fmt, rng)
    for policy in POLICIES:
        if policy == "wrap" and fmt.symmetric:
            continue
        _check(x, fmt, mode, policy)


@pytest.mark.parametrize("fmt", [Fixed(8, 4), IntGrid(8, 0.1), IntGrid(6, 3 * 2.0 ** -10), Fixed(25, 3)],
                         ids=str)
@pytest.mark.parametrize("mode", MODES)
def test_float32_inputs_and_outputs(fmt, mode):
    """float32 in, float32 out (rounded once from the exact k·δ), including products that land
    on float32 midpoints."""
    rng = np.random.default_rng(7)
    with np.errstate(over="ignore"):
        x = structured_inputs(fmt, rng).astype(np.float32)
    x = x[np.isfinite(x) | np.isnan(x)]
    _check(x, fmt, mode, "saturate", dtype=np.float32)
    got = fpsim.quantize(x, fmt, mode)
    assert got.dtype == (np.float32 if fmt.fits_float32 else np.float64)


def test_float32_double_rounding_is_avoided():
    """k·δ whose float64 product is a float32 midpoint: rounding the float64 product to float32
    would round twice; the result is the float32 nearest the exact product (both directions of
    the product's error and exact midpoints all occur below)."""
    rng = np.random.default_rng(11)
    kinds = set()
    for _ in range(3000):
        f = np.float32(rng.uniform(1, 2))
        mid = float(f) + 2.0 ** -24  # halfway between f and the next float32 up (f in [1, 2))
        delta = mid / 3  # then 3·delta is within an ulp of the midpoint
        if 3 * delta != mid:
            continue
        g = IntGrid(8, delta)
        x = np.array([f], np.float32)  # rounds to k = 3 on the grid
        kk = ref.round_grid(float(x[0]), g)[0]
        assert kk == 3
        want = ref.value(kk, g, "float32")
        assert fpsim.quantize(x, g).tolist() == [want]
        kinds.add((Fraction(3) * Fraction(delta) > mid) - (Fraction(3) * Fraction(delta) < mid))
    assert kinds == {-1, 0, 1}


def test_numpy_integer_rounding_agrees():
    """Power-of-two grids against numpy: rint (ties to even), floor, ceil, trunc and clip."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(100_000) * 6).astype(np.float32)
    x[:1000] = np.round(x[:1000] * 32) / 32  # ties and exact points
    f = Fixed(8, 4)
    s = x.astype(np.float64) * 16
    for mode, op in (("rne", np.rint), ("rdn", np.floor), ("rup", np.ceil), ("rtz", np.trunc)):
        want = (np.clip(op(s), -128, 127) / 16).astype(np.float32)
        got = fpsim.quantize(x, f, mode, "saturate")
        assert np.array_equal(got.view(np.uint32), (want + np.float32(0)).view(np.uint32)), mode
    codes = fpsim.encode(x, f)
    assert codes.dtype == np.uint8
    assert np.array_equal(codes, np.clip(np.rint(s), -128, 127).astype(np.int8).view(np.uint8))
    # int8 wraparound is numpy's int8 arithmetic modulo 256
    wrapped = fpsim.encode(x * 8, Fixed(8, 0), "rtz", "wrap")
    assert np.array_equal(wrapped, np.trunc(x.astype(np.float64) * 8).astype(np.int64).astype(np.uint8))


def test_external_names():
    """fpsim.quantize(x, fpsim.Fixed(8, 4), rounding="rne", overflow="saturate"): nearest
    multiples of 2^-4 clamped to [-128·2^-4, 127·2^-4]; encode gives two's complement uint8."""
    x = np.array([0.03, 0.0625 * 2.5, -0.0625 * 2.5, 100.0, -100.0, 7.96875, -8.03], np.float32)
    y = fpsim.quantize(x, fpsim.Fixed(8, 4), rounding="rne", overflow="saturate")
    assert y.tolist() == [0.0, 0.125, -0.125, 127 / 16, -8.0, 127 / 16, -8.0]
    c = fpsim.encode(x, fpsim.Fixed(8, 4), rounding="rne", overflow="saturate")
    assert c.dtype == np.uint8 and c.tolist() == [0, 2, 254, 127, 128, 127, 128]
    assert fpsim.decode(c, fpsim.Fixed(8, 4)).tolist() == [0.0, 0.125, -0.125, 127 / 16, -8.0, 127 / 16, -8.0]


@pytest.mark.parametrize("spec,want", [
    ("int8", Fixed(8, 0)), ("int4", Fixed(4, 0)), ("uint8", Fixed(8, 0, signed=False)),
    ("q7.8", Fixed(16, 8)), ("uq0.8", Fixed(8, 8, signed=False)), ("q0.7", Fixed(8, 7)),
    ("int8-sym", Fixed(8, 0, symmetric=True)), ("INT16", Fixed(16, 0)),
    ("fixed8f12", Fixed(8, 12, any_point=True)), ("int8*0.05", IntGrid(8, 0.05)),
    ("uint4*0.25", IntGrid(4, 0.25, signed=False)), ("int8-sym*0.1", IntGrid(8, 0.1, symmetric=True)),
])
def test_specs_parse_and_read_back(spec, want):
    got = parse_fixed_spec(spec)
    assert got == want and type(got) is type(want)
    assert parse_fixed_spec(got.spec) == got
    x = np.array([0.3, -1.7, 2.5], np.float64)
    assert np.array_equal(fpsim.quantize(x, spec), fpsim.quantize(x, want))


@pytest.mark.parametrize("make,field", [
    (lambda: Fixed(1, 0), "bits=1"), (lambda: Fixed(54, 0), "bits=54"),
    (lambda: Fixed(0, 0, signed=False), "bits=0"), (lambda: Fixed(8, 9), "frac_bits=9"),
    (lambda: Fixed(8, -1), "frac_bits=-1"), (lambda: Fixed(8, 2000, any_point=True), "frac_bits=2000"),
    (lambda: Fixed(8.5, 0), "bits"), (lambda: IntGrid(8, 0.0), "delta"),
    (lambda: IntGrid(8, -0.1), "delta"), (lambda: IntGrid(8, math.inf), "delta"),
    (lambda: IntGrid(8, math.nan), "delta"), (lambda: IntGrid(8, "0.1"), "delta"),
    (lambda: IntGrid(8, 1e-300), "delta"), (lambda: Fixed(8, 0, signed=False, symmetric=True), "symmetric"),
    (lambda: parse_fixed_spec("int"), "not understood"), (lambda: parse_fixed_spec("q7"), "not understood"),
    (lambda: parse_fixed_spec("int8*abc"), "delta"), (lambda: parse_fixed_spec("q3.4*0.1"), "integer spec"),
    (lambda: parse_fixed_spec("int99"), "bits=99"),
])
def test_bad_formats_name_the_field(make, field):
    with pytest.raises(ValueError, match=field.replace("*", r"\*")):
        make()


def test_bad_policies_and_inputs():
    x = np.array([1.0, 200.0, -3.0])
    with pytest.raises(ValueError, match="ieee"):
        fpsim.quantize(x, "int8", overflow="ieee")
    with pytest.raises(ValueError, match="fixed-point"):
        fpsim.quantize(x, "e4m3", overflow="wrap")
    with pytest.raises(ValueError, match="symmetric"):
        fpsim.quantize(x, "int8-sym", overflow="wrap")
    with pytest.raises(ValueError, match=r"x\[1\] = 200.0 is outside the range"):
        fpsim.quantize(x, "int8", overflow="error")
    with pytest.raises(ValueError, match=r"x\[0, 1\] is nan"):
        fpsim.encode(np.array([[1.0, np.nan]]), "int8")
    with pytest.raises(ValueError, match="code 128 at index"):
        fpsim.decode(np.array([1, 128], np.uint8), "int8-sym")
    with pytest.raises(ValueError, match="outside 0..255"):
        fpsim.decode(np.array([256]), "int8")
    assert fpsim.quantize(np.array([np.nan]), "int8").tolist()[0] != fpsim.quantize(np.array([np.nan]), "int8").tolist()[0]


def test_default_policy_is_saturate_and_no_negative_zero():
    y = fpsim.quantize(np.array([1000.0, -1000.0, -0.2, -0.0]), "int8")
    assert y.tolist() == [127.0, -128.0, 0.0, 0.0]
    assert not np.signbit(y[2:]).any()
    u = fpsim.quantize(np.array([-3.0, 300.0, 2.4]), "uint8")
    assert u.tolist() == [0.0, 255.0, 2.0]


def test_parallel_equals_serial_twin():
    """The parallel driver equals the serial one on an array above the serial threshold, for
    every mode, with statistics (a chunk writes only its own outputs)."""
    from fpsim.kernels import fixed as kf

    rng = np.random.default_rng(1)
    n = max(config.SERIAL_BELOW * 3, 200_000)
    x = (rng.standard_normal(n) * 10).astype(np.float32)
    x[::97] = np.round(x[::97] * 10) / 10
    for fmt in (IntGrid(8, 0.1), Fixed(8, 3)):
        for mode in range(7):
            outs = []
            for driver, k in ((kf.grid_round, 4), (kf.grid_round_serial, 4), (kf.grid_round, 1)):
                # as quantize calls it (values and statistics), then as encode does (codes)
                vals = np.empty(n, np.float32)
                counts = np.zeros((k, 5), np.int64)
                hist = np.zeros((k, 2098 + 3), np.int64)
                bad = np.full(k, -1, np.int64)
                driver(x, vals, np.empty(0, np.int64), fmt.params(), mode, 1, np.uint64(99), 62, 1,
                       counts, hist, bad, 0)
                codes = np.empty(n, np.int64)
                driver(x, np.empty(0, np.float32), codes, fmt.params(), mode, 1, np.uint64(99), 62,
                       1, np.zeros((k, 5), np.int64), np.zeros((k, 0), np.int64), bad, 0)
                if mode != 6:  # the decision in float32 (plain quantization, saturating)
                    v32 = np.empty(n, np.float32)
                    driver(x, v32, np.empty(0, np.int64), fmt.params(), mode, 1, np.uint64(99), 62,
                           1, np.zeros((k, 5), np.int64), np.zeros((k, 0), np.int64), bad, 1)
                    assert np.array_equal(v32, vals)
                assert (bad < 0).all()
                outs.append((vals.view(np.uint32).copy(), codes, counts.sum(0), hist.sum(0)))
            for o in outs[1:]:
                for a, b in zip(outs[0], o):
                    assert np.array_equal(a, b)


@pytest.mark.parametrize("fmt", [Fixed(8, 2), IntGrid(8, 0.3)], ids=str)
def test_sr_probability_equals_distance(fmt):
    """Stochastic rounding goes up with probability floor(frac · 2^s) / 2^s for s random bits
    (and frac for 62 bits): binomial counts within 5 standard deviations."""
    n = 200_000
    for v, s in ((0.8 * fmt.delta + 3 * fmt.delta, 62), (0.8 * fmt.delta + 3 * fmt.delta, 3),
                 (0.3 * fmt.delta, 2), (-1.9 * fmt.delta, 62), (-1.9 * fmt.delta, 1)):
        Q = abs(Fraction(v)) / Fraction(fmt.delta)
        frac = Q - math.floor(Q)
        p = float(Fraction(math.floor(frac * 2**s), 2**s))
        k = fpsim.encode(np.full(n, v), fmt, "sr", sr_bits=s, seed=17).astype(np.int64)
        k = np.where(k >= 128, k - 256, k)
        lo = math.floor(Q) * (1 if v > 0 else -1)
        away = np.abs(k) > abs(lo)
        assert set(np.unique(np.abs(k))) <= {abs(lo), abs(lo) + 1}
        sd = math.sqrt(n * p * (1 - p)) + 1e-9
        assert abs(away.sum() - n * p) <= 5 * sd, (v, s, away.mean(), p)
        # unbiased on average when every bit is used
        if s == 62:
            assert abs(fpsim.quantize(np.full(n, v), fmt, "sr", seed=5).mean() - v) < 2.5 * fmt.delta / math.sqrt(n)


def test_sr_is_deterministic_per_seed_and_stream():
    x = np.random.default_rng(0).standard_normal(1000)
    g = IntGrid(8, 0.05)
    a = fpsim.encode(x, g, "sr", seed=1)
    assert np.array_equal(a, fpsim.encode(x, g, "sr", seed=1))
    assert not np.array_equal(a, fpsim.encode(x, g, "sr", seed=2))
    assert not np.array_equal(a, fpsim.encode(x, g, "sr", seed=1, stream=1))


@pytest.mark.parametrize("fmt", [Fixed(8, 4), IntGrid(8, 0.1), IntGrid(5, 1 / 3)], ids=str)
def test_histogram_counts_binades_of_x_over_delta(fmt):
    rng = np.random.default_rng(2)
    x = np.concatenate([structured_inputs(fmt, rng, 200), [0.0, -0.0, np.inf, np.nan]])
    _, st = fpsim.quantize(x, fmt, stats=True)
    want = np.zeros(2098, np.int64)
    for v in x:
        if v != 0 and math.isfinite(v):
            want[min(max(ref.binade(v, fmt) + 1074, 0), 2097)] += 1
    assert np.array_equal(st.exp_hist, want)
    assert (st.hist_zero, st.hist_inf, st.hist_nan) == (int((x == 0).sum()), int(np.isinf(x).sum()),
                                                        int(np.isnan(x).sum()))


@pytest.mark.parametrize("fmt", [Fixed(8, 4), IntGrid(5, 0.3), IntGrid(8, 0.1, symmetric=True)], ids=str)
def test_exhaustive_float16_inputs(fmt):
    """Every float16 value (as float64) into small grids, every mode: bits equal the oracle."""
    x = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float64)
    x = x[np.isfinite(x)]
    x = x[np.abs(x) <= 4 * max(abs(fmt.k_min), fmt.k_max) * fmt.delta]  # the range and around it
    for mode in ("rne", "rtz", "sr"):
        _check(x, fmt, mode, "saturate", sr_bits=8)


def test_out_and_zero_d():
    x = np.linspace(-3, 3, 101).astype(np.float32)
    out = np.empty_like(x)
    r = fpsim.quantize(x, Fixed(8, 4), out=out)
    assert r is out and np.array_equal(out, fpsim.quantize(x, Fixed(8, 4)))
    with pytest.raises(ValueError, match="out must be"):
        fpsim.quantize(x, Fixed(8, 4), out=np.empty(101, np.float64))
    s = fpsim.quantize(np.float64(0.26), IntGrid(8, 0.1))
    assert np.ndim(s) == 0 and float(s) == float(3 * Fraction(0.1))


def test_training_cast_and_cli_take_grid_formats(capsys):
    """A cast site rounds onto a grid (overflow defaults to saturate); ``fpsim quantize``
    shows two's-complement codes and refuses a policy the format does not take."""
    from fpsim.cli import main
    from fpsim.training.casts import Cast, CastContext

    c = Cast.parse("int8*0.05:sr")
    assert c.overflow == "saturate" and isinstance(c.format, IntGrid)
    x = np.random.default_rng(3).standard_normal((4, 5)).astype(np.float32) * 10
    ctx = CastContext("fc1", "activation", "forward", step=7, seed=2, stats=True)
    y, st = c.round(x, ctx)
    assert y.dtype == np.float32 and st.total == 20
    assert np.array_equal(y, fpsim.quantize(x, "int8*0.05", "sr", seed=2, stream=ctx.stream))
    assert Cast.parse("q3.4:rne:wrap").overflow == "wrap"
    with pytest.raises(ValueError, match="ieee"):
        Cast("int8", "rne", "ieee")
    assert main(["quantize", "-1", "200", "-f", "int8"]) == 0
    out = capsys.readouterr().out
    assert "11111111" in out and "01111111" in out and "overflow" in out
    assert main(["quantize", "200", "-f", "int8", "--overflow", "error"]) == 2
    assert "outside the range" in capsys.readouterr().err
    assert main(["quantize", "1", "-f", "e4m3", "--overflow", "wrap"]) == 2


def test_formats_command_lists_grid_formats(capsys):
    import json

    from fpsim.cli import main

    assert main(["formats", "int8", "q7.8", "int8-sym*0.05", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["bits"], r["k_min"], r["k_max"], r["delta"]) for r in rows] == [
        (8, -128, 127, 1.0), (16, -32768, 32767, 2.0 ** -8), (8, -127, 127, 0.05)]
    assert main(["formats", "int8", "--plot"]) == 2
    assert "--plot draws floating-point formats" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", [IntGrid(8, 0.1), IntGrid(8, 3 * 2.0 ** -10), Fixed(8, 4)], ids=str)
@pytest.mark.parametrize("s", [1, 3, 20, 62])
def test_sr_at_each_elements_threshold(fmt, s):
    """Inputs placed at stochastic rounding's threshold for their own random bits, the ratio's
    fraction at ``1 - R·2^-s`` and a few ulps around it: the decisions the estimate must not
    make (deleting its margin fails here)."""
    key = stream_key(4, 0)
    xs = []
    i = 0
    rng = np.random.default_rng(s)
    while len(xs) < 600:
        r = random_bits_py(key, len(xs)) >> (62 - s)
        k = int(rng.integers(fmt.k_min, fmt.k_max - 1))
        v = float((k + 1 - Fraction(r, 1 << s)) * Fraction(fmt.delta))
        xs.append([v, np.nextafter(v, np.inf), np.nextafter(v, -np.inf)][i % 3])
        i += 1
    _check(np.array(xs), fmt, "sr", "saturate", seed=4, sr_bits=s)


def test_rounding_in_place():
    """``out=x``: the same values and Stats as into a fresh array (the kernel reads a copy)."""
    rng = np.random.default_rng(9)
    for fmt in (IntGrid(8, 0.75), Fixed(8, 2)):
        x = np.concatenate([np.array([1.5, 0.75, 2.25, -1.5, 0.3, 5.0]),
                            rng.standard_normal(5000) * 20])
        for mode in ("rne", "rup", "rto", "sr"):
            want, wst = fpsim.quantize(x, fmt, mode, stats=True)
            y = x.copy()
            got, gst = fpsim.quantize(y, fmt, mode, stats=True, out=y)
            assert got is y and np.array_equal(y, want) and gst == wst


def test_float32_range_edge_of_power_of_two_grids():
    """-2^(b-1)·δ = -2^128 is no float32: such a grid's results are float64."""
    f = Fixed(8, -121, any_point=True)
    assert not f.fits_float32
    y = fpsim.quantize(np.array([np.finfo(np.float32).min, -np.inf], np.float32), f)
    assert y.dtype == np.float64 and y.tolist() == [-2.0 ** 128, -2.0 ** 128]
    assert Fixed(8, -120, any_point=True).fits_float32
