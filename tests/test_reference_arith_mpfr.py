"""fpsim.reference_arith, and the arithmetic kernels themselves, equal MPFR (gmpy2 contexts with
subnormalize) for formats SoftFloat does not have: bfloat16, a 12-bit e5m6 and the IEEE-style
e4m3, every op, modes rne/rtz/rup/rdn."""

from __future__ import annotations

import math
import struct

import gmpy2
import numpy as np
import pytest

import fpsim
from fpsim.reference.arith import op_value

_ROUND = {"rne": gmpy2.RoundToNearest, "rtz": gmpy2.RoundToZero, "rup": gmpy2.RoundUp,
          "rdn": gmpy2.RoundDown}
FORMATS = {"bfloat16": fpsim.formats.bfloat16, "e5m6": fpsim.Format(5, 6),
           "e4m3ieee": fpsim.format("e4m3ieee")}


def _ctx(fmt, mode):
    p = fmt.man_bits + 1
    return gmpy2.context(precision=p, emin=fmt.emin - p + 2, emax=fmt.emax + 1,
                         subnormalize=True, round=_ROUND[mode])


def _mpfr(op, xs, ctx):
    vs = [gmpy2.mpfr(x, 53) for x in xs]
    fn = {"add": ctx.add, "sub": ctx.sub, "mul": ctx.mul, "div": ctx.div, "sqrt": ctx.sqrt,
          "fma": ctx.fma}[op]
    return float(fn(*vs))


def _bits(v: float) -> bytes:
    return struct.pack("<d", v)


def _values(fmt, n, rng):
    codes = rng.integers(0, 1 << fmt.bits, n)
    vals = fpsim.decode(codes, fmt)
    return vals[np.isfinite(vals)]


@pytest.mark.parametrize("mode", list(_ROUND))
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "sqrt", "fma"])
@pytest.mark.parametrize("name", list(FORMATS))
def test_reference_arith_equals_mpfr(name, op, mode):
    fmt = FORMATS[name]
    rng = np.random.default_rng(abs(hash((name, op, mode))) % 2**32)
    arity = {"sqrt": 1, "fma": 3}.get(op, 2)
    pool = _values(fmt, 4000, rng)
    ctx = _ctx(fmt, mode)
    bad = []
    n = 0
    for _ in range(600):
        xs = [float(v) for v in rng.choice(pool, arity)]
        if op == "sqrt":
            xs = [abs(xs[0])]
        if op == "div" and xs[1] == 0:
            continue
        y, _ = op_value(op, xs, fmt, mode)
        want = _mpfr(op, xs, ctx)
        n += 1
        if not (math.isnan(y) and math.isnan(want)) and _bits(y) != _bits(want):
            bad.append(f"{op}{tuple(x.hex() for x in xs)} {mode}: got {y.hex()} MPFR {want.hex()}")
    assert n > 500
    assert not bad, f"{len(bad)} of {n} differ:\n" + "\n".join(bad[:10])


def _boundary_values(fmt):
    """Zeros, the subnormal and normal extremes, max, 1 and neighbours, both signs."""
    mags = [0.0, float(fmt.min_subnormal), 2 * float(fmt.min_subnormal),
            float(fmt.min_normal) - float(fmt.min_subnormal), float(fmt.min_normal),
            float(fmt.max), 1.0, 1.0 + float(fmt.eps), 1.0 - float(fmt.eps) / 2, 3.0]
    return np.array([s * m for m in mags for s in (1.0, -1.0)])


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "sqrt", "fma"])
@pytest.mark.parametrize("name", ["bfloat16", "e5m6"])
def test_kernels_equal_mpfr(name, op):
    """The arithmetic kernels themselves (fpsim.add, ...) against MPFR: every pair (triples:
    a sample) of boundary values plus 3,000 random cases, modes rne/rtz/rup/rdn."""
    fmt = FORMATS[name]
    rng = np.random.default_rng(len(name) * 31 + len(op))
    arity = {"sqrt": 1, "fma": 3}.get(op, 2)
    bnd = _boundary_values(fmt)
    if arity == 1:
        cols = [np.abs(np.concatenate([bnd, _values(fmt, 3000, rng)]))]
    else:
        grid = [g.ravel() for g in np.meshgrid(*([bnd] * min(arity, 2)), indexing="ij")]
        if arity == 3:
            grid.append(rng.choice(bnd, grid[0].size))
        pool = _values(fmt, 6000, rng)
        cols = [np.concatenate([g, rng.choice(pool, 3000)]) for g in grid]
    for mode in _ROUND:
        got = getattr(fpsim, op)(*cols, fmt, mode)
        ctx = _ctx(fmt, mode)
        bad = []
        for i in range(cols[0].size):
            xs = [float(c[i]) for c in cols]
            if op == "div" and xs[1] == 0:
                continue  # MPFR's division by zero is not IEEE's (no divide-by-zero rules)
            want = _mpfr(op, xs, ctx)
            g = float(got[i])
            if not (math.isnan(g) and math.isnan(want)) and _bits(g) != _bits(want):
                bad.append(f"{op}{tuple(x.hex() for x in xs)} {mode}: got {g.hex()} MPFR "
                           f"{want.hex()}")
        assert not bad, f"{len(bad)} of {cols[0].size} differ:\n" + "\n".join(bad[:10])
