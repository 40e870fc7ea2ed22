"""The living definition: slow, obviously correct rounding with Python ints and Fractions.

Nothing here shares code with the kernels. Every value is handled as an exact
:class:`fractions.Fraction`, the two neighbours of a value are found from the definition of the
format (binade, quantum), and each rounding mode is its textbook rule. The kernels are tested
against this module bit for bit; this module is tested against ml_dtypes, numpy and MPFR.

Conventions (shared with the kernels and written down in ``docs/formats.md``):

* Rounding uses an unbounded exponent above the top binade; a result above ``max`` overflows.
  Overflow gives ±max when the policy is ``saturate``, when the mode rounds toward zero in that
  direction (rtz, rto, rup for negatives, rdn for positives), or when the format has neither Inf
  nor NaN; else ±Inf, or NaN for formats without Inf (SoftFloat's rule; ml_dtypes' behaviour).
  An Inf input is an overflowing value unless the format has Inf and the policy is ``ieee``
  (``saturate`` turns Inf into ±max, as CUDA's ``satfinite`` does).
* Without subnormals the positive neighbours below the smallest normal are 0 and the smallest
  normal; without zero (``float8_e8m0fnu``) every tiny value becomes the smallest value and 0
  becomes NaN. Negative non-zero values in an unsigned format are NaN; -0 becomes +0 in formats
  without -0.
* Ties-to-even and round-to-odd look at the last bit of the candidates' *codes*.
* Stochastic rounding with random integer ``R`` (62 bits) and ``k`` compared bits rounds away
  from zero iff ``floor(frac * 2^k) + (R >> (62 - k)) >= 2^k``, ``frac`` = distance to the value
  truncated toward zero in units of the gap between the neighbours.
* A NaN result carries the sign bit of the format's NaN code: negative for ``fnuz`` (the code
  100...0), positive for unsigned formats, the input's sign otherwise (``ieee`` and ``fn`` have a
  NaN code per sign; ``finite`` formats keep NaN inputs in the carrier as they are).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np

from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format
from fpsim.kernels.rng import random_bits_py, stream_key
from fpsim.numerics.modes import Event, Overflow, RoundMode

SR_BITS_MAX = 62


def _floor_log2(v: Fraction) -> int:
    """floor(log2 v) for v > 0, exactly."""
    e = v.numerator.bit_length() - v.denominator.bit_length()
    # 2^e <= v < 2^(e+2) after this estimate; fix it up by comparison.
    if v < Fraction(2) ** e:
        e -= 1
    elif v >= Fraction(2) ** (e + 1):
        e += 1
    return e


@functools.lru_cache(maxsize=None)
def smallest_positive(fmt: Format) -> Fraction:
    """Smallest positive value T (min subnormal, or min normal without subnormals)."""
    m = fmt.man_bits
    return Fraction(2) ** (fmt.emin - m) if fmt.subnormals else Fraction(2) ** fmt.emin


@functools.lru_cache(maxsize=None)
def max_finite(fmt: Format) -> Fraction:
    """Largest finite value, from the codes: the largest code whose value is finite."""
    best = Fraction(0)
    mag_bits = fmt.exp_bits + fmt.man_bits
    top_e = (1 << fmt.exp_bits) - 1
    # The largest finite value sits in one of the two top binades; scan their codes.
    for E in (top_e, top_e - 1):
        for M in ((1 << fmt.man_bits) - 1, (1 << fmt.man_bits) - 2):
            if M < 0 or E < 0:
                continue
            v = fmt.value_of_code((E << fmt.man_bits) | M)
            if isinstance(v, Fraction) and v > best:
                best = v
    assert mag_bits > 0
    return best


def code_of_value(v: Fraction, fmt: Format) -> int:
    """Magnitude code (sign bit clear) of a non-negative value that the format represents."""
    m = fmt.man_bits
    if v == 0:
        return 0
    e = _floor_log2(v)
    if e >= fmt.emin:
        frac = v / Fraction(2) ** e - 1
        M = frac * (1 << m)
        assert M.denominator == 1, "value is not representable"
        return ((e + fmt.bias) << m) | int(M)
    M = v / Fraction(2) ** (fmt.emin - m)
    assert M.denominator == 1 and fmt.subnormals, "value is not representable"
    return int(M)


def neighbours(X: Fraction, fmt: Format) -> tuple[Fraction, Fraction]:
    """The format's values (exponent unbounded above) just below-or-equal and just above X > 0."""
    T = smallest_positive(fmt)
    if X < T:
        return Fraction(0), T
    e = max(_floor_log2(X), fmt.emin)
    q = Fraction(2) ** (e - fmt.man_bits)
    lower = (X // q) * q
    return lower, lower + q


def _odd(v: Fraction, fmt: Format) -> bool:
    """Whether the code of the value ``v`` (0 <= v <= max) ends in a 1."""
    return bool(code_of_value(v, fmt) & 1)


def _signed(v: float, neg: bool) -> float:
    return -v if neg else v


def _nan(fmt: Format, neg: bool) -> float:
    """A NaN result: the sign of the format's NaN code (fnuz: negative; unsigned: positive), or
    the input's sign where the format has a NaN per sign (ieee, fn) or none at all (finite)."""
    if fmt.specials == "fnuz":
        return -math.nan
    if not fmt.signed:
        return math.nan
    return _signed(math.nan, neg)


def round_value(x: float, fmt: "Format | str", rounding="rne", overflow="ieee", rnd: int = 0,
                sr_bits: int | None = None) -> float:
    """Round the float ``x`` into ``fmt``; returns the result as a Python float (exact).

    ``rnd`` is the 62-bit random integer stochastic rounding uses; ``sr_bits`` its compared bits.
    """
    return round_with_events(x, fmt, rounding, overflow, rnd, sr_bits)[0]


def round_with_events(x: float, fmt: "Format | str", rounding="rne", overflow="ieee",
                      rnd: int = 0, sr_bits: int | None = None) -> tuple[float, int]:
    """As :func:`round_value`, and the :class:`~fpsim.numerics.modes.Event` bits of that rounding."""
    y, overflowed = _round(x, fmt, rounding, overflow, rnd, sr_bits)
    return y, events(x, y, fmt, overflowed)


def _round(x, fmt, rounding, overflow, rnd, sr_bits) -> tuple[float, bool]:
    fmt = _format(fmt)
    mode = RoundMode.parse(rounding)
    policy = Overflow.parse(overflow)
    k = SR_BITS_MAX if sr_bits is None else sr_bits
    neg = math.copysign(1.0, x) < 0
    if math.isnan(x):
        return _nan(fmt, neg), False
    if not fmt.signed and neg and x != 0:
        return _nan(fmt, neg), False
    if x == 0:
        if not fmt.zero:
            return _nan(fmt, neg), False
        return (-0.0 if (neg and fmt.has_negzero) else 0.0), False
    def overflowed() -> tuple[float, bool]:
        return overflow_value(neg, fmt, mode, policy), True

    if math.isinf(x):
        keep = fmt.has_inf and policy == Overflow.IEEE
        return (x, False) if keep else overflowed()
    return round_rational(abs(Fraction(x)), neg, fmt, mode, policy, rnd, k)


def overflow_value(neg: bool, fmt: Format, mode: RoundMode, policy: Overflow) -> float:
    """What an overflowing magnitude becomes (SoftFloat's rule, then the format's means)."""
    toward_zero = mode in (RoundMode.RTZ, RoundMode.RTO) or (
        mode == RoundMode.RUP and neg) or (mode == RoundMode.RDN and not neg)
    if policy == Overflow.SATURATE or toward_zero or not (fmt.has_inf or fmt.has_nan):
        return _signed(float(max_finite(fmt)), neg)
    return _signed(math.inf, neg) if fmt.has_inf else _nan(fmt, neg)


def round_rational(X: Fraction, neg: bool, fmt: Format, mode: RoundMode, policy: Overflow,
                   rnd: int = 0, k: int = SR_BITS_MAX) -> tuple[float, bool]:
    """Round the exact non-zero magnitude ``X`` (sign ``neg``) into ``fmt``; returns the result
    and whether it overflowed. The definition every other rounding here reduces to."""
    if not fmt.signed and neg:
        return _nan(fmt, neg), False
    vmax = max_finite(fmt)

    def overflowed() -> tuple[float, bool]:
        return overflow_value(neg, fmt, mode, policy), True

    lower, upper = neighbours(X, fmt)
    if X == lower:
        result = lower
    else:
        d_lo, d_up = X - lower, upper - X
        if mode == RoundMode.RNE:
            if d_lo != d_up:
                result = lower if d_lo < d_up else upper
            else:
                result = upper if (lower <= vmax and _odd(lower, fmt)) else lower
                if lower > vmax:
                    result = upper
        elif mode == RoundMode.RNA:
            result = lower if d_lo < d_up else upper
        elif mode == RoundMode.RTZ:
            result = lower
        elif mode == RoundMode.RUP:
            result = lower if neg else upper
        elif mode == RoundMode.RDN:
            result = upper if neg else lower
        elif mode == RoundMode.RTO:
            lower_odd = lower != 0 and lower <= vmax and _odd(lower, fmt)
            result = lower if lower_odd else upper
        else:  # SR
            frac = d_lo / (upper - lower)
            scaled = math.floor(frac * (1 << k))
            result = upper if scaled + (rnd >> (SR_BITS_MAX - k)) >= (1 << k) else lower
    if result == 0 and not fmt.zero:
        result = smallest_positive(fmt)
    if result > vmax:
        return overflowed()
    if result == 0:
        return (-0.0 if (neg and fmt.has_negzero) else 0.0), False
    return _signed(float(result), neg), False


def quantize(x, fmt: "Format | str", rounding="rne", overflow="ieee", seed: int = 0, *,
             stream: int = 0, sr_bits: int | None = None) -> np.ndarray:
    """:func:`round_value` over an array (float64 result); element ``i`` of the flattened array
    gets the random bits ``random_bits_py(stream_key(seed, stream), i)``."""
    arr = np.asarray(x, dtype=np.float64)
    key = stream_key(seed, stream)
    flat = arr.reshape(-1)
    out = np.array([round_value(float(v), fmt, rounding, overflow, random_bits_py(key, i), sr_bits)
                    for i, v in enumerate(flat)], dtype=np.float64)
    return out.reshape(arr.shape)


def encode_value(v: float, fmt: "Format | str") -> int:
    """The code of a value already in ``fmt`` (a result of :func:`round_value`).

    NaN: ``ieee`` sign | all-ones exponent | quiet bit; ``fn`` sign | all ones; ``fnuz`` 100...0;
    ``finite`` formats have no NaN and use ml_dtypes' sign-only code of the opposite sign.
    """
    fmt = _format(fmt)
    m, e = fmt.man_bits, fmt.exp_bits
    neg = math.copysign(1.0, v) < 0
    sign = (1 << (e + m)) if (fmt.signed and neg) else 0
    if math.isnan(v):
        if fmt.specials == "ieee":
            return sign | (((1 << e) - 1) << m) | (1 << (m - 1))
        if fmt.specials == "fn":
            return sign | ((1 << (e + m)) - 1)
        if fmt.specials == "fnuz":
            return 1 << (e + m)
        return (1 << (e + m)) ^ sign
    if math.isinf(v):
        return sign | (((1 << e) - 1) << m)
    if v == 0 and not fmt.has_negzero:
        return 0  # -0 is no value here (fnuz: 100...0 is NaN)
    return sign | code_of_value(abs(Fraction(v)), fmt)


def decode_code(code: int, fmt: "Format | str") -> float:
    """float value of a code (NaN codes give NaN with the code's sign bit)."""
    fmt = _format(fmt)
    v = fmt.value_of_code(code)
    neg = fmt.signed and bool(code >> (fmt.exp_bits + fmt.man_bits))
    if isinstance(v, float):
        return _signed(abs(v), neg) if math.isnan(v) else v
    return -0.0 if (v == 0 and neg and fmt.has_negzero) else float(v)


def events(x: float, y: float, fmt: "Format | str", overflowed: bool) -> int:
    """The :class:`~fpsim.numerics.modes.Event` bits of rounding ``x`` to ``y``, from their definitions;
    ``overflowed`` says whether the rounding (exponent unbounded) went above max."""
    fmt = _format(fmt)
    if math.isnan(x):
        return 0
    ev = 0
    if math.isnan(y):
        ev |= Event.NAN | Event.INEXACT
    else:
        if y != x:
            ev |= Event.INEXACT
        if y == 0 and x != 0:
            ev |= Event.UNDERFLOW
        if y != 0 and not math.isinf(y) and abs(y) < fmt.min_normal:
            ev |= Event.SUBNORMAL
    if overflowed:
        ev |= Event.OVERFLOW
    return int(ev)
