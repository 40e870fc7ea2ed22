"""Elementwise arithmetic kernels (fpsim.arith) are correctly rounded with IEEE flags:

* float16 and float32 against Berkeley SoftFloat directly (values and all five flags, every op,
  the five IEEE modes, tininess after and before rounding);
* 8-bit formats against the exact reference arithmetic: every operand pair (every operand for
  sqrt, sampled triples for fma), every mode including rto and stochastic rounding.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import softfloatpy as sf

import fpsim
import fpsim.arith as A
from fpsim import reference
from fpsim.kernels.rng import random_bits_py, stream_key
from fpsim.reference_arith import ARITY, Flag, op_value
from test_reference_arith import MODES, TYPES, _cases, _softfloat

ALL_MODES = ["rne", "rna", "rtz", "rup", "rdn", "rto", "sr"]


def _call(op, cols, fmt, mode, **kw):
    return getattr(A, op)(*cols, fmt, mode, flags=True, **kw)


@pytest.mark.parametrize("tininess", ["after", "before"])
@pytest.mark.parametrize("op", list(ARITY))
@pytest.mark.parametrize("name", list(TYPES))
def test_kernel_equals_softfloat(name, op, tininess):
    t, bits, _ = TYPES[name]
    fmt = fpsim.format(name)
    sf_tin = sf.TininessMode.AFTER_ROUNDING if tininess == "after" else sf.TininessMode.BEFORE_ROUNDING
    for mode, sf_mode in MODES.items():
        cases = _cases(bits, ARITY[op], 1000 if tininess == "after" else 200, seed=len(op) * 7 + bits)
        codes = np.array(cases, dtype=np.uint64)
        cols = [fpsim.decode(codes[:, j], fmt) for j in range(ARITY[op])]
        got, got_flags = _call(op, cols, fmt, mode, tininess=tininess)
        bad = []
        for i, cs in enumerate(cases):
            want_code, want_flags = _softfloat(op, t, bits, cs, sf_mode, sf_tin)
            want_nan = math.isnan(reference.decode_code(want_code, fmt))
            ok = math.isnan(got[i]) if want_nan else reference.encode_value(float(got[i]), fmt) == want_code
            if not ok or int(got_flags[i]) != want_flags:
                bad.append(f"{op}({', '.join(hex(int(c)) for c in cs)}) {mode}: got {got[i]!r} "
                           f"{Flag(int(got_flags[i]))!r}, SoftFloat {want_code:#x} {Flag(want_flags)!r}")
        assert not bad, f"{len(bad)} of {len(cases)} differ:\n" + "\n".join(bad[:10])


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
