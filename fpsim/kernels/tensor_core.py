"""Jitted tensor-core block-FMA model (one scalar core for the CPU and the CUDA drivers).

One hardware operation computes ``d = c + sum_{k0 <= k < k1} a[k] * b[k]`` for one group of
``G = k1 - k0`` products. The model (``docs/tensor_cores.md`` draws it) works on integers:

* every operand arrives *split* (:func:`split_values`): a signed integer significand ``s`` with
  the implicit bit and an exponent ``e`` clamped at the input format's lowest normal exponent
  (subnormals are not normalised), so that the value is ``s * 2^(e - m)``; a product is then
  ``P = s_a * s_b`` at ``2^(e_a + e_b - 2m)``, exact in an int64;
* a product's *alignment exponent* is ``x = e_a + e_b``, plus one when ``|P| >= 2^(2m+1)``
  (significand product in ``[2, 4)``); the addend ``c`` (a value of the output format, split
  from its float64 bits with the exponent clamped at the output's lowest normal exponent) has
  its own; ``E`` is the largest of them (the products' only, when ``c`` is added late);
* each term is truncated toward zero to a multiple of ``2^(E - F)``, ``F = 23 + extra_bits``
  (plus one when the *carry bit* rule fires: the product with the largest unnormalised exponent
  has ``|P| >= 2^(2m+1)`` and ``c`` does not lie above it), and the truncated terms are added
  exactly (int64: below ``2^62`` for every preset's parameters);
* the exact sum ``S * 2^(E - F)`` is rounded once into the output format (``omode``: round
  toward zero or to nearest even; a magnitude at or above ``2^(emax+1)`` becomes Inf, as in
  the published model); or, when ``c`` is added late, the products are summed in one or two
  interleaved steps, each rounded into its own format (:class:`LateParams`), and then added to
  ``c`` with one correctly rounded addition.

Every rounding goes through ``round_bits`` (directly, or :func:`.accumulate.final_round` for the
late addend's correctly rounded addition).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from typing import NamedTuple

from fpsim.kernels.accumulate import final_round
from fpsim.kernels.arith import two_sum_sign
from fpsim.kernels.bitcast import bits_f64, f64_bits
from fpsim.kernels.round import RNE, carrier_bits, round_bits

_MAN52 = (np.int64(1) << 52) - 1
_SIGN = np.int64(1) << 63
_EXP_BITS = np.int64(0x7FF)
#: |S| below this converts to float64 exactly.
_EXACT_F64 = np.int64(1) << 53


@njit(cache=True, inline="always")
def _pow2(k):
    """``2.0 ** k`` for ``-1022 <= k <= 1023``, built from its bits (exact, no libm call)."""
    return bits_f64(np.int64(k + 1023) << 52)


@njit(cache=True, inline="always")
def _shift(mag, s):
    """``floor(mag * 2^s)`` for a magnitude ``mag >= 0``: a left shift, or a right shift that
    truncates (shifts of 63 or more leave 0: every magnitude here is below 2^63)."""
    if s >= 0:
        return mag << s
    return mag >> min(-s, 63)


@njit(cache=True, inline="always")
def _round_exact(v, P, mode):
    """The non-zero float64 ``v``, which is the exact block sum, rounded once into the format
    ``P`` (float64 carrier) by the one rounding routine; inlined, unlike ``final_round``,
    because every block ends with it."""
    b = f64_bits(v)
    r, sign_out, _ = round_bits(b & ~_SIGN, (b >> 63) & 1, P, mode, 0, np.int64(0), 1)
    return bits_f64(carrier_bits(r, sign_out, P))


@njit(cache=True, inline="always")
def _split_f64(x, emin):
    """``(s, e)`` of a finite float64 ``x``: ``x = s * 2^(e - 52)`` with ``e`` the exponent
    clamped at ``emin`` (values below ``2^emin`` keep ``e = emin`` and a smaller ``|s|``; the
    right shift only drops zeros when ``x`` is a value of a format whose lowest normal exponent
    is ``emin``)."""
    b = f64_bits(x)
    be = (b >> 52) & _EXP_BITS
    mag = (b & _MAN52) | (np.int64(1) << 52) if be != 0 else (b & _MAN52)
    e = be - 1023 if be != 0 else np.int64(-1022)
    if e < emin:
        mag = mag >> min(emin - e, 63)
        e = np.int64(emin)
    return (-mag if b < 0 else mag), e


@njit(cache=True, parallel=True)
def split_values(X, m, emin, sig, exp):
    """Split every finite element of the float64 array ``X`` (values of a format with ``m``
    fraction bits and lowest normal exponent ``emin``) into ``sig`` (int64, signed, implicit bit
    included) and ``exp`` (int32) with ``X = sig * 2^(exp - m)``; zeros give ``sig = 0``,
    non-finite elements ``sig = 0`` too (the drivers route them to the special rule)."""
    Xf = X.ravel()
    sf = sig.ravel()
    ef = exp.ravel()
    for i in prange(Xf.size):
        x = Xf[i]
        if x == 0.0 or not math.isfinite(x):
            sf[i] = 0
            ef[i] = emin
        else:
            s, e = _split_f64(x, emin)
            sf[i] = s >> (52 - m)  # exact: a value of the format has at most m fraction bits
            ef[i] = e


class LateParams(NamedTuple):
    """The product steps of a late-addend model: how many, and the rounding, lowest normal
    exponent and ``2^(emax+1)`` of the format each step's result is rounded into (whose params
    travel separately as ``LP``: parallel loops take no nested tuples)."""

    steps: int
    mode: int
    emin: int
    limit: float


#: "No term yet" for the running maxima (below every exponent a term can have).
_NONE = np.int64(-100000)


@njit(cache=True, inline="always")
def _track(P, x, big, pmax, carry, emax_t):
    """Pass 1 for one product ``P`` with unnormalised exponent ``x``: the running largest
    unnormalised exponent ``pmax``, whether a product at it carries (``|P| >= big``), and the
    largest alignment exponent ``emax_t``. Zero products change nothing."""
    if P != 0:
        cy = np.int64(abs(P) >= big)
        if x > pmax:
            pmax = x
            carry = cy
        elif x == pmax:
            carry |= cy
        emax_t = max(emax_t, x + cy)
    return pmax, carry, emax_t


@njit(cache=True, inline="always")
def _window(pmax, carry, emax_t, c, c_emin, F0, carry_rule):
    """After pass 1: ``(E, F, c_term)``, the reference exponent (``_NONE`` when there is no
    non-zero term), the window's fraction bits and the addend truncated into the window (0 when
    is 0)."""
    use_c = c != 0.0
    sc = np.int64(0)
    ec = np.int64(0)
    if use_c:
        sc, ec = _split_f64(c, c_emin)
        emax_t = max(emax_t, ec)
    F = F0
    if carry_rule == 1 and carry == 1 and ((not use_c) or pmax >= ec):
        F += 1
    cterm = np.int64(0)
    if use_c:
        t = _shift(abs(sc), ec - 52 + F - emax_t)
        cterm = -t if sc < 0 else t
    return emax_t, F, cterm


@njit(cache=True, inline="always")
def _add(S, P, s):
    """Pass 2 for one product: ``S`` plus ``P * 2^s`` truncated toward zero."""
    t = _shift(abs(P), s)
    return S + (-t if P < 0 else t)


@njit(cache=True, inline="always")
def _finish(S, E, F, P, mode, limit):
    """The exact sum ``S * 2^(E - F)`` of the truncated terms rounded once into the format
    ``P`` with ``mode``: +0 for no term or an exact cancellation, ±Inf at or above ``limit``
    (``2^(emax+1)``, the published model's rule)."""
    if E == _NONE or S == 0:
        return 0.0
    # S * 2^(E - F) as a float64: exact below 2^53; above, truncated with a sticky last bit
    # (rounding to odd at 53 bits, which every later rounding to <= 51 bits does not notice).
    mag = abs(S)
    scale = E - F
    if mag >= _EXACT_F64:
        sh = np.int64(0)
        while (mag >> sh) >= _EXACT_F64:
            sh += 1
        lost = (mag & ((np.int64(1) << sh) - 1)) != 0
        mag = (mag >> sh) | (1 if lost else 0)
        scale += sh
    v = float(mag) * _pow2(scale)
    if S < 0:
        v = -v
    if abs(v) >= limit:
        return np.inf if v > 0 else -np.inf
    return _round_exact(v, P, mode)


@njit(cache=True, inline="always")
def _late_block(sa, ea, sb, eb, k0, k1, c, two_m, F0, carry_rule, L, LP, PO, omode):
    """A late-addend block: the products summed in ``L.steps`` interleaved steps (step ``s``
    takes ``floor((k - k0) / 2) mod steps == s``), each step's sum with the previous result
    aligned and truncated as in :func:`block_fma` and rounded into ``LP`` with ``L.mode``;
    then ``p + c`` correctly rounded into ``PO`` with ``omode``."""
    big = np.int64(1) << (two_m + 1)
    p = 0.0
    for step in range(L.steps):
        pmax, carry, emax_t = _NONE, np.int64(0), _NONE
        for k in range(k0, k1):
            if ((k - k0) >> 1) % L.steps == step:
                pmax, carry, emax_t = _track(sa[k] * sb[k], np.int64(ea[k] + eb[k]), big, pmax,
                                             carry, emax_t)
        E, F, S = _window(pmax, carry, emax_t, p, L.emin, F0, carry_rule)
        base = F - two_m - E
        for k in range(k0, k1):
            if ((k - k0) >> 1) % L.steps == step:
                S = _add(S, sa[k] * sb[k], ea[k] + eb[k] + base)
        p = _finish(S, E, F, LP, L.mode, L.limit)
        if not math.isfinite(p):
            return p
    if c == 0.0:
        return p
    ssum, es = two_sum_sign(p, c, RNE)
    if ssum == 0.0 and es == 0:
        return 0.0
    return final_round(ssum, es, PO, omode, 0, np.int64(0), 1)


@njit(cache=True, inline="always")
def block_fma(sa, ea, sb, eb, k0, k1, c, two_m, F0, carry_rule, late_c, c_emin, PO, omode,
              olimit, L, LP):
    """One block FMA ``c + sum_{k0<=k<k1} a[k] b[k]`` of split operands (module docstring).

    Args:
        sa, ea, sb, eb: split row of A and column of B (:func:`split_values`).
        k0, k1: the block's range of k.
        c: the addend, a float64 holding a value of the output format (NaN/Inf returned as
            they are: the drivers handle non-finite operands before the blocks).
        two_m: twice the input format's fraction bits.
        F0: fraction bits kept below the largest alignment exponent (23 + extra bits).
        carry_rule: 1 to keep one more bit when the largest unnormalised product carries.
        late_c: 1 to sum the products first (:func:`_late_block`, parameters ``L``), then add c.
        c_emin: lowest normal exponent of the output format (``c``'s exponent clamp).
        PO, omode, olimit: result format params, its rounding (RTZ/RNE), ``2^(emax+1)``.
        L, LP: :class:`LateParams` of the late addend's product steps and the params of
            their format.

    Returns:
        The block result as a float64 holding a value of the result format.
    """
    if not math.isfinite(c):
        return c
    if late_c == 1:
        return _late_block(sa, ea, sb, eb, k0, k1, c, two_m, F0, carry_rule, L, LP, PO, omode)
    big = np.int64(1) << (two_m + 1)
    pmax, carry, emax_t = _NONE, np.int64(0), _NONE
    for k in range(k0, k1):
        pmax, carry, emax_t = _track(sa[k] * sb[k], np.int64(ea[k] + eb[k]), big, pmax, carry,
                                     emax_t)
    E, F, S = _window(pmax, carry, emax_t, c, c_emin, F0, carry_rule)
    base = F - two_m - E
    for k in range(k0, k1):
        S = _add(S, sa[k] * sb[k], ea[k] + eb[k] + base)
    return _finish(S, E, F, PO, omode, olimit)


@njit(cache=True, inline="always")
def special_result(a, b, c, K):
    """The result of an output element whose operands hold NaN or Inf, by the published rule
    applied to the whole row times column: a NaN product (NaN, or Inf times 0) or ``c`` NaN
    gives NaN; infinities of both signs give NaN; else the infinity. Returns ``(is_special,
    value)``: ``is_special`` 0 when every product and ``c`` are finite."""
    pos = False
    neg = False
    nan = math.isnan(c)
    if math.isinf(c):
        pos |= c > 0
        neg |= c < 0
    for k in range(K):
        p = a[k] * b[k]
        if math.isnan(p):
            nan = True
        elif math.isinf(p):
            pos |= p > 0
            neg |= p < 0
    if nan or (pos and neg):
        return 1, np.nan
    if pos:
        return 1, np.inf
    if neg:
        return 1, -np.inf
    return 0, 0.0


@njit(cache=True, inline="always")
def element(a, b, sa, ea, sb, eb, c, bad, G, two_m, F0, carry_rule, late_c, c_emin, PO, omode,
            olimit, L, LP):
    """One output element from row ``a`` of A and column ``b`` of B (and their splits):
    ``c``, then the blocks of ``G`` products along K in increasing k, each block's result the
    next block's addend (the chained order of one warp's MMA instructions). ``bad`` is 1 when
    the row or the column holds NaN or Inf."""
    K = sa.shape[0]
    if bad == 1 or not math.isfinite(c):
        sp, val = special_result(a, b, c, K)
        if sp == 1:
            return val
    d = c
    for k0 in range(0, K, G):
        d = block_fma(sa, ea, sb, eb, k0, min(k0 + G, K), d, two_m, F0, carry_rule, late_c,
                      c_emin, PO, omode, olimit, L, LP)
    return d


@njit(cache=True)
def matmul_tc_serial(A, B, SA, EA, SB, EB, bad_rows, bad_cols, C, out, G, two_m, F0,
                     carry_rule, late_c, c_emin, PO, omode, olimit, L, LP):
    """:func:`element` for every batch ``t`` and output ``(i, j)``, one at a time: A and its
    splits are (T, M, K), B and its splits (T, K, N), ``C``/``out`` (T, M, N), ``bad_rows``
    (T, M) and ``bad_cols`` (T, N). The scalar twin of :func:`matmul_tc`, and the CUDA
    kernel's loop body."""
    T, M, N = out.shape
    for t in range(T):
        for i in range(M):
            for j in range(N):
                out[t, i, j] = element(A[t, i], B[t, :, j], SA[t, i], EA[t, i], SB[t, :, j],
                                       EB[t, :, j], C[t, i, j], bad_rows[t, i] | bad_cols[t, j],
                                       G, two_m, F0, carry_rule, late_c, c_emin, PO, omode,
                                       olimit, L, LP)


@njit(cache=True, parallel=True)
def matmul_tc(A, B, SA, EA, SB, EB, bad_rows, bad_cols, C, out, G, two_m, F0, carry_rule,
              late_c, c_emin, PO, omode, olimit, L, LP):
    """:func:`matmul_tc_serial`'s results, rows in parallel and each row's N outputs advanced
    together block by block: the same pieces (:func:`_track`, :func:`_window`, :func:`_add`,
    :func:`_finish`) in loops over ``j`` that vectorize (the scalar order is a chain of short
    dependent loops). Each output element is computed independently of the others, so the bits
    depend neither on the thread count nor on this order; the tests check both twins."""
    T, M, N = out.shape
    K = SA.shape[2]
    big = np.int64(1) << (two_m + 1)
    for r in prange(T * M):
        t = r // M
        i = r - t * M
        if late_c == 1:  # the late-addend models (FP8) go one output element at a time
            for j in range(N):
                out[t, i, j] = element(A[t, i], B[t, :, j], SA[t, i], EA[t, i], SB[t, :, j],
                                       EB[t, :, j], C[t, i, j], bad_rows[t, i] | bad_cols[t, j],
                                       G, two_m, F0, carry_rule, late_c, c_emin, PO, omode,
                                       olimit, L, LP)
            continue
        d = C[t, i].copy()
        pmax = np.empty(N, np.int64)
        carry = np.empty(N, np.int64)
        emax_t = np.empty(N, np.int64)
        S = np.empty(N, np.int64)
        Es = np.empty(N, np.int64)
        Fs = np.empty(N, np.int64)
        sb, eb = SB[t], EB[t]
        for k0 in range(0, K, G):
            k1 = min(k0 + G, K)
            pmax[:] = _NONE
            carry[:] = 0
            emax_t[:] = _NONE
            for k in range(k0, k1):
                sa_k = SA[t, i, k]
                if sa_k == 0:  # a zero in A: the whole row of products is zero
                    continue
                ea_k = np.int64(EA[t, i, k])
                for j in range(N):
                    pmax[j], carry[j], emax_t[j] = _track(sa_k * sb[k, j], ea_k + eb[k, j], big,
                                                          pmax[j], carry[j], emax_t[j])
            for j in range(N):
                Es[j], Fs[j], S[j] = _window(pmax[j], carry[j], emax_t[j], d[j], c_emin, F0,
                                             carry_rule)
            for k in range(k0, k1):
                sa_k = SA[t, i, k]
                if sa_k == 0:
                    continue
                ea_k = np.int64(EA[t, i, k])
                for j in range(N):
                    S[j] = _add(S[j], sa_k * sb[k, j], ea_k + eb[k, j] + Fs[j] - two_m - Es[j])
            for j in range(N):
                if math.isfinite(d[j]):  # an infinite or NaN addend passes through
                    d[j] = _finish(S[j], Es[j], Fs[j], PO, omode, olimit)
        for j in range(N):
            if bad_rows[t, i] | bad_cols[t, j] or not math.isfinite(C[t, i, j]):
                sp, val = special_result(A[t, i], B[t, :, j], C[t, i, j], K)
                if sp == 1:
                    d[j] = val
            out[t, i, j] = d[j]
