"""fpsim.reference_arith equals MPFR (gmpy2 contexts with subnormalize) for formats SoftFloat does
not have: bfloat16, a 12-bit e5m6 and the IEEE-style e4m3, every op, modes rne/rtz/rup/rdn."""

from __future__ import annotations

import math
import struct

import gmpy2
import numpy as np
import pytest

import fpsim
from fpsim.reference_arith import op_value

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
