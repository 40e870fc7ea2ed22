"""Correctly rounded add/sub/mul/div/sqrt/fma: exact float64 intermediates fed to ``round_bits``.

Operands are float64 values of the target format, which has at most 26 bits of precision
(``man_bits <= 25``) and exponents within ±511. Then:

* ``a * b`` is exact in float64 (2 x 26 = 52 significand bits, no overflow or underflow);
* ``a + b`` rounded to nearest leaves an exactly representable error (Knuth's TwoSum);
* ``a / b`` and ``sqrt(a)`` rounded to nearest leave a remainder ``a - q*b`` / ``a - s*s`` whose
  sign is computed exactly with Dekker's TwoProduct (Veltkamp splitting, no FMA needed).

The exact result is ``hi + err`` with ``hi`` a float64 and only the sign of ``err`` needed; it is
turned into the float64 *rounded to odd* (truncate, then set the last bit if inexact), which
keeps every bit that a later rounding to ``p <= 51`` bits can use (Boldo & Melquiond: rounding to
odd at ``p + 2`` or more bits, then to ``p`` bits in any IEEE mode, equals rounding once; for
stochastic rounding the bits above the forced last bit are exact, hence ``sr_bits <= 51 - m``).
``round_bits`` on the float64 carrier then rounds once into the format.

On CUDA ``a*b + c`` would be contracted into an FMA and break TwoSum/TwoProduct, so every
product goes through :func:`.bits.mul_rn` (libdevice ``dmul_rn`` on CUDA, a plain product here).
"""

from __future__ import annotations

import math
import numba
import numpy as np
from numba import njit, prange

from fpsim.kernels.bitcast import bits_f64, f64_bits
from fpsim.kernels.bits import mul_rn, signbit
from fpsim.kernels.rng import random_bits
from fpsim.kernels.round import EV_FIELD, RDN, RNE, RTZ, SR, carrier_bits, round_bits
from fpsim.numerics.modes import Flag

OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_SQRT, OP_FMA = 0, 1, 2, 3, 4, 5
#: :class:`fpsim.Flag` bits (SoftFloat's values; see its docstring for why not Event's order),
#: as plain ints so Numba folds them into constants.
F_INEXACT, F_UNDERFLOW, F_OVERFLOW, F_DIVBYZERO, F_INVALID = (
    int(Flag.INEXACT), int(Flag.UNDERFLOW), int(Flag.OVERFLOW), int(Flag.DIVBYZERO),
    int(Flag.INVALID))
_SPLIT = 134217729.0  # 2^27 + 1: Veltkamp's constant for 53-bit doubles
_SIGN = np.int64(1) << 63
_QNAN = np.int64(0x7FF8000000000000)
_INF = np.int64(0x7FF0000000000000)


@njit(cache=True, inline="always")
def sign_of_rem(x, y, target):
    """Sign of ``target - x*y``, exactly, for x*y within a few ulps of target."""
    # Every product goes through mul_rn: on CUDA a plain product feeding an addition would be
    # contracted into an FMA, and these identities need each product rounded on its own.
    t = mul_rn(_SPLIT, x)
    xh = t - (t - x)
    xl = x - xh
    t = mul_rn(_SPLIT, y)
    yh = t - (t - y)
    yl = y - yh
    ph = mul_rn(x, y)
    pl = ((mul_rn(xh, yh) - ph) + mul_rn(xh, yl) + mul_rn(xl, yh)) + mul_rn(xl, yl)  # Dekker
    d = target - ph  # exact (Sterbenz): ph is within a factor 2 of target
    return np.int64(d > pl) - np.int64(d < pl)


@njit(cache=True, inline="always")
def two_sum_sign(a, b, mode):
    """``(s, es)``: ``s = a + b`` rounded to nearest and the sign of the exact error
    ``a + b - s`` (Knuth's TwoSum), for finite ``a``, ``b``. An exact zero sum gets the sign
    IEEE gives it in ``mode``: that of the operands when both are zeros of one sign, else +0
    (-0 when rounding down)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    if s == 0.0:
        same = (a == 0.0) & (b == 0.0) & (signbit(a) == signbit(b))
        s = (-0.0 if signbit(a) else 0.0) if same else (-0.0 if mode == RDN else 0.0)
    return s, np.int64(e > 0.0) - np.int64(e < 0.0)


@njit(cache=True, inline="always")
def exact_result(op, a, b, c, mode):
    """The exact result of ``op`` on float64 operands, as ``(x, es, special, flags)``.

    ``special`` False: the exact result is ``x + err`` (``x`` a finite float64, ``es`` the sign
    of the tiny ``err``, of magnitude below half an ulp of ``x``). ``special`` True: the result is
    ``x`` itself, with no rounding to do (NaN, ±Inf or an exact ±0, IEEE default handling as in
    SoftFloat), and ``flags`` holds the INVALID/DIVBYZERO flag it raised.
    """
    if op == OP_SUB:
        b = -b
    if op == OP_ADD or op == OP_SUB:
        if math.isnan(a) or math.isnan(b):
            return np.nan, np.int64(0), True, 0
        if math.isinf(a) or math.isinf(b):
            if math.isinf(a) and math.isinf(b) and (a > 0.0) != (b > 0.0):
                return np.nan, np.int64(0), True, F_INVALID
            return (a if math.isinf(a) else b), np.int64(0), True, 0
        s, es = two_sum_sign(a, b, mode)
        return s, es, s == 0.0, 0
    if op == OP_MUL or op == OP_FMA:
        if math.isnan(a) or math.isnan(b):
            return np.nan, np.int64(0), True, 0
        prod_inf = math.isinf(a) or math.isinf(b)
        if prod_inf and (a == 0.0 or b == 0.0):
            return np.nan, np.int64(0), True, F_INVALID
        p = mul_rn(a, b)  # exact (or ±Inf); pinned: on CUDA it would fuse with the TwoSum
        if op == OP_MUL:
            return p, np.int64(0), prod_inf or p == 0.0, 0
        if math.isnan(c):
            return np.nan, np.int64(0), True, 0
        if prod_inf:
            if math.isinf(c) and (c > 0.0) != (p > 0.0):
                return np.nan, np.int64(0), True, F_INVALID
            return p, np.int64(0), True, 0
        if math.isinf(c):
            return c, np.int64(0), True, 0
        s, es = two_sum_sign(p, c, mode)
        return s, es, s == 0.0, 0
    if op == OP_DIV:
        if math.isnan(a) or math.isnan(b):
            return np.nan, np.int64(0), True, 0
        if math.isinf(a) and math.isinf(b):
            return np.nan, np.int64(0), True, F_INVALID
        if b == 0.0 and a == 0.0:
            return np.nan, np.int64(0), True, F_INVALID
        if b == 0.0:  # (Numba raises on float division by zero: no a / b here)
            inf = -np.inf if signbit(a) != signbit(b) else np.inf
            return inf, np.int64(0), True, (0 if math.isinf(a) else F_DIVBYZERO)
        q = a / b
        if math.isinf(a) or math.isinf(b) or a == 0.0:
            return q, np.int64(0), True, 0
        r = sign_of_rem(q, b, a)  # a = q*b + rem; the exact quotient is q + rem/b
        return q, (r if b > 0.0 else -r), False, 0
    # OP_SQRT
    if math.isnan(a):
        return np.nan, np.int64(0), True, 0
    if a < 0.0:
        return np.nan, np.int64(0), True, F_INVALID
    if a == 0.0 or math.isinf(a):
        return a, np.int64(0), True, 0
    s = math.sqrt(a)
    return s, sign_of_rem(s, s, a), False, 0  # the exact root is above s iff a > s^2


@njit(cache=True, inline="always")
def odd_bits(x, es):
    """``(|y| bits, sign)`` of ``y``, the float64 rounding to odd of ``x + err`` (``es`` the sign
    of ``err``, which is below half an ulp of ``x``): truncate toward zero (one ulp down when
    ``err`` points toward zero), then set the last bit when inexact."""
    hb = f64_bits(x)
    sign = (hb >> 63) & 1
    mag = hb & ~_SIGN
    if es != 0:
        if (es < 0) == (sign == 0):
            mag -= 1
        mag |= 1
    return mag, sign


@njit(cache=True, inline="always")
def special_value(x, P, mode, overflow, rnd, srk):
    """A special result (NaN, ±Inf, exact ±0 as float64) as a value of the format: NaN stays
    NaN; -0 becomes +0 without a negative zero, and zero NaN without a zero. ±Inf is rounded
    into the format as quantize rounds an Inf input (the one rule for infinities: it stays ±Inf
    only in a format with Inf under ``ieee``; otherwise ±max or NaN by mode and policy), so that
    the op's Stats, which round the exact results, describe the values returned."""
    if math.isinf(x):
        r, sign_out, ev = round_bits(_INF, np.int64(signbit(x)), P, mode, overflow, rnd, srk)
        return bits_f64(carrier_bits(r, sign_out, P))
    if math.isnan(x) or (x == 0.0 and P.has_zero == 0):  # no zero (e8m0): NaN, as round_bits
        return bits_f64(_QNAN)
    return bits_f64(_SIGN if (signbit(x) and P.has_negzero == 1) else np.int64(0))


@njit(cache=True, inline="always")
def round_odd(mag, sign, P, W, mode, overflow, rnd, srk, tin_before):
    """Round the float64 ``(mag, sign)`` once into the format: ``(value, flags)``.

    ``W`` is the format's precision with float64's exponent range; it decides tininess after
    rounding, needed only for results at or below the smallest normal.
    """
    r, sign_out, ev = round_bits(mag, sign, P, mode, overflow, rnd, srk)
    value = bits_f64(carrier_bits(r, sign_out, P))
    flags = 0
    if (ev >> (EV_FIELD * 2)) & 1:
        flags = F_OVERFLOW | F_INEXACT
    elif (ev >> (EV_FIELD * 4)) & 1:
        flags = F_INEXACT
        if r <= P.min_normal_bits:  # above the smallest normal a result is never tiny
            if tin_before == 1:
                tiny = mag < P.min_normal_bits
            else:
                r2, s2, e2 = round_bits(mag, sign, W, mode, 0, rnd, srk)
                tiny = r2 < P.min_normal_bits
            if tiny:
                flags |= F_UNDERFLOW
    return value, flags


@njit(cache=True, inline="always")
def op_round(op, a, b, c, P, W, mode, overflow, rnd, srk, tin_before):
    """``op(a, b, c)`` correctly rounded once into the format: ``(float64 value, flags)``."""
    x, es, special, fl = exact_result(op, a, b, c, mode)
    if special:
        return special_value(x, P, mode, overflow, rnd, srk), fl
    mag, sign = odd_bits(x, es)
    return round_odd(mag, sign, P, W, mode, overflow, rnd, srk, tin_before)


@njit(cache=True)
def rounded_op(op, a, b, P, mode, overflow, rnd, srk):
    """The value of :func:`op_round` for a binary op, compiled once as a function of its own:
    kernels that round at many places call it instead of inlining the whole op each time
    (inlined a dozen times, one accumulation kernel took 200 s to compile)."""
    return op_round(op, a, b, 0.0, P, P, mode, overflow, rnd, srk, 1)[0]


@njit(cache=True, inline="always")
def op_odd(op, a, b, c, mode):
    """The exact result of ``op`` rounded to odd in float64 (specials as they are): rounding it
    into the format gives the op's result (and its events, for :class:`~fpsim.Stats`)."""
    x, es, special, fl = exact_result(op, a, b, c, mode)
    if special:
        return x
    mag, sign = odd_bits(x, es)
    return bits_f64(mag | (sign << 63))


@njit(cache=True, inline="always")
def is_value(x, P):
    """Whether the float64 ``x`` is a value of the format (NaN counts; ±0 when it rounds to 0)."""
    hb = f64_bits(x)
    a = hb & ~_SIGN
    r, sign_out, ev = round_bits(a, (hb >> 63) & 1, P, RTZ, 0, np.int64(0), 1)
    return math.isnan(x) | (carrier_bits(r, sign_out, P) == hb) | ((a == 0) & (r == 0))


@njit(cache=True)
def _count_not_values(xs, P):
    """Number of elements of ``xs`` that are not values of the format (a vectorizable count: a
    loop that stops at the first one is 1.5x slower)."""
    nbad = 0
    for j in range(xs.size):
        nbad += not is_value(xs[j], P)
    return nbad


@njit(cache=True, inline="always")
def _run_chunk(op, As, Bs, Cs, os, fs, ods, off, P, W, mode, overflow, key, srk, tin_before):
    """One chunk (elements ``off ..`` of the whole arrays) of :func:`elementwise`; returns -1,
    or 0 without writing anything when an operand is not a value of the format."""
    nops = 1 if op == OP_SQRT else (3 if op == OP_FMA else 2)
    nbad = _count_not_values(As, P)
    if nops > 1:
        nbad += _count_not_values(Bs, P)
    if nops > 2:
        nbad += _count_not_values(Cs, P)
    if nbad != 0:
        return 0
    for j in range(As.size):
        rnd = random_bits(key, off + j) if mode == SR else np.int64(0)
        os[j], fs[j] = op_round(op, As[j], Bs[j], Cs[j], P, W, mode, overflow, rnd, srk,
                                tin_before)
    if ods.size > 0:
        for j in range(As.size):
            ods[j] = op_odd(op, As[j], Bs[j], Cs[j], mode)
    return -1


@njit(cache=True)
def _chunk_literal(op, As, Bs, Cs, os, fs, ods, off, P, W, mode, overflow, key, srk, tin_before):
    """:func:`_run_chunk` compiled for one mode, which must be a literal at the call site
    (``numba.literally``: resolved when the caller compiles). Kept out of line of the ``prange``
    body: inlined there, a driver took 50 s to compile instead of 12 s, for no speed gain."""
    numba.literally(mode)
    return _run_chunk(op, As, Bs, Cs, os, fs, ods, off, P, W, mode, overflow, key, srk,
                      tin_before)


@njit(cache=True)
def _chunk_runtime(op, As, Bs, Cs, os, fs, ods, off, P, W, mode, overflow, key, srk, tin_before):
    """:func:`_run_chunk` with the mode read at run time (every mode in one compiled body)."""
    return _run_chunk(op, As, Bs, Cs, os, fs, ods, off, P, W, mode, overflow, key, srk,
                      tin_before)


@njit(cache=True, inline="always")
def _elementwise(chunk, op, A, B, C, out, flags, odd, P, W, mode, overflow, key, srk, tin_before,
                 bad):
    """Apply ``op`` to flat, same-length float64 operand arrays (C read only by fma, B not by
    sqrt); float64 results in ``out``, IEEE flags in ``flags`` (uint8). With ``odd.size > 0``
    also the rounded-to-odd exact results (see :func:`op_odd`). ``chunk`` is
    :func:`_chunk_literal` or :func:`_chunk_runtime`.

    ``bad.size`` is the number of chunks; ``bad[c]`` becomes 0 when chunk ``c`` has an operand
    that is not a value of the format (and then its outputs are not written), else -1.
    """
    n = A.size
    nchunk = bad.size
    for c in prange(nchunk):
        lo = (c * n) // nchunk
        hi = ((c + 1) * n) // nchunk
        ods = odd[lo:hi] if odd.size > 0 else odd
        bad[c] = chunk(op, A[lo:hi], B[lo:hi], C[lo:hi], out[lo:hi], flags[lo:hi], ods, lo, P, W,
                       mode, overflow, key, srk, tin_before)


# Round-to-nearest-even and stochastic rounding, the modes of training, get a driver each with the
# mode a compile-time constant: 1.6-2.4x faster loops (measured: fp16 add 95 -> 155 M/s, mul 111
# -> 240 M/s). The other modes share one driver (each specialized driver costs ~12 s to compile).
@njit(parallel=True, cache=True)
def elementwise_rne(op, A, B, C, out, flags, odd, P, W, overflow, key, srk, tin_before, bad):
    _elementwise(_chunk_literal, op, A, B, C, out, flags, odd, P, W, RNE, overflow, key, srk,
                 tin_before, bad)


@njit(parallel=True, cache=True)
def elementwise_sr(op, A, B, C, out, flags, odd, P, W, overflow, key, srk, tin_before, bad):
    _elementwise(_chunk_literal, op, A, B, C, out, flags, odd, P, W, SR, overflow, key, srk,
                 tin_before, bad)


@njit(parallel=True, cache=True)
def elementwise_any(op, A, B, C, out, flags, odd, P, W, mode, overflow, key, srk, tin_before,
                    bad):
    _elementwise(_chunk_runtime, op, A, B, C, out, flags, odd, P, W, mode, overflow, key, srk,
                 tin_before, bad)


def elementwise(op, A, B, C, out, flags, odd, P, W, mode, overflow, key, srk, tin_before, bad):
    """Run the elementwise driver for ``mode`` (see :func:`_elementwise` for the arguments)."""
    if mode == RNE:
        elementwise_rne(op, A, B, C, out, flags, odd, P, W, overflow, key, srk, tin_before, bad)
    elif mode == SR:
        elementwise_sr(op, A, B, C, out, flags, odd, P, W, overflow, key, srk, tin_before, bad)
    else:
        elementwise_any(op, A, B, C, out, flags, odd, P, W, mode, overflow, key, srk, tin_before,
                        bad)
