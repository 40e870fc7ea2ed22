"""``fpsim.reference.round_value`` equals MPFR (through gmpy2) bit for bit on IEEE-style formats.

An IEEE-style format with ``p = man_bits + 1`` bits of precision, smallest normal ``2^emin`` and
top binade ``2^emax`` is emulated by an MPFR context with ``precision=p`` and
``subnormalize=True``. MPFR writes a number as ``0.1b...b * 2^E`` (significand in [1/2, 1)), one
more than the IEEE exponent, so:

* the largest finite value ``(2 - 2^-m) * 2^emax`` has ``E = emax + 1``  ->  MPFR ``emax = emax + 1``;
* the smallest subnormal ``2^(emin - m)`` has ``E = emin - m + 1 = emin - p + 2``  ->  MPFR ``emin``.

(binary16: emin = -14, emax = 15, p = 11 give MPFR emin = -23, emax = 16.) MPFR rounds with an
unbounded exponent and then overflows to Inf (nearest, away) or to the largest finite value
(toward zero), which is IEEE 754's overflow rule; ``subnormalize`` re-rounds in the subnormal
range using the first rounding's ternary value, so there is no double rounding.

MPFR has no ties-to-away mode, so ``rna`` is built from its parts: the two neighbours ``lo`` and
``hi`` of ``x`` come from RoundDown/RoundUp in a context with the same precision and ``emin`` but
an exponent range far above float64 (so nothing overflows), and ``x`` is a tie iff
``2x == lo + hi`` in exact rationals (``gmpy2.mpq``). A tie rounds with RoundAwayZero in the
target context (which overflows to Inf, as roundTiesToAway does); anything else rounds as
RoundToNearest, because away from ties the two nearest modes agree.

The MPFR emulation is itself checked first against numpy (float16, float32) and ml_dtypes
(bfloat16 and the IEEE-style float8 formats): numpy/ml_dtypes give the ties-to-even result, and
the directed and ties-to-away results follow from it and its ``nextafter`` neighbour.
"""

from __future__ import annotations

import functools
import math
import struct
from fractions import Fraction

import gmpy2
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fpsim
from fpsim.reference.rounding import round_value

MODES = ("rne", "rtz", "rup", "rdn", "rna")

#: IEEE-style formats (``specials="ieee"``, with subnormals) checked against MPFR, by test id.
FORMATS: dict[str, fpsim.Format] = {
    "float16": fpsim.formats.float16,
    "bfloat16": fpsim.formats.bfloat16,
    "float32": fpsim.formats.float32,
    "tfloat32": fpsim.formats.tfloat32,
    "float8_e5m2": fpsim.formats.float8_e5m2,
    "float8_e4m3": fpsim.formats.float8_e4m3,
    "float8_e3m4": fpsim.formats.float8_e3m4,
    # Custom formats are built directly: some spec strings ("e3m2", "e2m1") are aliases of the
    # OCP finite formats.
    "e6m5": fpsim.Format(6, 5),
    "e3m2": fpsim.Format(3, 2),
    "e4m12": fpsim.Format(4, 12),
    "e2m1": fpsim.Format(2, 1),
    "e2m3": fpsim.Format(2, 3),
    "e5m4b7": fpsim.Format(5, 4, bias=7),
    "e4m3b1": fpsim.Format(4, 3, bias=1),
    "e3m2b_neg3": fpsim.Format(3, 2, bias=-3),
}

_ROUND = {
    "rne": gmpy2.RoundToNearest,
    "rtz": gmpy2.RoundToZero,
    "rup": gmpy2.RoundUp,
    "rdn": gmpy2.RoundDown,
    "rna": gmpy2.RoundAwayZero,  # used for ties only; see MpfrFormat.round
}


def bits(v: float) -> bytes:
    return struct.pack("<d", v)


def same(a: float, b: float) -> bool:
    """Bitwise equality of two floats (so -0.0 != 0.0); NaNs compare equal to any NaN, because
    MPFR does not give its NaN a meaningful sign or payload."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return bits(a) == bits(b)


def exact_mpfr(x: float) -> gmpy2.mpfr:
    """``x`` as an mpfr, exactly (53 bits; the default context's exponent range is huge)."""
    v = gmpy2.mpfr(x, 53)
    assert math.isnan(x) or bits(float(v)) == bits(x), x
    return v


class MpfrFormat:
    """Rounding of float64 values into an IEEE-style format, done by MPFR."""

    def __init__(self, fmt: fpsim.Format):
        assert fmt.specials == "ieee" and fmt.subnormals and fmt.signed and fmt.zero
        p = fmt.man_bits + 1
        self.p = p
        self.emin = fmt.emin - p + 2
        self.emax = fmt.emax + 1
        self.ctx = {
            mode: gmpy2.context(precision=p, emin=self.emin, emax=self.emax, subnormalize=True,
                                round=r)
            for mode, r in _ROUND.items()
        }
        # Same grid, exponent unbounded above for every float64 input: the neighbours of x.
        wide = dict(precision=p, emin=self.emin, emax=4096, subnormalize=True)
        self.down = gmpy2.context(round=gmpy2.RoundDown, **wide)
        self.up = gmpy2.context(round=gmpy2.RoundUp, **wide)

    def is_tie(self, v: gmpy2.mpfr) -> bool:
        if not gmpy2.is_finite(v):
            return False
        lo, hi = self.down.plus(v), self.up.plus(v)
        assert gmpy2.is_finite(lo) and gmpy2.is_finite(hi)
        if lo == hi:
            return False
        return 2 * gmpy2.mpq(v) == gmpy2.mpq(lo) + gmpy2.mpq(hi)

    def round(self, x: float, mode: str) -> float:
        v = exact_mpfr(x)
        if mode == "rna":
            r = self.ctx["rna" if self.is_tie(v) else "rne"].plus(v)
        else:
            r = self.ctx[mode].plus(v)
        return float(r)


@functools.lru_cache(maxsize=None)
def mpfr_format(name: str) -> MpfrFormat:
    return MpfrFormat(FORMATS[name])


# ---- inputs ---------------------------------------------------------------------------------

def _next64(v: float, toward: float) -> float:
    return math.nextafter(v, toward)


def _next32(v: float, toward: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.nextafter(np.float32(v), np.float32(toward)))


def _is_float32(v: float) -> bool:
    with np.errstate(over="ignore"):
        return math.isinf(v) or float(np.float32(v)) == v


def grid_inputs(fmt: fpsim.Format, seed: int, step=_next64, per_binade: int = 2) -> list[float]:
    """Structured inputs from the format's own grid, both signs.

    For every binade ``[2^e, 2^(e+1))`` from ``emin - m - 3`` to ``emax + 2`` and a few steps
    ``j`` in it (first, second, third, middle, last two, and ``per_binade`` random ones): the
    grid point ``g`` (a format value, or a value of the format with its exponent unbounded above
    ``emax``), the midpoint ``g + q/2`` to the next grid point, and each of them moved by one
    ulp (of float64, or of float32 with ``step=_next32``) either way. Binades below the smallest
    subnormal use the step ``2^(e - m)`` (there is no format value in them).
    """
    rng = np.random.default_rng(seed)
    m = fmt.man_bits
    out: list[float] = []
    for e in range(fmt.emin - m - 3, fmt.emax + 3):
        q_exp = max(e, fmt.emin) - m if e >= fmt.emin - m else e - m  # log2 of the step
        n = 1 << (e - q_exp)  # steps in the binade: 2^e = n * 2^q_exp
        js = {0, 1, 2, n // 2, n - 2, n - 1}
        js.update(int(j) for j in rng.integers(0, n, size=per_binade))
        for j in sorted(j for j in js if 0 <= j < n):
            g = math.ldexp(n + j, q_exp)
            mid = math.ldexp(2 * (n + j) + 1, q_exp - 1)
            for v in (g, mid):
                out += [v, step(v, 0.0), step(v, math.inf)]
    return out


def special_inputs(fmt: fpsim.Format, seed: int, n_random: int = 300) -> list[float]:
    """Zeros, the smallest subnormal and its half (a tie with 0), max and the overflow tie, the
    neighbours of those, Inf, float64's extremes, and random float64s across the range."""
    m = fmt.man_bits
    t = fmt.min_subnormal
    half_ulp_max = math.ldexp(1.0, fmt.emax - m - 1)
    points = [
        0.0, t, t / 2, 3 * t / 2, t / 4, fmt.min_normal, fmt.min_normal - t / 2,
        fmt.max, fmt.max + half_ulp_max, math.ldexp(1.0, fmt.emax + 1),
        fmt.max + half_ulp_max / 2, fmt.max + 3 * half_ulp_max,
        5e-324, 2.2250738585072014e-308, 1.0, 1.7976931348623157e308,
    ]
    out: list[float] = [-0.0, math.inf, -math.inf]
    for v in points:
        out += [v, math.nextafter(v, 0.0), math.nextafter(v, math.inf)]
    rng = np.random.default_rng(seed)
    lo_e, hi_e = fmt.emin - m - 4, fmt.emax + 2
    exps = rng.integers(lo_e, hi_e + 1, size=n_random)
    sigs = rng.uniform(1.0, 2.0, size=n_random)
    out += [math.ldexp(float(s), int(e)) for s, e in zip(sigs, exps)]
    # Raw float64 bit patterns (any exponent), NaNs dropped.
    raw = rng.integers(0, 0x7FF0_0000_0000_0000, size=50, dtype=np.int64).view(np.float64)
    out += [float(v) for v in raw]
    return out


@functools.lru_cache(maxsize=None)
def structured_inputs(name: str) -> tuple[float, ...]:
    fmt = FORMATS[name]
    seed = sum(map(ord, name))
    pos = grid_inputs(fmt, seed) + special_inputs(fmt, seed)
    seen, out = set(), []
    for v in pos + [-v for v in pos]:
        if bits(v) not in seen:
            seen.add(bits(v))
            out.append(v)
    return tuple(out)


# ---- the oracle is checked first: MPFR emulation vs numpy / ml_dtypes -----------------------

#: Formats with a numpy or ml_dtypes type of the same values, Inf and NaN.
NUMPY_TYPES = {
    "float16": np.float16,
    "float32": np.float32,
    "bfloat16": ml_dtypes.bfloat16,
    "float8_e5m2": ml_dtypes.float8_e5m2,
    "float8_e4m3": ml_dtypes.float8_e4m3,
    "float8_e3m4": ml_dtypes.float8_e3m4,
}

#: ml_dtypes converts float64 to these types through float32 (a double rounding: e.g.
#: bfloat16(1 + 2^-8 + 2^-40) is 1.0, not 1 + 2^-7), so they are fed float32 inputs only.
VIA_FLOAT32 = {"bfloat16", "float8_e5m2", "float8_e4m3", "float8_e3m4"}


def numpy_round(x: float, dtype, mode: str) -> float:
    """Round with numpy/ml_dtypes: its cast is ties-to-even; the other modes pick between the
    cast and its ``nextafter`` neighbour on the other side of ``x``."""
    with np.errstate(over="ignore", invalid="ignore"):
        r = np.array([x], dtype=np.float64).astype(dtype)[0]
        rf = float(r)
        if math.isnan(x) or rf == x:
            return rf
        if rf < x:
            lo, hi = rf, float(np.nextafter(r, dtype(math.inf)))
        else:
            lo, hi = float(np.nextafter(r, dtype(-math.inf))), rf
    toward_zero = hi if x < 0 else lo
    if mode == "rne":
        return rf
    if mode == "rtz":
        return toward_zero
    if mode == "rup":
        return hi
    if mode == "rdn":
        return lo
    assert mode == "rna"
    if math.isinf(lo) or math.isinf(hi):  # beyond max: ties-to-away overflows as ties-to-even
        return rf
    if Fraction(x) - Fraction(lo) == Fraction(hi) - Fraction(x):
        return hi if x > 0 else lo
    return rf


def test_mpfr_contexts_match_binary16():
    mf = mpfr_format("float16")
    assert (mf.p, mf.emin, mf.emax) == (11, -23, 16)
    mf = mpfr_format("float32")
    assert (mf.p, mf.emin, mf.emax) == (24, -148, 128)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(NUMPY_TYPES))
def test_mpfr_emulation_equals_numpy(name, mode):
    """The oracle itself: MPFR-emulated rounding equals numpy / ml_dtypes."""
    dtype = NUMPY_TYPES[name]
    fmt = FORMATS[name]
    assert float(ml_dtypes.finfo(dtype).max) == fmt.max
    assert float(ml_dtypes.finfo(dtype).smallest_subnormal) == fmt.min_subnormal
    if name in VIA_FLOAT32:
        # The binades above 2^127 are not float32 values: those inputs are dropped.
        pos = [v for v in grid_inputs(fmt, 7, step=_next32) + special_inputs(fmt, 7)
               if _is_float32(v)]
        xs = pos + [-v for v in pos]
    else:
        xs = list(structured_inputs(name))
    xs.append(math.nan)
    mf = mpfr_format(name)
    bad = []
    for x in xs:
        a, b = mf.round(x, mode), numpy_round(x, dtype, mode)
        if not same(a, b):
            bad.append(f"x={x.hex()}: mpfr={a.hex()} numpy={b.hex()}")
    assert not bad, f"{len(bad)}/{len(xs)} mismatches, first: " + "; ".join(bad[:10])


def test_mpfr_emulation_known_values():
    """A few hand-checked float16 results, including a double-rounding trap in the subnormals."""
    mf = mpfr_format("float16")
    t = 2.0 ** -24
    cases = [
        (t / 2, "rne", 0.0), (t / 2, "rna", t), (-t / 2, "rna", -t), (-t / 2, "rne", -0.0),
        (-t / 4, "rup", -0.0), (-t / 4, "rdn", -t), (t / 4, "rtz", 0.0), (t / 4, "rup", t),
        (1.5 * t, "rne", 2 * t), (2.5 * t, "rne", 2 * t), (2.5 * t, "rna", 3 * t),
        # Just below a subnormal tie, though it rounds to the tie at 11 bits: must go down.
        (math.nextafter(1.5 * t, 0), "rne", t), (math.nextafter(1.5 * t, 0), "rna", t),
        (65504.0, "rup", 65504.0), (65520.0, "rne", math.inf), (65520.0, "rna", math.inf),
        (math.nextafter(65520.0, 0), "rne", 65504.0), (65520.0, "rtz", 65504.0),
        (65520.0, "rdn", 65504.0), (-65520.0, "rup", -65504.0), (-65520.0, "rdn", -math.inf),
        (math.inf, "rtz", math.inf), (1 + 2.0 ** -11, "rne", 1.0), (1 + 2.0 ** -11, "rna",
                                                                     1 + 2.0 ** -10),
    ]
    for x, mode, want in cases:
        got = mf.round(x, mode)
        assert same(got, want), f"{x.hex()} {mode}: {got.hex()} != {want.hex()}"


# ---- the claim: reference == MPFR ------------------------------------------------------------

def _compare(name: str, mode: str, xs) -> None:
    fmt = FORMATS[name]
    mf = mpfr_format(name)
    bad = []
    for x in xs:
        want = mf.round(x, mode)
        got = round_value(x, fmt, mode, "ieee")
        if not same(got, want):
            bad.append(f"x={x.hex()}: reference={got.hex()} mpfr={want.hex()}")
    assert not bad, (f"{name} {mode}: {len(bad)}/{len(xs)} mismatches, first: "
                     + "; ".join(bad[:10]))


@pytest.mark.parametrize(
    "name,mode", [(n, md) for n in FORMATS for md in MODES],
    ids=[f"{n}-{md}" for n in FORMATS for md in MODES],
)
def test_reference_equals_mpfr(name, mode):
    xs = structured_inputs(name) + (math.nan, -math.nan)
    _compare(name, mode, xs)


def test_structured_inputs_cover_ties_and_overflow():
    """The inputs hold what they promise (ties at 0 and at max, subnormals, both zeros)."""
    for name, fmt in FORMATS.items():
        xs = {bits(v) for v in structured_inputs(name)}
        t, hm = fmt.min_subnormal, math.ldexp(1.0, fmt.emax - fmt.man_bits - 1)
        for v in (0.0, -0.0, t / 2, -t / 2, t, fmt.max + hm, -(fmt.max + hm), fmt.max,
                  fmt.min_normal, 3 * t / 2):
            assert bits(v) in xs, (name, v)


def _in_range(name: str):
    """Floats across the format's range (up to 2 * max), plus values near the format's grid:
    ``k * 2^s`` with ``k`` a few bits wider than the precision, so ties and near-ties occur."""
    fmt = FORMATS[name]
    lim = 2 * fmt.max
    anyf = st.floats(min_value=-lim, max_value=lim, allow_nan=False)
    m = fmt.man_bits
    near = st.builds(
        lambda k, s, neg: -math.ldexp(k, s) if neg else math.ldexp(k, s),
        st.integers(1, 1 << (m + 4)),
        st.integers(fmt.emin - 2 * m - 6, fmt.emax - m - 2),
        st.booleans(),
    )
    return st.one_of(anyf, near)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["float16", "bfloat16"])
def test_reference_equals_mpfr_hypothesis(name, mode):
    @settings(max_examples=300, deadline=None)
    @given(_in_range(name))
    def check(x):
        _compare(name, mode, [x])

    check()


def test_case_counts():
    """Each (format, mode) case checks hundreds (e2m1: every grid step) to thousands of inputs."""
    for name in FORMATS:
        assert len(structured_inputs(name)) >= 800, name
