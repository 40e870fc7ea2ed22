"""The exact oracle of integer-grid rounding (:class:`fpsim.Fixed`, :class:`fpsim.IntGrid`).

Written from the definitions with Python Fractions and ints, sharing no code with
:mod:`fpsim.kernels.fixed`: the ratio ``Q = |x|/δ`` is a Fraction, its floor and fraction are
exact, and each rounding mode is its textbook rule on them. Used by the tests and by nothing else.
"""

from __future__ import annotations

import math
from fractions import Fraction

from fpsim.numerics.fixed import GridFormat
from fpsim.numerics.modes import Event, Overflow, RoundMode

SR_BITS_MAX = 62


def round_integer(Q: Fraction, negative: bool, mode: RoundMode, rnd: int = 0,
                  sr_bits: int = SR_BITS_MAX) -> int:
    """The magnitude ``K`` that ``Q >= 0`` (the ratio |x|/δ of a value of sign ``negative``)
    rounds to, unbounded: the integer below or above Q by the mode's rule. ``sr`` rounds up iff
    ``floor(frac · 2^sr_bits) + R >= 2^sr_bits`` with R the top ``sr_bits`` of ``rnd`` (62 bits)."""
    lo = math.floor(Q)
    frac = Q - lo
    if frac == 0:
        return lo
    if mode == RoundMode.RNE:
        up = frac > Fraction(1, 2) or (frac == Fraction(1, 2) and lo % 2 == 1)
    elif mode == RoundMode.RNA:
        up = frac >= Fraction(1, 2)
    elif mode == RoundMode.RTZ:
        up = False
    elif mode == RoundMode.RUP:
        up = not negative
    elif mode == RoundMode.RDN:
        up = negative
    elif mode == RoundMode.RTO:
        up = lo % 2 == 0
    else:  # SR
        r = rnd >> (SR_BITS_MAX - sr_bits)
        up = math.floor(frac * (1 << sr_bits)) + r >= 1 << sr_bits
    return lo + 1 if up else lo


def round_grid(x: float, fmt: GridFormat, rounding="rne", overflow="saturate", rnd: int = 0,
               sr_bits: int = SR_BITS_MAX):
    """``(k, events)``: the integer that ``x`` rounds to on the grid and its :class:`Event` bits.

    ``k`` is None for a NaN result (NaN input; ±Inf under ``wrap``) and for an out-of-range
    value under ``error`` (then ``events`` has OVERFLOW). Policies: saturate to
    ``k_min``/``k_max``; wrap to the two's-complement integer ``k mod 2^bits``.
    """
    mode = RoundMode.parse(rounding)
    policy = Overflow.parse(overflow, fixed=True)
    if math.isnan(x):
        return None, Event(0)
    negative = math.copysign(1.0, x) < 0
    if math.isinf(x):
        if policy == Overflow.SATURATE:
            return (fmt.k_min if negative else fmt.k_max), Event.OVERFLOW | Event.INEXACT
        if policy == Overflow.WRAP:
            return None, Event.OVERFLOW | Event.NAN
        return None, Event.OVERFLOW
    Q = abs(Fraction(x)) / Fraction(fmt.delta)
    K = round_integer(Q, negative, mode, rnd, sr_bits)
    k = -K if negative else K
    ev = Event(0)
    if K == 0 and Q != 0:
        ev |= Event.UNDERFLOW
    if K != Q:
        ev |= Event.INEXACT
    if fmt.k_min <= k <= fmt.k_max:
        return k, ev
    ev |= Event.OVERFLOW | Event.INEXACT
    if policy == Overflow.SATURATE:
        return (fmt.k_min if k < 0 else fmt.k_max), ev
    if policy == Overflow.WRAP:
        w = k % (1 << fmt.bits)
        if fmt.signed and w >= 1 << (fmt.bits - 1):
            w -= 1 << fmt.bits
        return w, ev
    return None, ev


def value(k: int, fmt: GridFormat, dtype: str = "float64") -> float:
    """``k·δ`` rounded once to nearest even into ``dtype`` (``float64`` or ``float32``) from
    its exact value (as a Python float; float32 values are exactly float64 numbers)."""
    exact = k * Fraction(fmt.delta)
    if dtype == "float64":
        return float(exact)  # Fraction -> float rounds correctly (to nearest even)
    return _round_float32(exact)


def _round_float32(v: Fraction) -> float:
    """The float32 nearest ``v`` (ties to even), as a Python float; ±Inf beyond the range."""
    if v == 0:
        return 0.0
    sign = -1.0 if v < 0 else 1.0
    a = abs(v)
    e = math.floor(math.log2(a.numerator) - math.log2(a.denominator))
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    q = max(e, -126) - 23  # ulp exponent (float32 subnormals share 2^-149)
    scaled = a / Fraction(2) ** q
    n = math.floor(scaled)
    rest = scaled - n
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and n % 2 == 1):
        n += 1
    r = n * Fraction(2) ** q
    if r >= Fraction(2) ** 128:
        return sign * math.inf
    return sign * float(r)


def binade(x: float, fmt: GridFormat) -> int:
    """``floor(log2(|x|/δ))`` of a finite non-zero ``x``, exactly."""
    Q = abs(Fraction(x)) / Fraction(fmt.delta)
    e = Q.numerator.bit_length() - Q.denominator.bit_length()
    if Fraction(2) ** e > Q:
        e -= 1
    return e
