"""fpsim.reference_arith equals Berkeley SoftFloat (through softfloatpy) on float16 and float32:
every op x the five IEEE rounding modes, result bits and all five exception flags, with tininess
detected after rounding and before rounding.

Cases are TestFloat-style: boundary codes (zeros, smallest and largest subnormals and normals,
max, 1 and its neighbours, powers of two, Inf, quiet NaN) crossed with each other, plus random
codes. Signalling NaN codes are left out: a float carrier cannot hold them.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import softfloatpy as sf

import fpsim
from fpsim import reference
from fpsim.reference.arith import ARITY, Flag, op_value

MODES = {"rne": sf.RoundingMode.NEAR_EVEN, "rna": sf.RoundingMode.NEAR_MAX_MAG,
         "rtz": sf.RoundingMode.MIN_MAG, "rdn": sf.RoundingMode.MIN, "rup": sf.RoundingMode.MAX}
TYPES = {"float16": (sf.Float16, 16, "f16"), "float32": (sf.Float32, 32, "f32")}


def _boundary_codes(bits: int) -> list[int]:
    e, m = (5, 10) if bits == 16 else (8, 23)
    top = ((1 << e) - 1) << m
    bias = (1 << (e - 1)) - 1
    one = bias << m
    mags = [0, 1, 2, 3, (1 << m) - 1, 1 << m, (1 << m) + 1, one - 1, one, one + 1, one + 2,
            top - 1, top - 2, top, top | (1 << (m - 1)), (bias + 5) << m, (bias - 7) << m | 5,
            (1 << (m - 1)), ((bias + 1) << m) | ((1 << m) - 1)]
    return sorted({s | v for v in mags for s in (0, 1 << (bits - 1))})


def _is_snan(code: int, bits: int) -> bool:
    e, m = (5, 10) if bits == 16 else (8, 23)
    mag = code & ((1 << (bits - 1)) - 1)
    return (mag >> m) == (1 << e) - 1 and (mag & ((1 << m) - 1)) != 0 and not (mag >> (m - 1)) & 1


def _cases(bits: int, arity: int, n_random: int, seed: int):
    rng = np.random.default_rng(seed)
    bnd = _boundary_codes(bits)
    cases = list(itertools.product(bnd, repeat=arity)) if arity < 3 else [
        tuple(rng.choice(bnd, 3)) for _ in range(2000)]
    cases += [tuple(int(c) for c in rng.integers(0, 1 << bits, arity)) for _ in range(n_random)]
    # near-cancellation and near-tie pairs for the binary ops
    return [c for c in cases if not any(_is_snan(int(v), bits) for v in c)]


def _softfloat(op: str, t, bits: int, codes, mode, tininess) -> tuple[int, int]:
    vals = [t.from_bytes(int(c).to_bytes(bits // 8, "big")) for c in codes]
    sf.set_rounding_mode(mode)
    sf.set_tininess_mode(tininess)
    sf.set_exception_flags(sf.ExceptionFlag(0))
    prefix = "f16" if bits == 16 else "f32"
    fn = getattr(sf, f"{prefix}_{'mul_add' if op == 'fma' else op}")
    r = fn(*vals)
    return int.from_bytes(r.to_bytes(), "big"), int(sf.get_exception_flags())


@pytest.mark.parametrize("tininess", ["after", "before"])
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("op", list(ARITY))
@pytest.mark.parametrize("name", list(TYPES))
def test_reference_arith_equals_softfloat(name, op, mode, tininess):
    t, bits, _ = TYPES[name]
    fmt = fpsim.format(name)
    n_random = 1500 if tininess == "after" else 300
    cases = _cases(bits, ARITY[op], n_random, seed=hash((name, op, mode)) & 0xFFFF)
    sf_tin = sf.TininessMode.AFTER_ROUNDING if tininess == "after" else sf.TininessMode.BEFORE_ROUNDING
    bad = []
    for codes in cases:
        xs = [reference.decode_code(int(c), fmt) for c in codes]
        want_code, want_flags = _softfloat(op, t, bits, codes, MODES[mode], sf_tin)
        y, flags = op_value(op, xs, fmt, mode, tininess=tininess)
        want_nan = math.isnan(reference.decode_code(want_code, fmt))
        got_code = reference.encode_value(y, fmt)
        same = math.isnan(y) if want_nan else got_code == want_code
        if not same or flags != want_flags:
            bad.append(f"{op}({', '.join(hex(int(c)) for c in codes)}) {mode}: got {got_code:#x} "
                       f"{Flag(flags)!r}, SoftFloat {want_code:#x} {Flag(want_flags)!r}")
    assert not bad, f"{len(bad)} of {len(cases)} differ:\n" + "\n".join(bad[:10])
