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

These float operations run only on the CPU: on CUDA ``a*b + c`` would be contracted into an FMA
and break TwoSum/TwoProduct (CUDA drivers need ``mul_rn``/``add_rn`` shims).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .rng import random_bits
from .round import EV_FIELD, carrier_bits, round_bits

OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_SQRT, OP_FMA = 0, 1, 2, 3, 4, 5
#: Flag bits (SoftFloat's values).
F_INEXACT, F_UNDERFLOW, F_OVERFLOW, F_DIVBYZERO, F_INVALID = 1, 2, 4, 8, 16
_SPLIT = 134217729.0  # 2^27 + 1: Veltkamp's constant for 53-bit doubles
_SIGN = np.int64(1) << 63
_QNAN = np.int64(0x7FF8000000000000)
_INF = np.int64(0x7FF0000000000000)


@njit(cache=True, inline="always")
def _sign_of_rem(x, y, target):
    """Sign of ``target - x*y``, exactly, for x*y within a few ulps of target."""
    t = _SPLIT * x
    xh = t - (t - x)
    xl = x - xh
    t = _SPLIT * y
    yh = t - (t - y)
    yl = y - yh
    ph = x * y
    pl = ((xh * yh - ph) + xh * yl + xl * yh) + xl * yl  # x*y = ph + pl exactly (Dekker)
    d = target - ph  # exact (Sterbenz): ph is within a factor 2 of target
    return np.int64(d > pl) - np.int64(d < pl)


@njit(cache=True, inline="always")
def _special(P, neg, kind, overflow):
    """Carrier bits of a special result: kind 0 = zero, 1 = infinite, 2 = NaN (canonical, +)."""
    if kind == 2:
        return _QNAN
    if kind == 0:
        return (_SIGN if neg == 1 else np.int64(0)) if P.has_negzero == 1 else np.int64(0)
    s = _SIGN if neg == 1 else np.int64(0)
    if P.has_inf == 1:
        return _INF | s
    if overflow == 1:  # saturate
        return np.int64(P.max_bits) | s
    return _QNAN


@njit(cache=True)
def _one(op, a, b, c, i, out_f, out_b, P, W, mode, overflow, key, srk, tin_before):
    """Compute element i: writes out_b[i] (float64 bits; out_f is the same memory as float64,
    used as the bit-cast scratch) and returns the flag bits."""
    rdn = mode == 4
    # 1. Specials (IEEE 754 default handling, as SoftFloat).
    if op == OP_FMA:
        if np.isnan(a) or np.isnan(b):
            out_b[i] = _QNAN
            return 0
        prod_inf = np.isinf(a) or np.isinf(b)
        if prod_inf and (a == 0.0 or b == 0.0):
            out_b[i] = _QNAN
            return F_INVALID
        if np.isnan(c):
            out_b[i] = _QNAN
            return 0
        sp = np.int64(np.signbit(a) != np.signbit(b))
        if prod_inf:
            if np.isinf(c) and np.int64(c < 0.0) != sp:
                out_b[i] = _QNAN
                return F_INVALID
            out_b[i] = _special(P, sp, 1, overflow)
            return 0
        if np.isinf(c):
            out_b[i] = _special(P, np.int64(c < 0.0), 1, overflow)
            return 0
        p = a * b  # exact
        s = p + c
        bb = s - p
        e = (p - (s - bb)) + (c - bb)  # TwoSum: p + c = s + e exactly
        if s == 0.0:
            if p == 0.0 and c == 0.0 and sp == np.int64(np.signbit(c)):
                out_b[i] = _special(P, sp, 0, overflow)
            else:
                out_b[i] = _special(P, np.int64(rdn), 0, overflow)
            return 0
        hi = s
        es = np.int64(e > 0.0) - np.int64(e < 0.0)
    elif op == OP_ADD or op == OP_SUB:
        if op == OP_SUB:
            b = -b
        if np.isnan(a) or np.isnan(b):
            out_b[i] = _QNAN
            return 0
        if np.isinf(a) or np.isinf(b):
            if np.isinf(a) and np.isinf(b) and (a > 0.0) != (b > 0.0):
                out_b[i] = _QNAN
                return F_INVALID
            neg = np.int64(a < 0.0) if np.isinf(a) else np.int64(b < 0.0)
            out_b[i] = _special(P, neg, 1, overflow)
            return 0
        s = a + b
        bb = s - a
        e = (a - (s - bb)) + (b - bb)
        if s == 0.0:
            if a == 0.0 and b == 0.0 and np.signbit(a) == np.signbit(b):
                out_b[i] = _special(P, np.int64(np.signbit(a)), 0, overflow)
            else:
                out_b[i] = _special(P, np.int64(rdn), 0, overflow)
            return 0
        hi = s
        es = np.int64(e > 0.0) - np.int64(e < 0.0)
    elif op == OP_MUL:
        if np.isnan(a) or np.isnan(b):
            out_b[i] = _QNAN
            return 0
        sp = np.int64(np.signbit(a) != np.signbit(b))
        if np.isinf(a) or np.isinf(b):
            if a == 0.0 or b == 0.0:
                out_b[i] = _QNAN
                return F_INVALID
            out_b[i] = _special(P, sp, 1, overflow)
            return 0
        hi = a * b  # exact
        if hi == 0.0:
            out_b[i] = _special(P, sp, 0, overflow)
            return 0
        es = np.int64(0)
    elif op == OP_DIV:
        if np.isnan(a) or np.isnan(b):
            out_b[i] = _QNAN
            return 0
        sq = np.int64(np.signbit(a) != np.signbit(b))
        if np.isinf(a):
            if np.isinf(b):
                out_b[i] = _QNAN
                return F_INVALID
            out_b[i] = _special(P, sq, 1, overflow)
            return 0
        if np.isinf(b):
            out_b[i] = _special(P, sq, 0, overflow)
            return 0
        if b == 0.0:
            if a == 0.0:
                out_b[i] = _QNAN
                return F_INVALID
            out_b[i] = _special(P, sq, 1, overflow)
            return F_DIVBYZERO
        if a == 0.0:
            out_b[i] = _special(P, sq, 0, overflow)
            return 0
        hi = a / b
        r = _sign_of_rem(hi, b, a)  # a = q*b + rem; the exact quotient is q + rem/b
        es = r if b > 0.0 else -r
    else:  # OP_SQRT
        if np.isnan(a):
            out_b[i] = _QNAN
            return 0
        if a == 0.0:
            out_f[i] = a
            return 0
        if a < 0.0:
            out_b[i] = _QNAN
            return F_INVALID
        if np.isinf(a):
            out_f[i] = a
            return 0
        hi = np.sqrt(a)
        es = _sign_of_rem(hi, hi, a)  # the exact root is above hi iff a > hi^2
    # 2. Round to odd in float64 (bit cast through the output slot), then once into the format.
    out_f[i] = hi
    hb = out_b[i]
    sign = (hb >> 63) & 1
    mag = hb & ~_SIGN
    if es != 0:
        if (es < 0) == (sign == 0):  # the error points toward zero: truncate one ulp down
            mag -= 1
        mag |= 1
    rnd = random_bits(key, i) if mode == 6 else np.int64(0)
    r, sign_out, ev = round_bits(mag, sign, P, mode, overflow, rnd, srk)
    out_b[i] = carrier_bits(r, sign_out, P)
    flags = 0
    if (ev >> (EV_FIELD * 2)) & 1:
        flags = F_OVERFLOW | F_INEXACT
    elif (ev >> (EV_FIELD * 4)) & 1:
        flags = F_INEXACT
        if tin_before == 1:
            tiny = mag < P.minnorm_bits
        else:  # round to the format's precision with float64's exponent range
            r2, s2, e2 = round_bits(mag, sign, W, mode, 0, rnd, srk)
            tiny = r2 < P.minnorm_bits
        if tiny:
            flags |= F_UNDERFLOW
    return flags


@njit(parallel=True, cache=True)
def elementwise(op, A, B, C, out_f, out_b, flags, P, W, mode, overflow, key, srk, tin_before,
                nchunk):
    """Apply ``op`` to flat, same-length float64 operand arrays (C ignored unless fma; B unless
    binary); results as float64 bits in ``out_b`` (``out_f`` is the same memory as float64),
    IEEE flags in ``flags`` (uint8)."""
    n = A.size
    for ch in prange(nchunk):
        for i in range((ch * n) // nchunk, ((ch + 1) * n) // nchunk):
            flags[i] = _one(op, A[i], B[i], C[i], i, out_f, out_b, P, W, mode, overflow, key,
                            srk, tin_before)
