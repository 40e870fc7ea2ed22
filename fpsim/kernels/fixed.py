"""Rounding onto integer grids ``δ·k`` (fixed point, scaled integers): the exact ratio ``x/δ``,
the shared mode decision :func:`.round.round_away`, then the overflow policy.

A finite ``x = mu · 2^eu`` (``mu`` the float64 significand as an integer) and
``δ = d_man · 2^d_exp`` (``d_man`` odd) give the ratio ``Q = |x|/δ = mu · 2^(eu - d_exp) / d_man``.
Rounding needs, of Q, only:

* ``k = floor(Q)`` (modulo ``2^62`` with a flag ``big`` for ``Q >= 2^62``: wrapping needs only
  ``k mod 2^bits``, saturation only that Q is out of range);
* ``frac = floor((Q - k) · 2^62)`` and ``sticky`` (whether Q is above ``k + frac/2^62``): the
  nearest modes read the top bit and the rest, stochastic rounding the top ``srk <= 62`` bits.

Three ways to get them, all exact:

1. **Power-of-two δ** (``d_man == 1``, :class:`fpsim.Fixed`): Q is ``mu`` shifted, so k, frac and
   sticky are shifts and masks of ``mu`` (:func:`ratio_pow2`).
2. **Any δ, exactly** (:func:`ratio_exact`): long division of ``mu · 2^e`` by ``d_man``, ten
   quotient bits per integer division (the remainder stays below ``d_man < 2^53``, so shifting
   it by 10 stays below 2^63).
3. **Any δ, certified estimate** (the fast path of the drivers): ``y = RN(|x| · RN(1/δ))`` is
   within ``2^-51.9 · y`` of Q (two roundings of relative error ``<= 2^-53`` each). When ``y``
   is farther than ``err = 2^-50 · y + 2^-1060`` (the absolute term covers float64 underflow)
   from every point where the decision changes -- the integers, the half-integers for the
   nearest modes, stochastic rounding's threshold -- Q makes the same decision as ``y``, and
   ``floor(y) = floor(Q)``. Otherwise (probability about ``2^-44`` per element for random data,
   always for values exactly on the grid) the element is redone by way 2.

Values: ``k · δ`` is rounded once into the output dtype. In float64 that is the product of two
float64 numbers (``k`` is exact, |k| < 2^53). For float32 output the float64 product rounded to
float32 would round twice when it lands exactly on a float32 midpoint; those products (and all
below float32's normal range) are rounded to odd in float64 first, from the exact sign of the
product's error (Dekker's TwoProduct, :func:`.arith.sign_of_rem`), which makes the second rounding
correct (Boldo & Melquiond). δ within ``2^-900 .. 2^900`` keeps every partial product of
TwoProduct a normal number.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from fpsim.kernels.arith import odd_bits, sign_of_rem
from fpsim.kernels.bitcast import bits_f64, f64_bits
from fpsim.kernels.rng import random_bits
from fpsim.kernels.round import (EV_FIELD, EV_INEXACT, EV_MAX_SUM, EV_NAN, EV_OVERFLOW,
                                 EV_UNDERFLOW, RNA, RNE, SR, SR_BITS_MAX, round_away)
from fpsim.numerics.modes import Overflow

SATURATE = int(Overflow.SATURATE)
WRAP = int(Overflow.WRAP)

#: Fraction bits of Q kept exactly (the most any mode reads: ``sr`` with 62 random bits).
FRAC_BITS = 62
_MASK62 = (np.int64(1) << 62) - 1
_HALF = np.int64(1) << 61
_M52 = (np.int64(1) << 52) - 1
_SIGN = np.int64(1) << 63
_INF = np.int64(0x7FF0000000000000)
_QNAN = np.int64(0x7FF8000000000000)
#: float64 bits of 2^-126, float32's smallest normal number.
_F32_MIN_NORMAL = np.int64(0x3810000000000000)
_M29 = (np.int64(1) << 29) - 1

#: Per-element status of a rounding: a value; a NaN result (NaN input; Inf under ``wrap``),
#: which has no code; an out-of-range value under the ``error`` policy.
OK, NAN_RESULT, RANGE_ERROR = 0, 1, 2


@njit(cache=True, inline="always")
def split(a):
    """``(mu, eu)`` with ``|x| = mu · 2^eu`` of the float64 bits ``a`` of a finite |x| > 0."""
    be = a >> 52
    if be == 0:
        return a, np.int64(-1074)
    return (a & _M52) | (np.int64(1) << 52), be - 1075


@njit(cache=True, inline="always")
def ratio_pow2(mu, e):
    """``(k, big, frac, sticky)`` of ``Q = mu · 2^e`` (``mu < 2^53``), by shifts.

    ``e >= 0``: Q is an integer; ``k`` is ``Q mod 2^62`` (shifts wrap), ``big`` says Q >= 2^62.
    ``e < 0``: ``g = -e`` bits of ``mu`` are fraction; they are placed at the top of the 62-bit
    fraction (``g <= 62``) or shifted down into it, the bits that fall off making ``sticky``.
    """
    k = np.int64(0)
    big = False
    frac = np.int64(0)
    sticky = False
    if e >= 0:
        if e >= 62:
            big = True  # mu >= 1: Q >= 2^62; Q mod 2^62 = 0
        else:
            big = (mu >> (62 - e)) != 0
            k = (mu << e) & _MASK62
    else:
        g = -e
        if g <= 62:
            k = mu >> g
            frac = (mu & ((np.int64(1) << g) - 1)) << (62 - g)
        else:
            s = g - 62
            if s <= 62:
                frac = mu >> s
                sticky = (mu & ((np.int64(1) << s) - 1)) != 0
            else:
                sticky = mu != 0
    return k, big, frac, sticky


@njit(cache=True, inline="always")
def _divide_bits(r, md, n):
    """``n`` more quotient bits of ``r / md`` (``r < md < 2^53``): ``(bits, new r)``, ten bits
    per integer division."""
    q = np.int64(0)
    while n > 0:
        c = min(n, 10)
        r <<= c
        t = r // md
        r -= t * md
        q = (q << c) | t
        n -= c
    return q, r


@njit(cache=True)
def ratio_exact(mu, e, md, need_k):
    """``(k, big, frac, sticky)`` of ``Q = mu · 2^e / md`` (``mu, md < 2^53``) by long division.

    ``need_k`` False stops once Q is known to be ``>= 2^62`` (saturation and errors need no
    more); True (wrapping) carries ``k mod 2^62`` to the end, ten bits per step.
    """
    q0 = mu // md
    r = mu - q0 * md
    big = False
    frac = np.int64(0)
    sticky = False
    if e >= 0:
        k = q0
        n = e
        while n > 0:
            c = min(n, 10)
            big |= (k >> (62 - c)) != 0
            if big and not need_k:
                return k, big, frac, sticky
            t, r = _divide_bits(r, md, c)
            k = ((k << c) & _MASK62) | t
            n -= c
        frac, r = _divide_bits(r, md, FRAC_BITS)
        sticky = r != 0
        return k, big, frac, sticky
    g = -e
    if g <= 62:
        k = q0 >> g
        low, r = _divide_bits(r, md, 62 - g)
        frac = ((q0 & ((np.int64(1) << g) - 1)) << (62 - g)) | low
        sticky = r != 0
        return k, big, frac, sticky
    s = g - 62  # Q < 2^53 / 2^63 < 1: k = 0, frac = q0 shifted down
    if s <= 62:
        frac = q0 >> s
        sticky = ((q0 & ((np.int64(1) << s) - 1)) != 0) | (r != 0)
    else:
        sticky = (q0 != 0) | (r != 0)
    return np.int64(0), big, frac, sticky


@njit(cache=True, inline="always")
def settle(k, big, frac, sticky, sign, G, mode, overflow, rnd, srk):
    """Round the exact ratio into the grid's integer and apply the overflow policy.

    Args:
        k, big, frac, sticky: the ratio ``|x|/δ`` (see the module docstring).
        sign: 1 for a negative x.
        G: the format's :class:`~fpsim.numerics.fixed.GridParams`.

    Returns:
        ``(kk, ev, status)``: the signed integer (0 unless ``status`` is OK), the event word
        (``EV_*`` of :mod:`.round`) and the status (:data:`OK` or :data:`RANGE_ERROR`).
        Events: underflow (x != 0 rounded to 0), overflow (the rounded integer, with unbounded
        range, is outside ``k_min .. k_max``; negative values of unsigned formats included),
        inexact (the value is not x: rounded, or moved by the policy).
    """
    inexact = (frac != 0) | sticky
    above = (frac > _HALF) | ((frac == _HALF) & sticky)
    tie = (frac == _HALF) & (not sticky)
    odd = (k & 1) == 1
    up = round_away(mode, sign, inexact, above, tie, odd, frac >> (FRAC_BITS - srk), rnd, srk)
    kmag = (k + np.int64(up)) & _MASK62
    kk = -kmag if sign == 1 else kmag
    out = big | (kk > G.k_max) | (kk < G.k_min)
    # Underflow: a non-zero ratio (then inexact) rounded to 0.
    ev = ((np.int64((kmag == 0) & (not big) & inexact) * EV_UNDERFLOW) | (np.int64(out) * EV_OVERFLOW)
          | (np.int64(inexact | out) * EV_INEXACT))
    status = OK
    if out:
        if overflow == SATURATE:
            kk = np.int64(G.k_min) if sign == 1 else np.int64(G.k_max)
        elif overflow == WRAP:
            # Two's complement: the integer modulo 2^bits (kmag is exact modulo 2^62), then the
            # upper half of the codes are the negative integers of a signed format.
            m = (np.int64(1) << G.bits) - 1
            w = kmag & m
            if sign == 1:
                w = (-w) & m
            if (G.signed == 1) & (w > G.k_max):
                w -= np.int64(1) << G.bits
            kk = w
        else:
            kk = np.int64(0)
            status = RANGE_ERROR
    return kk, ev, status


@njit(cache=True, inline="always")
def special(a, sign, G, overflow):
    """``(kk, ev, status)`` of the non-finite bit pattern ``a`` (|x| bits): NaN stays NaN (no
    event); ±Inf overflows: ±max under saturation, NaN under wrapping, an error under ``error``."""
    if a > _INF:
        return np.int64(0), np.int64(0), NAN_RESULT
    if overflow == SATURATE:
        return (np.int64(G.k_min) if sign == 1 else np.int64(G.k_max)), EV_OVERFLOW | EV_INEXACT, OK
    if overflow == WRAP:
        return np.int64(0), EV_OVERFLOW | EV_NAN, NAN_RESULT
    return np.int64(0), EV_OVERFLOW, RANGE_ERROR


@njit(cache=True)
def element_exact(hb, G, mode, overflow, rnd, srk):
    """``(kk, ev, status)`` of the float64 bits ``hb`` of x, by way 1 or 2 of the module
    docstring (every input, non-finite ones included)."""
    sign = (hb >> 63) & 1
    a = hb & ~_SIGN
    if a >= _INF:
        return special(a, sign, G, overflow)
    if a == 0:
        return np.int64(0), np.int64(0), OK
    mu, eu = split(a)
    e = eu - G.d_exp
    if G.pow2 == 1:
        k, big, frac, sticky = ratio_pow2(mu, e)
    else:
        k, big, frac, sticky = ratio_exact(mu, e, G.d_man, overflow == WRAP)
    return settle(k, big, frac, sticky, sign, G, mode, overflow, rnd, srk)


@njit(cache=True)
def value_exact(kk, G, f32out):
    """float64 ``k·δ`` rounded once to the output: RN in float64, or (``f32out``) rounded to odd
    in float64, whose float32 rounding is then the correct one."""
    p = np.float64(kk) * G.delta
    if f32out == 0 or G.pow2 == 1:
        return p
    es = -sign_of_rem(np.float64(kk), G.delta, p)  # sign of k·δ - p
    mag, sgn = odd_bits(p, es)
    return bits_f64(mag | (sgn << 63))


@njit(cache=True, inline="always")
def binade(a, G):
    """``floor(log2(|x| / δ))`` of the float64 bits ``a`` of a finite |x| > 0, exactly: the
    exponents' difference, one less when x's significand is below δ's."""
    be = a >> 52
    if be == 0:  # float64 subnormal: normalise (bit length n of the fraction)
        n = np.int64(0)
        t = a
        while t != 0:
            t >>= 1
            n += 1
        ex = n - 1075
        fx = (a << (53 - n)) & _M52
    else:
        ex = be - 1023
        fx = a & _M52
    return ex - G.d_log2 - np.int64(fx < G.d_frac)


@njit(cache=True, inline="always")
def _fast(hb, G, mode, overflow, rnd, srk, pow2, events):
    """``(vf, ev, slow)`` of the float64 bits ``hb`` from the float ratio ``y = |x| · RN(1/δ)``:
    ``vf`` the signed integer as a float64 (exact: |k| < 2^53), ``slow`` marks an element this
    cannot settle (redone by :func:`element_exact`).

    For a power-of-two δ, ``y`` is exact while ``y >= 2^-1000``: then ``k = floor(y)`` and the
    fraction ``fy = y - k`` are exact, and so is every decision read off them (sr's scaled
    fraction too). For another δ the estimate is certified (way 3 of the module docstring): no
    tie, and for sr a scaled fraction with the same decision stands in for the unknown exact
    one. Non-finite inputs, ``y >= 2^52`` (k would not be exact), and out-of-range results under
    ``wrap`` or ``error`` are slow. Without ``events`` (a constant: no statistics wanted) the
    nearest modes skip the test that Q is no integer: it decides only the inexact and underflow
    events, since Q just below or above the integer k rounds to k either way. Everything stays
    in float64 (no integer round trip) and is
    written as selects, so that the loop vectorizes.
    """
    sign = (hb >> 63) & 1
    a = hb & ~_SIGN
    zero = a == 0
    y = bits_f64(a) * G.inv_delta
    ky = np.floor(y)
    fy = y - ky  # exact: y < 2^52 (checked), so floor(y) <= y < 2 floor(y) or floor(y) = 0
    ok = (y < 2.0 ** 52) & ((y >= 2.0 ** -1000) | zero)  # also False for Inf and NaN
    odd = (ky - 2.0 * np.floor(ky * 0.5)) != 0.0
    above = fy > 0.5
    frac_srk = np.int64(0)
    if pow2 == 1:  # G.pow2, passed on its own so that a call site can make it a constant
        inexact = fy != 0.0
        tie = fy == 0.5
        if mode == SR:
            frac_srk = np.int64(np.floor(fy * np.float64(np.int64(1) << srk)))  # exact scaling
    else:
        err = y * 2.0 ** -50 + 2.0 ** -1060
        nearest = mode == RNE or mode == RNA
        if events or not nearest:
            ok &= zero | ((fy > err) & (fy < 1.0 - err))  # Q strictly between k and k + 1
        inexact = not zero
        tie = False
        if nearest:
            ok &= zero | (abs(fy - 0.5) > err)
        elif mode == SR:
            # up iff floor(f 2^srk) + R >= 2^srk iff f >= 1 - R 2^-srk =: thr (2^srk - R is an
            # integer); R 2^-srk = (R << (62 - srk)) 2^-62 (a runtime 2.0 ** -srk would be a
            # pow call in the loop), within 2^-53 of exact.
            r = rnd >> (SR_BITS_MAX - srk)
            thr = 1.0 - np.float64(r << (FRAC_BITS - srk)) * 2.0 ** -62
            ok &= zero | (abs(fy - thr) > err + 2.0 ** -51)
            frac_srk = (np.int64(1) << srk) - r - np.int64(fy < thr)
    up = round_away(mode, sign, inexact, above, tie, odd, frac_srk, rnd, srk)
    kf = ky + (1.0 if up else 0.0)
    vf = (-kf if sign == 1 else kf) + 0.0  # + 0.0: an integer grid has no -0
    inr = (vf >= np.float64(G.k_min)) & (vf <= np.float64(G.k_max))
    if overflow == SATURATE:
        vf = min(max(vf, np.float64(G.k_min)), np.float64(G.k_max))
    else:
        ok &= inr
    ev = ((np.int64((kf == 0.0) & inexact) * EV_UNDERFLOW) | (np.int64(not inr) * EV_OVERFLOW)
          | (np.int64(inexact | (not inr)) * EV_INEXACT))
    return vf, ev, not ok


#: Elements per block of :func:`_grid_chunk`: the flags of a block stay in L1 cache, and its
#: packed event counts (at most EV_MAX_SUM per field) cannot overflow.
BLOCK = 2048
#: Binade of the first bin of the histogram rows: float64's smallest, 2^-1074 (the public
#: histogram's range, :data:`fpsim.numerics.stats.K_MIN`).
_K_MIN = -1074


@njit(cache=True, inline="always")
def _fast_block(xs, os, cs, off, G, mode, overflow, key, srk, f32out, slow, vals, codes, count,
                pow2):
    """Pass 1 of :func:`_grid_chunk` over one block: the estimate (or shifts) for every element,
    values (``vals``) or codes (``codes``) written, the uncertain elements flagged in ``slow``;
    returns ``(packed events of the others (if count), number flagged)``. ``vals``, ``codes``
    and ``count`` are constants at each call site, so each variant keeps only its own stores
    and the loop stays branch-free, which lets it vectorize. The plain quantize call sites also
    pass ``pow2`` (G.pow2) and the saturating ``overflow`` as constants: runtime tests of them
    stayed in the vectorized loop as branches."""
    mask = (np.int64(1) << G.bits) - 1
    packed = np.int64(0)
    nslow = np.int64(0)
    for j in range(xs.size):
        hb = f64_bits(np.float64(xs[j]))
        rnd = random_bits(key, off + j) if mode == SR else np.int64(0)
        vf, ev, sl = _fast(hb, G, mode, overflow, rnd, srk, pow2, count)
        if vals:
            p = vf * G.delta
            # float32 output of a non-power-of-two grid: a product on a float32 midpoint (or
            # below float32's normal range) is rounded again by the exact way.
            pb = f64_bits(p) & ~_SIGN
            mid = (f32out == 1) & (pow2 == 0) & (pb != 0) & (
                (pb < _F32_MIN_NORMAL) | ((pb & _M29) == (np.int64(1) << 28)))
            sl = sl | mid
            os[j] = p
        if codes:
            cs[j] = (np.int64(vf) if not sl else np.int64(0)) & mask
        slow[j] = sl
        nslow += np.int64(sl)
        if count:
            packed += ev * np.int64(not sl)
    return packed, nslow


#: float32 constants of :func:`_fast32` (float64 literals would widen its lanes to float64).
_F32_2P23 = np.float32(2.0 ** 23)
_F32_2PM100 = np.float32(2.0 ** -100)
_F32_2PM21 = np.float32(2.0 ** -21)
_F32_HALF = np.float32(0.5)
_F32_ONE = np.float32(1.0)
_F32_ZERO = np.float32(0.0)


@njit(cache=True, inline="always")
def _fast32(x, inv32, kmin, kmax, mode, pow2):
    """``(vf, slow)`` of a float32 ``x`` from ``y = RN32(|x| · RN32(1/δ))`` in float32
    arithmetic: ``vf`` the signed integer as a float32 (exact: at most 24 bits), for plain
    quantization (no events) with saturation and a mode other than sr.

    For a power-of-two δ (within ``2^-100 .. 2^100``) ``y`` is exact while ``2^-100 <= y``.
    For another δ, ``|y - Q| <= 2^-22.9 y`` (two float32 roundings), so ``err = 2^-21 y`` is
    a safe margin, as in :func:`_fast` (there with float64's ``2^-50``); ``1 - err`` is rounded
    by at most ``2^-25``, below half the margin wherever ``fy`` can be near 1 (``y >= 1/2``).
    Without events, the nearest modes need only the half test (Q on either side of an integer
    rounds to it); the directed modes need Q to be no integer. ``y >= 2^23`` (floor not exact)
    and ``y < 2^-100`` (``err`` and ``y`` not normal) are slow; NaN fails every test (slow).
    """
    ax = abs(x)
    zero = ax == _F32_ZERO
    sign = np.int64(x < _F32_ZERO)
    y = ax * inv32
    ky = np.floor(y)
    fy = y - ky  # exact: y < 2^23
    ok = (y < _F32_2P23) & ((y >= _F32_2PM100) | zero)
    above = fy > _F32_HALF
    if pow2 == 1:
        inexact = fy != _F32_ZERO
        tie = fy == _F32_HALF
    else:
        err = y * _F32_2PM21
        if mode == RNE or mode == RNA:
            ok &= zero | (abs(fy - _F32_HALF) > err)
        else:
            ok &= zero | ((fy > err) & (fy < _F32_ONE - err))
        inexact = not zero
        tie = False
    odd = (ky - np.float32(2.0) * np.floor(ky * _F32_HALF)) != _F32_ZERO
    up = round_away(mode, sign, inexact, above, tie, odd, np.int64(0), np.int64(0), 1)
    kf = ky + (_F32_ONE if up else _F32_ZERO)
    vf = -kf if sign == 1 else kf
    vf = min(max(vf, kmin), kmax) + _F32_ZERO  # + 0: an integer grid has no -0
    return vf, not ok


@njit(cache=True, inline="always")
def _fast32_block(xs, os, G, mode, slow):
    """Pass 1 of :func:`_grid_chunk` with the decision in float32 arithmetic (:func:`_fast32`)
    and the value ``k·δ`` in float64, as :func:`_fast_block` writes it (with its float32
    midpoint test); returns the number of elements flagged in ``slow``. (Measured: about 1.1x
    the float64 decision's throughput on one thread; the loop vectorizes 4 wide either way, the
    float64 product sets the width.)"""
    inv32 = np.float32(G.inv_delta)
    kmin = np.float32(G.k_min)
    kmax = np.float32(G.k_max)
    nslow = np.int64(0)
    for j in range(xs.size):
        vf, sl = _fast32(np.float32(xs[j]), inv32, kmin, kmax, mode, G.pow2)
        p = np.float64(vf) * G.delta
        pb = f64_bits(p) & ~_SIGN
        mid = (G.pow2 == 0) & (pb != 0) & (
            (pb < _F32_MIN_NORMAL) | ((pb & _M29) == (np.int64(1) << 28)))
        sl = sl | mid
        os[j] = p
        slow[j] = sl
        nslow += np.int64(sl)
    return nslow


@njit(cache=True)
def _exact_block(xs, os, cs, off, G, mode, overflow, key, srk, f32out, slow, bad, c):
    """Pass 2 of :func:`_grid_chunk`: the flagged elements of a block by the exact way; returns
    their packed events and records the first element without a value in ``bad[c]``."""
    want_vals = os.size != 0
    want_codes = cs.size != 0
    mask = (np.int64(1) << G.bits) - 1
    packed = np.int64(0)
    for j in range(xs.size):
        if not slow[j]:
            continue
        hb = f64_bits(np.float64(xs[j]))
        rnd = random_bits(key, off + j) if mode == SR else np.int64(0)
        kk, ev, status = element_exact(hb, G, mode, overflow, rnd, srk)
        packed += ev
        if status == NAN_RESULT:
            if want_vals:
                os[j] = bits_f64(_QNAN | (hb & _SIGN))
            if want_codes and bad[c] < 0:
                bad[c] = off + j
        elif status == RANGE_ERROR:
            if bad[c] < 0:
                bad[c] = off + j
        else:
            if want_vals:
                os[j] = value_exact(kk, G, f32out)
            if want_codes:
                cs[j] = kk & mask
    return packed


@njit(cache=True)
def _hist_block(xs, G, row):
    """Count the binades ``floor(log2(|x|/δ))`` of a block into ``row`` (bins 2^-1074 ..
    2^1023, the ends taking what lies beyond, then zeros, infinities, NaNs)."""
    nb = row.size - 3
    for j in range(xs.size):
        a = f64_bits(np.float64(xs[j])) & ~_SIGN
        if a == 0:
            row[nb] += 1
        elif a == _INF:
            row[nb + 1] += 1
        elif a > _INF:
            row[nb + 2] += 1
        else:
            row[min(max(binade(a, G) - _K_MIN, 0), nb - 1)] += 1


@njit(cache=True)
def _grid_chunk(xs, os, cs, off, G, mode, overflow, key, srk, f32out, counts, hist, c, bad,
                lanes32):
    """Round the chunk ``xs`` (elements ``off ..`` of the whole array): values to ``os`` or
    (when ``cs`` has elements) codes to ``cs``, not both; events to ``counts[c]``, the binades of ``|x|/δ``
    to ``hist[c]`` (width 0: none), the first element without a value (``status != OK``; for
    codes NaN results too) to ``bad[c]``. ``lanes32`` 1 (the caller's choice, only for float32
    quantization with saturation, no statistics, a mode other than sr, at most 24 bits and δ in
    ``2^-100 .. 2^100``) decides in float32 arithmetic (:func:`_fast32_block`).

    Block by block, two passes: the estimate for every element (:func:`_fast_block`), then the
    exact way for the flagged ones (:func:`_exact_block`); each element's events are counted
    by one of them. ``mode`` must be a literal at the call site (``numba.literally``: one
    version per mode, the other modes' logic gone, as in :mod:`.cpu`).
    """
    numba.literally(mode)
    slow = np.zeros(BLOCK, np.bool_)
    for b in range(0, xs.size, BLOCK):
        xb = xs[b:b + BLOCK]
        ob = os[b:b + BLOCK] if os.size != 0 else os
        cb = cs[b:b + BLOCK] if cs.size != 0 else cs
        sb = slow[:xb.size]
        packed = np.int64(0)
        if lanes32 == 1:  # plain float32 quantization, the decision in float32
            nslow = _fast32_block(xb, ob, G, mode, sb)
        elif cs.size != 0:  # encode
            packed, nslow = _fast_block(xb, ob, cb, off + b, G, mode, overflow, key, srk, f32out,
                                        sb, False, True, False, G.pow2)
        elif hist.shape[1] != 0:  # quantize with statistics
            packed, nslow = _fast_block(xb, ob, cb, off + b, G, mode, overflow, key, srk, f32out,
                                        sb, True, False, True, G.pow2)
        elif overflow == SATURATE and G.pow2 == 1:  # quantize: the common cases specialized
            packed, nslow = _fast_block(xb, ob, cb, off + b, G, mode, SATURATE, key, srk, f32out,
                                        sb, True, False, False, 1)
        elif overflow == SATURATE:
            packed, nslow = _fast_block(xb, ob, cb, off + b, G, mode, SATURATE, key, srk, f32out,
                                        sb, True, False, False, 0)
        else:
            packed, nslow = _fast_block(xb, ob, cb, off + b, G, mode, overflow, key, srk, f32out,
                                        sb, True, False, False, G.pow2)
        if nslow != 0:
            packed += _exact_block(xb, ob, cb, off + b, G, mode, overflow, key, srk, f32out, sb,
                                   bad, c)
        for q in range(5):
            counts[c, q] += (packed >> (EV_FIELD * q)) & EV_MAX_SUM
        if hist.shape[1] != 0:
            _hist_block(xb, G, hist[c])


@njit(cache=True, inline="always")
def _grid_round(xs, os, cs, G, mode, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    """Round every element of ``xs`` (float32 or float64) onto the grid ``G`` in
    ``counts.shape[0]`` chunks (a ``prange`` in the parallel drivers, a plain loop in the serial
    twins); see :func:`_grid_chunk` for the outputs."""
    n = xs.size
    nchunk = counts.shape[0]
    for c in prange(nchunk):
        lo = (c * n) // nchunk
        hi = ((c + 1) * n) // nchunk
        _grid_chunk(xs[lo:hi], os[lo:hi] if os.size != 0 else os,
                    cs[lo:hi] if cs.size != 0 else cs, lo, G, mode, overflow, key, srk, f32out,
                    counts, hist, np.int64(c), bad, lanes32)  # int64: as in cpu._quantize


# One compiled driver per rounding mode and its serial twin (small arrays), compiled on first
# use and cached, as the float drivers of :mod:`.cpu`.
@njit(parallel=True, cache=True)
def grid_round_rne(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 0, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(parallel=True, cache=True)
def grid_round_rna(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 1, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(parallel=True, cache=True)
def grid_round_rtz(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 2, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(parallel=True, cache=True)
def grid_round_rup(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 3, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(parallel=True, cache=True)
def grid_round_rdn(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 4, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(parallel=True, cache=True)
def grid_round_rto(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 5, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(parallel=True, cache=True)
def grid_round_sr(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 6, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(cache=True)
def grid_round_serial_rne(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 0, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(cache=True)
def grid_round_serial_rna(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 1, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(cache=True)
def grid_round_serial_rtz(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 2, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(cache=True)
def grid_round_serial_rup(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 3, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(cache=True)
def grid_round_serial_rdn(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 4, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(cache=True)
def grid_round_serial_rto(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 5, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(cache=True)
def grid_round_serial_sr(xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    _grid_round(xs, os, cs, G, 6, overflow, key, srk, f32out, counts, hist, bad, lanes32)


#: The drivers by :class:`~fpsim.numerics.modes.RoundMode` int, parallel and serial.
GRID_ROUND = (grid_round_rne, grid_round_rna, grid_round_rtz, grid_round_rup, grid_round_rdn,
              grid_round_rto, grid_round_sr)
GRID_ROUND_SERIAL = (grid_round_serial_rne, grid_round_serial_rna, grid_round_serial_rtz,
                     grid_round_serial_rup, grid_round_serial_rdn, grid_round_serial_rto,
                     grid_round_serial_sr)


def grid_round(xs, os, cs, G, mode, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    """Round ``xs`` onto the grid ``G`` in parallel chunks (:func:`_grid_round`)."""
    GRID_ROUND[mode](xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32)


def grid_round_serial(xs, os, cs, G, mode, overflow, key, srk, f32out, counts, hist, bad, lanes32):
    """The serial twin of :func:`grid_round` (small arrays; the tests compare the two)."""
    GRID_ROUND_SERIAL[mode](xs, os, cs, G, overflow, key, srk, f32out, counts, hist, bad, lanes32)


@njit(parallel=True, cache=True)
def grid_decode(codes, out, G, nchunk):
    """float64 ``k·δ`` (rounded to nearest) of two's-complement ``codes`` (int64, range-checked
    by the caller) into ``out``."""
    n = codes.size
    half = np.int64(1) << (G.bits - 1)
    full = np.int64(1) << G.bits
    for c in prange(nchunk):
        lo = (c * n) // nchunk
        hi = ((c + 1) * n) // nchunk
        cs = codes[lo:hi]
        os = out[lo:hi]
        for j in range(cs.size):
            k = cs[j]
            if (G.signed == 1) & (k >= half):
                k -= full
            os[j] = np.float64(k) * G.delta
