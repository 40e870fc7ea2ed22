"""Exact reference arithmetic: add, sub, mul, div, sqrt and fma in any format, rounded once, with
the IEEE exception flags. Slow and obviously correct, like :mod:`fpsim.reference` on which it
builds: every result is computed exactly as a Fraction (sqrt: see :func:`_sqrt`) and handed to
:func:`fpsim.reference.round_rational`.

Conventions (IEEE 754-2019 default exception handling, as Berkeley SoftFloat implements it):

* Operands must be values of the format. A NaN operand gives NaN without flags (operands are quiet
  NaNs: a float carrier cannot hold a signalling one). NaN results are the canonical quiet NaN;
  their sign is not specified (compare NaN-ness only).
* Invalid (NaN result, ``INVALID``): inf - inf, 0 * inf, 0 / 0, inf / inf, sqrt of a negative
  non-zero number, and fma with 0 * inf (even when the addend is NaN) or inf - inf.
* Division of a finite non-zero number by zero gives a signed Inf and ``DIVBYZERO``. An infinite
  result (also from Inf operands) is rounded into the format as :func:`fpsim.quantize` rounds an
  Inf input: ±Inf in a format with Inf under ``ieee``; ±max under ``saturate``; in a format
  without Inf ±max where the mode rounds toward zero for that sign (``rtz``, ``rto``, ``rup``
  for -Inf, ``rdn`` for +Inf) and in formats without NaN, else NaN. The flags stay those of the
  exact infinite result (``DIVBYZERO`` or none: no ``OVERFLOW``/``INEXACT``).
* An exact zero result of add/sub/fma cancellation is +0, or -0 under ``rdn``; the sum of two
  zeros of the same sign keeps that sign. Zero products and quotients take the XOR of the signs.
  sqrt(-0) is -0.
* ``OVERFLOW`` when the rounded magnitude (unbounded exponent) exceeds max; ``INEXACT`` when the
  result differs from the exact value (always with overflow); ``UNDERFLOW`` when the result is
  tiny and inexact, tininess detected after rounding (the magnitude rounded to the format's
  precision with an unbounded exponent is below min_normal) or, with ``tininess="before"``,
  before rounding (the exact magnitude is below min_normal).
"""

from __future__ import annotations

import math
from fractions import Fraction

from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format
from fpsim.numerics.modes import Flag, Overflow, RoundMode
from fpsim.reference.rounding import _signed, round_rational, round_value

SR_BITS_MAX = 62


#: Number of operands of each operation.
ARITY = {"add": 2, "sub": 2, "mul": 2, "div": 2, "sqrt": 1, "fma": 3}


def _exact(x: float) -> Fraction:
    return Fraction(x)


def _neg(x: float) -> bool:
    return math.copysign(1.0, x) < 0


def _zero(neg: bool, fmt: Format) -> float:
    """An exact zero result: ±0, or NaN in a format without zero (float8_e8m0fnu), as rounding
    zero into it gives (reference.round_value); no flag is raised."""
    if not fmt.zero:
        return math.nan
    return -0.0 if (neg and fmt.has_negzero) else 0.0


def _check_operand(x: float, fmt: Format) -> None:
    if math.isnan(x) or (math.isinf(x) and fmt.has_inf):
        return
    y = round_value(x, fmt, "rtz")
    if math.isinf(x) or y != x:
        raise ValueError(f"operand {x!r} is not a value of {fmt}")


def _sqrt(X: Fraction, fmt: Format) -> Fraction:
    """A rational that rounds exactly like sqrt(X) for every mode (X > 0).

    With J fractional bits, Y = floor(sqrt(X) * 2^J) / 2^J. If Y^2 == X the root is Y. Otherwise
    sqrt(X) lies strictly inside (Y, Y + 2^-J); J is chosen so that 2^-J divides every rounding
    boundary (format values, midpoints, and the 2^-62-ulp grid of stochastic rounding, all
    multiples of 2^(emin - m - 63)), so the interval holds none, and its midpoint rounds like
    sqrt(X) in every mode.
    """
    J = -(fmt.emin - fmt.man_bits - SR_BITS_MAX - 3)
    scaled = X * Fraction(4) ** J
    root = math.isqrt(scaled.numerator // scaled.denominator)
    Y = Fraction(root, 1 << J)
    if Y * Y == X:
        return Y
    return Y + Fraction(1, 1 << (J + 1))


def _tiny_after_rounding(X: Fraction, neg: bool, fmt: Format, mode: RoundMode, rnd: int,
                         k: int) -> bool:
    """Whether X rounded to the format's precision with an unbounded exponent is below min_normal."""
    # Same precision, exponent range of float64: the one definition, numerics.arith._wide
    # (imported here, not at module level: numerics.arith imports the kernels).
    from fpsim.numerics.arith import _wide
    wide = _wide(fmt)
    y, _ = round_rational(X, neg, wide, mode, Overflow.IEEE, rnd, k)
    return abs(y) < fmt.min_normal


def op_value(op: str, operands, fmt: "Format | str", rounding="rne", overflow="ieee",
             rnd: int = 0, sr_bits: int | None = None, tininess: str = "after", *,
             any_operands: bool = False) -> tuple[float, int]:
    """The correctly rounded result of ``op`` on ``operands`` (floats that are values of ``fmt``)
    and its :class:`Flag` bits.

    Args:
        op: ``add``, ``sub``, ``mul``, ``div``, ``sqrt`` or ``fma`` (``a * b + c``).
        rnd, sr_bits: random integer (62 bits) and compared bits of stochastic rounding.
        tininess: ``"after"`` (SoftFloat's default) or ``"before"`` rounding.
        any_operands: accept any floats as operands (the exact result of the op on them is
            rounded once all the same); accumulations add exact products this way.
    """
    fmt = _format(fmt)
    mode = RoundMode.parse(rounding)
    policy = Overflow.parse(overflow)
    if op not in ARITY:
        raise ValueError(f"op={op!r} is invalid: allowed values are {', '.join(ARITY)}")
    if len(operands) != ARITY[op]:
        raise ValueError(f"{op} takes {ARITY[op]} operands, got {len(operands)}")
    if tininess not in ("after", "before"):
        raise ValueError(f"tininess={tininess!r} is invalid: use 'after' or 'before'")
    xs = [float(v) for v in operands]
    for v in xs:
        if not any_operands:
            _check_operand(v, fmt)
    k = SR_BITS_MAX if sr_bits is None else sr_bits
    nan = math.nan

    def infinite(neg: bool) -> tuple[float, int]:
        # The one rule for infinities: rounded as quantize rounds an Inf input.
        return round_value(_signed(math.inf, neg), fmt, mode, policy, rnd, k), 0

    # 1. Specials: NaN operands, invalid operations, infinities, exact zeros.
    if op == "fma":
        a, b, c = xs
        if math.isnan(a) or math.isnan(b):
            return nan, 0
        prod_inf = math.isinf(a) or math.isinf(b)
        if prod_inf and (a == 0 or b == 0):
            return nan, Flag.INVALID
        if math.isnan(c):
            return nan, 0
        sp = _neg(a) != _neg(b)
        if prod_inf:
            if math.isinf(c) and _neg(c) != sp:
                return nan, Flag.INVALID
            return infinite(sp)
        if math.isinf(c):
            return infinite(_neg(c))
        exact = _exact(a) * _exact(b) + _exact(c)
        if exact == 0:
            if a * b == 0 and c == 0 and sp == _neg(c):
                return _zero(sp, fmt), 0
            return _zero(mode == RoundMode.RDN, fmt), 0
    elif op in ("add", "sub"):
        a, b = xs
        if op == "sub":
            b = -b
        if math.isnan(a) or math.isnan(b):
            return nan, 0
        if math.isinf(a) or math.isinf(b):
            if math.isinf(a) and math.isinf(b) and _neg(a) != _neg(b):
                return nan, Flag.INVALID
            return infinite(_neg(a) if math.isinf(a) else _neg(b))
        exact = _exact(a) + _exact(b)
        if exact == 0:
            if a == 0 and b == 0 and _neg(a) == _neg(b):
                return _zero(_neg(a), fmt), 0
            return _zero(mode == RoundMode.RDN, fmt), 0
    elif op == "mul":
        a, b = xs
        if math.isnan(a) or math.isnan(b):
            return nan, 0
        sp = _neg(a) != _neg(b)
        if math.isinf(a) or math.isinf(b):
            if a == 0 or b == 0:
                return nan, Flag.INVALID
            return infinite(sp)
        exact = _exact(a) * _exact(b)
        if exact == 0:
            return _zero(sp, fmt), 0
    elif op == "div":
        a, b = xs
        if math.isnan(a) or math.isnan(b):
            return nan, 0
        sq = _neg(a) != _neg(b)
        if math.isinf(a):
            if math.isinf(b):
                return nan, Flag.INVALID
            return infinite(sq)
        if math.isinf(b):
            return _zero(sq, fmt), 0
        if b == 0:
            if a == 0:
                return nan, Flag.INVALID
            y, _ = infinite(sq)
            return y, Flag.DIVBYZERO
        if a == 0:
            return _zero(sq, fmt), 0
        exact = _exact(a) / _exact(b)
    else:  # sqrt
        (a,) = xs
        if math.isnan(a):
            return nan, 0
        if a == 0:
            return a, 0
        if _neg(a):
            return nan, Flag.INVALID
        if math.isinf(a):
            return a, 0
        exact = _sqrt(_exact(a), fmt)

    # 2. Round the exact non-zero value once, then the flags.
    neg = exact < 0
    X = abs(exact)
    y, overflowed = round_rational(X, neg, fmt, mode, policy, rnd, k)
    flags = 0
    inexact = overflowed or math.isinf(y) or math.isnan(y) or Fraction(abs(y)) != X
    if overflowed:
        flags |= Flag.OVERFLOW | Flag.INEXACT
    elif inexact:
        flags |= Flag.INEXACT
        tiny = (X < Fraction(fmt.min_normal) if tininess == "before"
                else _tiny_after_rounding(X, neg, fmt, mode, rnd, k))
        if tiny:
            flags |= Flag.UNDERFLOW
    return y, int(flags)


__all__ = ["ARITY", "Flag", "op_value"]
