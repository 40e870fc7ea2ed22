"""Elementwise arithmetic kernels (fpsim.arith) are correctly rounded with IEEE flags:

* float16 and float32 against Berkeley SoftFloat directly (values and all five flags, every op,
  the five IEEE modes, tininess after and before rounding);
* 8-bit formats against the exact reference arithmetic: every operand pair (every operand for
  sqrt, sampled triples for fma), every mode including rto and stochastic rounding.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fpsim
import fpsim.numerics.arith as A
import fpsim.validate.arith as VA
from fpsim.kernels.rng import random_bits_py, stream_key
from fpsim.reference.arith import ARITY, Flag, op_value
from _inputs import assert_same_bits
from test_reference_arith import MODES, TYPES

ALL_MODES = ["rne", "rna", "rtz", "rup", "rdn", "rto", "sr"]


def _call(op, cols, fmt, mode, **kw):
    return getattr(A, op)(*cols, fmt, mode, flags=True, **kw)


@pytest.mark.parametrize("op", list(ARITY))
@pytest.mark.parametrize("name", list(TYPES))
def test_kernel_equals_softfloat(name, op):
    """At least 50,000 TestFloat-style cases per type, op and mode (tininess after rounding),
    10,000 with tininess before; values and all five flags."""
    for mode in MODES:
        for tininess, n in (("after", 50_000), ("before", 10_000)):
            res = VA.check_softfloat(name, op, mode, tininess, n, seed=len(op) + len(mode))
            assert res.cases >= n, res.line()
            assert res.mismatches == 0, res.line()


@pytest.mark.parametrize("op", list(ARITY))
def test_every_tuple_of_a_4_bit_format_equals_reference(op):
    """float4_e2m1fn: every operand pair (and fma triple) under all seven modes."""
    for mode in ALL_MODES:
        res = VA.check_exhaustive("float4_e2m1fn", op, mode)
        assert res.mismatches == 0, res.line()


def test_stats_of_ops_match_flags_and_results():
    rng = np.random.default_rng(9)
    fmt = fpsim.format("float16")
    a = fpsim.quantize(rng.standard_normal(5000) * np.exp2(rng.integers(-20, 16, 5000)), fmt)
    b = fpsim.quantize(rng.standard_normal(5000) * np.exp2(rng.integers(-20, 16, 5000)), fmt)
    for mode in ("rne", "rdn", "sr"):
        y, fl, st = A.mul(a, b, fmt, mode, flags=True, stats=True)
        assert st.total == a.size
        assert st.inexact == np.count_nonzero(fl & Flag.INEXACT)
        assert st.overflow == np.count_nonzero(fl & Flag.OVERFLOW)
        exact = a * b  # exact in float64
        assert st.underflow == np.count_nonzero((y == 0) & (exact != 0))
        tiny = (y != 0) & (np.abs(y) < fmt.min_normal) & np.isfinite(y)
        assert st.subnormal == np.count_nonzero(tiny)
        assert st.exp_hist.sum() + st.hist_zero + st.hist_inf + st.hist_nan == a.size
        assert_same_bits(y, A.mul(a, b, fmt, mode))  # asking for Stats changes nothing


def _reference_cols(op, cols, fmt, mode, seed=0):
    key = stream_key(seed, 0)
    srk = 51 - fmt.man_bits
    ys, fl = [], []
    for i, xs in enumerate(zip(*cols)):
        y, f = op_value(op, [float(v) for v in xs], fmt, mode, rnd=random_bits_py(key, i),
                        sr_bits=srk)
        ys.append(y)
        fl.append(f)
    return np.array(ys), np.array(fl, np.uint8)


def _same(got, want):
    g, w = np.asarray(got, np.float64), np.asarray(want, np.float64)
    nan = np.isnan(w)
    return np.isnan(g[nan]).all() and np.array_equal(g[~nan].view(np.uint64), w[~nan].view(np.uint64))


@pytest.mark.parametrize("name,op,modes", [
    ("float8_e4m3fn", "add", ["rne", "rtz", "sr"]), ("float8_e4m3fn", "mul", ["rne", "rup", "rto"]),
    ("float8_e4m3fn", "div", ["rne", "rdn", "rna"]), ("float8_e5m2", "sub", ["rne", "rto", "sr"]),
    ("float8_e5m2", "div", ["rtz", "sr"]),
])
def test_every_operand_pair_equals_reference(name, op, modes):
    fmt = fpsim.format(name)
    vals = fpsim.decode(np.arange(256), fmt)
    a, b = (g.ravel() for g in np.meshgrid(vals, vals, indexing="ij"))
    for mode in modes:
        got, gf = _call(op, (a, b), fmt, mode)
        want, wf = _reference_cols(op, (a, b), fmt, mode)
        assert _same(got, want), f"{name} {op} {mode}: values differ"
        assert np.array_equal(gf, wf), f"{name} {op} {mode}: flags differ"


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float6_e3m2fn"])
def test_sqrt_and_fma_equal_reference(name):
    fmt = fpsim.format(name)
    vals = fpsim.decode(np.arange(1 << fmt.bits), fmt)
    rng = np.random.default_rng(fmt.bits)
    tri = [rng.choice(vals, 1500) for _ in range(3)]
    for mode in ALL_MODES:
        got, gf = _call("sqrt", (vals,), fmt, mode)
        want, wf = _reference_cols("sqrt", (vals,), fmt, mode)
        assert _same(got, want) and np.array_equal(gf, wf), f"sqrt {mode}"
        got, gf = _call("fma", tri, fmt, mode)
        want, wf = _reference_cols("fma", tri, fmt, mode)
        assert _same(got, want) and np.array_equal(gf, wf), f"fma {mode}"


def test_sr_reproducible_and_unbiased():
    fmt = fpsim.formats.bfloat16
    a = np.full(1 << 18, 1.0)
    b = np.full(1 << 18, 2.0 ** -9)  # 1 + 2^-9: a quarter of the way from 1 to 1 + 2^-7
    y1 = A.add(a, b, fmt, "sr", seed=3)
    assert np.array_equal(y1, A.add(a, b, fmt, "sr", seed=3))
    p = np.mean(y1 > 1.0)
    assert abs(p - 0.25) <= 5 * math.sqrt(0.25 * 0.75 / a.size), p


def test_operand_checks_and_broadcasting():
    with pytest.raises(ValueError, match=r"operand b holds 0\.1 at index \(1,\)"):
        A.add([1.0, 2.0], [0.5, 0.1], "fp16")
    with pytest.raises(ValueError, match="man_bits <= 25"):
        A.mul(1.0, 1.0, "float64")
    with pytest.raises(ValueError, match="sr_bits"):
        A.add(1.0, 1.0, "fp16", "sr", sr_bits=45)
    y = A.mul(np.ones((3, 1)), np.array([1.0, 2.0, 0.5]), "bf16")
    assert y.shape == (3, 3) and y.dtype == np.float64
    y, f = A.div(1.0, 0.0, "fp16", flags=True)
    assert y == math.inf and f == Flag.DIVBYZERO


def test_format_without_zero_or_fraction_bits():
    """float8_e8m0fnu (no zero, no fraction bits, unsigned): x - x is NaN, as rounding zero into
    it is; every operand pair of sub agrees with the reference."""
    y, f = A.sub(2.0**-3, 2.0**-3, "float8_e8m0fnu", flags=True)
    assert math.isnan(y) and f == 0
    assert A.add(2.0**-127, 2.0**-127, "float8_e8m0fnu") == 2.0**-126
    res = VA.check_exhaustive("float8_e8m0fnu", "sub", "rne")
    assert res.mismatches == 0, res.line()


def test_integers_beyond_2_53_are_refused_as_quantize_refuses_them():
    # 2^60 + 1 becomes 2^60 in float64: the op would describe another number
    big = np.array([2 ** 60 + 1])
    for fn in (lambda: fpsim.add(big, 0, "fp32"), lambda: fpsim.quantize(big, "fp32"),
               lambda: fpsim.matmul(big.reshape(1, 1), np.array([[1]]), "float32")):
        with pytest.raises(ValueError, match="beyond 2\\^53"):
            fn()
    assert fpsim.add(np.array([2 ** 53]), np.array([1]), "fp32")[0] == 2.0 ** 53


# ---- tininess after rounding, against an oracle that shares nothing with the kernels ------------
def _code_lsb(K: int, E: int, fmt) -> int:
    """Last code bit of the value ``K * 2^(E - m)`` (``2^m <= K < 2^(m+1)``) in ``fmt``'s code
    layout extended to an unbounded exponent: the fraction's last bit, or with no fraction bits
    the last bit of the biased exponent ``E + bias`` (which is why the bias parity matters)."""
    return K & 1 if fmt.man_bits else (E + fmt.bias) & 1


def _tiny_after_rounding_oracle(X, neg, fmt, mode, rnd, srk) -> bool:
    """Whether the exact magnitude ``X > 0`` (a Fraction), rounded to ``fmt``'s precision with an
    unbounded exponent range under ``mode``, is below min_normal (IEEE 754's tininess after
    rounding), computed by hand: the two neighbours at ``X``'s own binade are the integer
    multiples ``K`` and ``K + 1`` of ``2^(E - m)``."""
    from fractions import Fraction
    m = fmt.man_bits
    E = X.numerator.bit_length() - X.denominator.bit_length()
    if Fraction(2) ** E > X:  # (bit lengths give E or E + 1)
        E -= 1
    ulp = Fraction(2) ** (E - m)
    K = math.floor(X / ulp)
    rest = X / ulp - K  # in [0, 1)
    if rest == 0:
        up = False
    elif mode == "rne":
        # The upper neighbour (K + 1) * ulp is 2^(E+1) when K + 1 = 2^(m+1): its code is that of
        # 2^(E+1) with K = 2^m. Ties go to the neighbour whose code ends in 0.
        up = rest > Fraction(1, 2) or (rest == Fraction(1, 2) and _code_lsb(K, E, fmt) == 1)
    elif mode == "rna":
        up = rest >= Fraction(1, 2)
    elif mode == "rtz":
        up = False
    elif mode == "rup":
        up = not neg
    elif mode == "rdn":
        up = neg
    elif mode == "rto":
        up = _code_lsb(K, E, fmt) == 0  # keep the odd one of the two neighbours
    else:  # sr: fpsim's definition, the top srk bits of the fraction against the random bits
        up = math.floor(rest * (1 << srk)) + (rnd >> (62 - srk)) >= (1 << srk)
    return (K + up) * ulp < Fraction(2) ** fmt.emin


def _underflow_oracle(op, xs, fmt, mode, rnd, srk) -> bool:
    """Whether ``op`` on the finite operands ``xs`` raises UNDERFLOW (tiny after rounding and
    inexact); only results below min_normal can."""
    from fractions import Fraction
    F = [Fraction(v) for v in xs]
    exact = {"add": lambda: F[0] + F[1], "mul": lambda: F[0] * F[1],
             "fma": lambda: F[0] * F[1] + F[2]}[op]()
    X = abs(exact)
    if X == 0 or X >= Fraction(2) ** fmt.emin:
        return False
    # Below min_normal the format holds only the multiples of 2^(emin - m) (with subnormals).
    exact_in_format = fmt.subnormals and (X / Fraction(2) ** (fmt.emin - fmt.man_bits)).denominator == 1
    return not exact_in_format and _tiny_after_rounding_oracle(X, exact < 0, fmt, mode, rnd, srk)


def _small_formats():
    """Formats with 0 and 1 fraction bits and both bias parities (the parity decides ties and
    round-to-odd between binades when there are no fraction bits)."""
    out = []
    for bias in (2, 3, 4, 5):
        out.append(fpsim.Format(exp_bits=3, man_bits=0, bias=bias, specials="fn"))
        out.append(fpsim.Format(exp_bits=3, man_bits=1, bias=bias, specials="fn"))
        out.append(fpsim.Format(exp_bits=3, man_bits=1, bias=bias, specials="fn", subnormals=False))
    return out


@pytest.mark.parametrize("fmt", _small_formats(), ids=str)
def test_underflow_flag_after_rounding_equals_exact_oracle(fmt):
    """The UNDERFLOW flag of add, mul and fma (every operand pair, and every triple of a grid of
    values) equals the hand-rounded Fraction oracle, every mode, in the kernels and in
    reference_arith."""
    vals = fpsim.decode(np.arange(1 << fmt.bits), fmt)
    vals = vals[np.isfinite(vals)]
    pairs = [g.ravel() for g in np.meshgrid(vals, vals, indexing="ij")]
    grid = vals[np.abs(vals) <= 2.0 ** (fmt.emin + 2)]  # small values: the tiny results
    triples = [g.ravel() for g in np.meshgrid(grid, grid, vals, indexing="ij")]
    srk = 51 - fmt.man_bits
    key = stream_key(0, 0)
    for op, cols in (("add", pairs), ("mul", pairs), ("fma", triples)):
        for mode in ALL_MODES:
            _, fl = _call(op, cols, fmt, mode)
            got = (fl & Flag.UNDERFLOW) != 0
            want = np.array([_underflow_oracle(op, xs, fmt, mode, random_bits_py(key, i), srk)
                             for i, xs in enumerate(zip(*cols))])
            bad = np.flatnonzero(got != want)
            assert bad.size == 0, (f"{fmt} {op} {mode}: UNDERFLOW {got[bad[0]]} for operands "
                                   f"{[c[bad[0]] for c in cols]}, oracle {want[bad[0]]}")
            ref = np.array([op_value(op, [float(c[i]) for c in cols], fmt, mode,
                                     rnd=random_bits_py(key, int(i)), sr_bits=srk)[1] & Flag.UNDERFLOW
                            for i in np.flatnonzero(want | got)[:200]]) != 0
            assert np.array_equal(ref, want[np.flatnonzero(want | got)[:200]]), \
                f"{fmt} {op} {mode}: reference_arith's UNDERFLOW differs from the oracle"


def test_underflow_flag_without_fraction_bits_even_bias():
    """The two cases found by the audit (e5m0, bias 16): round-to-odd keeps 2^-15, not tiny;
    round-to-nearest-even of 1.5 * 2^-16 goes to 2^-16 (even code 0), tiny."""
    f = "e5m0b16fn"
    _, fl = fpsim.fma(np.array([-2.0**-9]), np.array([-2.0**-15]), np.array([-2.0**-15]), f,
                      rounding="rto", flags=True)
    assert fl[0] == Flag.INEXACT
    _, fl = fpsim.fma(np.array([-0.25]), np.array([2.0**-15]), np.array([2.0**-15]), f,
                      rounding="rne", flags=True)
    assert fl[0] == Flag.INEXACT | Flag.UNDERFLOW


def _same_values(got, want) -> bool:
    """Bit equality, NaN equal to any NaN (NaN signs are the format's rule, not tested here)."""
    g, w = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return bool(np.array_equal(np.isnan(g), np.isnan(w))
                and np.array_equal(g[~np.isnan(g)].view(np.uint64), w[~np.isnan(w)].view(np.uint64)))


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float4_e2m1fn", "float16"])
def test_infinite_results_round_as_quantize_rounds_inf_and_stats_describe_them(name):
    """x / 0 (and Inf operands where the format has Inf): the result is quantize(±Inf) under the
    same mode and policy, so Stats (those of rounding the exact results) describe the values
    returned; the flags stay IEEE's for an exact infinite result (DIVBYZERO only)."""
    fmt = fpsim.format(name)
    a = np.array([1.0, -1.0, 0.5, -0.5])
    b = np.array([0.0, 0.0, -0.0, -0.0])
    inf = np.array([np.inf, -np.inf, -np.inf, np.inf])
    for policy in ("ieee", "saturate"):
        for mode in ALL_MODES:
            y, fl, st = fpsim.div(a, b, fmt, mode, policy, flags=True, stats=True)
            want, want_st = fpsim.quantize(inf, fmt, mode, policy, stats=True)
            assert _same_values(y, want), f"{name} {mode} {policy}: x/0 gave {y}, quantize(±Inf) {want}"
            assert st == want_st, f"{name} {mode} {policy}: {st} against {want_st}"
            assert np.all(fl == Flag.DIVBYZERO)
            ref = [op_value("div", [x, z], fmt, mode, policy)[0] for x, z in zip(a, b)]
            assert _same_values(ref, want), f"{name} {mode} {policy}: reference gave {ref}"
            if fmt.has_inf:
                y, st = fpsim.add(inf, np.ones(4), fmt, mode, policy, stats=True)
                assert _same_values(y, want) and st == want_st, f"{name} {mode} {policy}: Inf + 1"


def test_matmul_block_range_and_float64_spec_messages():
    """block=2**64 is a ValueError naming block and its range (was a raw OverflowError); an
    e11m52 accumulator is float64's layout and works as accum='float64' does."""
    a = np.array([[1.0, 2.0]])
    b = np.array([[3.0], [4.0]])
    for block in (2**64, 2**63, 0, -1, True, 1.5):
        with pytest.raises(ValueError, match=r"block=.*1\.\.2\^63-1"):
            fpsim.matmul(a, b, "bf16", order="blocked", block=block)
    assert fpsim.matmul(a, b, "bf16", order="blocked", block=2**63 - 1)[0, 0] == 11.0
    want = fpsim.matmul(a, b, "bf16", accum="float64")
    for spec in ("e11m52", "E11M52", fpsim.format("e11m52")):
        assert np.array_equal(fpsim.matmul(a, b, "bf16", accum=spec), want)
