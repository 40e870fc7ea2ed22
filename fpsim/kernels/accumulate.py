"""Dot products under an accumulation model: products rounded (or exact), each addition rounded
into an accumulator format (or native float64, or exact), in a given order, then one final
rounding into the output format.

Every rounding is :func:`.arith.op_round` / :func:`.arith.round_odd` (hence the one
``round_bits``), so each step is the correctly rounded IEEE operation of the model. Output
element ``e = i*N + j`` draws the random bits of stochastic rounding from counters in its own
range ``e*stride ..``: product ``k`` at ``+k``, the ``t``-th accumulator rounding (in the order
the model performs them) at ``+K+t``, the final rounding at ``+stride-1`` (``stride = 5K+4``: at
most ``4K+1`` accumulator roundings, Kahan's four per term).

Two drivers:

* :func:`matmul_model`: any model; one output element at a time (terms gathered into a buffer,
  then summed in the model's order).
* :func:`matmul_sequential`: the sequential order without compensation, for finite operands,
  as a row-times-matrix loop whose inner loop over ``j`` updates ``N`` independent accumulators
  (it vectorizes; the per-element loop is one long chain of dependent roundings).
"""

from __future__ import annotations

import math
import numba
import numpy as np
from numba import njit, prange

from fpsim.kernels.arith import OP_ADD, OP_MUL, OP_SUB, is_value, odd_bits, round_odd, rounded_op, special_value, two_sum_sign
from fpsim.kernels.bitcast import bits_f64, f64_bits
from fpsim.kernels.bits import mul_rn, signbit
from fpsim.kernels.rng import random_bits
from fpsim.kernels.round import RDN, RNE, SR, carrier_bits, round_bits

#: How products are formed: exactly (float64 holds the product of two values of <= 26 bits), or
#: rounded into the product format.
PROD_EXACT, PROD_FORMAT = 0, 1
#: How the accumulator adds: exactly (one rounding at the end), rounded into the accumulator
#: format, or native float64 addition (round to nearest even).
ACC_EXACT, ACC_FORMAT, ACC_FLOAT64 = 0, 1, 2
#: Summation orders.
ORDER_SEQUENTIAL, ORDER_PAIRWISE, ORDER_BLOCKED = 0, 1, 2


@njit(cache=True, inline="always")
def _rnd(mode, key, ctr):
    return random_bits(key, ctr) if mode == SR else np.int64(0)


@njit(cache=True, inline="always")
def product(a, b, prod_kind, PP, mode, overflow, key, ctr, srk):
    """``a * b``: exact, or rounded into the product format ``PP``."""
    if prod_kind == PROD_EXACT:
        return mul_rn(a, b)  # exact; pinned so that CUDA cannot fuse it into the next addition
    return rounded_op(OP_MUL, a, b, PP, mode, overflow, _rnd(mode, key, ctr), srk)


@njit(cache=True, inline="always")
def acc_op(op, s, p, acc_kind, PA, mode, overflow, key, ctr, srk):
    """``s + p`` (``op`` OP_ADD) or ``s - p`` (OP_SUB) in the accumulator: rounded into ``PA``
    or native float64 (never ACC_EXACT: that sum is :func:`exact_sum`)."""
    if acc_kind == ACC_FLOAT64:
        return s + p if op == OP_ADD else s - p
    return rounded_op(op, s, p, PA, mode, overflow, _rnd(mode, key, ctr), srk)


@njit(cache=True, inline="always")
def acc_first(p, acc_kind, PA, mode, overflow, key, ctr, srk):
    """The first term entering the accumulator: ``p`` rounded into it, as ``p + 0`` with the
    zero of ``p``'s sign (exact before rounding in every mode and keeps -0; ``p + (+0)`` would
    turn -0 into +0, ``p + (-0)`` +0 into -0 when rounding down)."""
    return acc_op(OP_ADD, p, math.copysign(0.0, p), acc_kind, PA, mode, overflow, key, ctr, srk)


@njit(cache=True)  # one compiled body for the three drivers (inlined, each compiles ~20 s longer)
def final_round(x, es, PO, mode, overflow, rnd, srk):
    """``x + err`` (``es`` the sign of ``err``, see :func:`.arith.odd_bits`) rounded once into
    the output format; NaN, ±Inf and ±0 as special results."""
    if not math.isfinite(x) or x == 0.0:
        return special_value(x, PO, mode, overflow, rnd, srk)
    mag, sign = odd_bits(x, es)
    return round_odd(mag, sign, PO, PO, mode, overflow, rnd, srk, 1)[0]


@njit(cache=True)
def exact_sum(terms, n, partials, mode):
    """The exact sum of ``terms[:n]`` as ``(hi, es)``: ``hi`` the float64 nearest to it (ties
    unresolved: only the rounding to odd built from ``(hi, es)`` is used) and ``es`` the sign of
    the rest. Shewchuk's non-overlapping partials, as in Python's ``math.fsum``; ``partials``
    is scratch of at least ``n`` elements.

    NaN/Inf terms give the float64 sum (NaN, or the infinity); an exact zero sum is -0 when
    every term is -0 (or when rounding down and not every term is +0), else +0 -- IEEE's rule
    for a sum of exact additions.
    """
    finite = True
    all_neg0 = True
    all_pos0 = True
    for k in range(n):
        x = terms[k]
        finite &= math.isfinite(x)
        all_neg0 &= (x == 0.0) & signbit(x)
        all_pos0 &= (x == 0.0) & (not signbit(x))
    if not finite:
        s = 0.0
        for k in range(n):
            s += terms[k]
        return s, np.int64(0)
    m = 0  # number of partials, increasing magnitude, bits not overlapping
    for k in range(n):
        x = terms[k]
        i = 0
        for j in range(m):
            y = partials[j]
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                partials[i] = lo
                i += 1
            x = hi
        partials[i] = x
        m = i + 1
    hi = 0.0
    es = np.int64(0)
    j = m - 1
    if j >= 0:
        hi = partials[j]
        j -= 1
        while j >= 0:
            x = hi
            y = partials[j]
            j -= 1
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                # The partials below lo are smaller than its lowest bit: the rest has lo's sign.
                es = np.int64(lo > 0.0) - np.int64(lo < 0.0)
                break
    if hi == 0.0:
        neg = all_neg0 or (mode == RDN and not all_pos0)
        hi = -0.0 if neg else 0.0
    return hi, es


@njit(cache=True, inline="always")
def _seq_sum(t, lo, hi, acc_kind, PA, mode, overflow, key, base, tc, srk):
    """Sequential sum of ``t[lo:hi]`` (``hi > lo``) in the accumulator, the first term rounded
    into it; returns ``(sum, next accumulator-rounding counter)``."""
    s = acc_first(t[lo], acc_kind, PA, mode, overflow, key, base + tc, srk)
    tc += 1
    for k in range(lo + 1, hi):
        s = acc_op(OP_ADD, s, t[k], acc_kind, PA, mode, overflow, key, base + tc, srk)
        tc += 1
    return s, tc


@njit(cache=True)
def model_sum(t, K, buf, acc_kind, PA, order, block, compensated, mode, overflow, key, base,
              srk):
    """Sum the ``K > 0`` terms ``t[:K]`` under the accumulation model; returns ``(x, es)`` for
    :func:`final_round`. ``buf`` is scratch of ``K`` elements. Counters from ``base`` on."""
    if acc_kind == ACC_EXACT:
        return exact_sum(t, K, buf, mode)
    tc = 0
    if compensated:  # Kahan: c holds the rounding error of the last addition, negated
        s = acc_first(t[0], acc_kind, PA, mode, overflow, key, base, srk)
        tc = 1
        c = 0.0
        for k in range(1, K):
            y = acc_op(OP_SUB, t[k], c, acc_kind, PA, mode, overflow, key, base + tc, srk)
            u = acc_op(OP_ADD, s, y, acc_kind, PA, mode, overflow, key, base + tc + 1, srk)
            d = acc_op(OP_SUB, u, s, acc_kind, PA, mode, overflow, key, base + tc + 2, srk)
            c = acc_op(OP_SUB, d, y, acc_kind, PA, mode, overflow, key, base + tc + 3, srk)
            s = u
            tc += 4
        return s, np.int64(0)
    if order == ORDER_SEQUENTIAL:
        return _seq_sum(t, 0, K, acc_kind, PA, mode, overflow, key, base, tc, srk)[0], np.int64(0)
    if order == ORDER_BLOCKED:
        total = 0.0
        for lo in range(0, K, block):
            bs, tc = _seq_sum(t, lo, min(lo + block, K), acc_kind, PA, mode, overflow, key, base,
                              tc, srk)
            if lo == 0:
                total = bs
            else:
                total = acc_op(OP_ADD, total, bs, acc_kind, PA, mode, overflow, key, base + tc,
                               srk)
                tc += 1
        return total, np.int64(0)
    # Pairwise, bottom up: round every term into the accumulator, then add neighbours level by
    # level ((t0+t1), (t2+t3), ...; an odd last one moves up as it is) until one is left.
    for k in range(K):
        buf[k] = acc_first(t[k], acc_kind, PA, mode, overflow, key, base + tc, srk)
        tc += 1
    n = K
    while n > 1:
        for i in range(n // 2):
            buf[i] = acc_op(OP_ADD, buf[2 * i], buf[2 * i + 1], acc_kind, PA, mode, overflow, key,
                            base + tc, srk)
            tc += 1
        if n % 2 == 1:
            buf[n // 2] = buf[n - 1]
        n = (n + 1) // 2
    return buf[0], np.int64(0)


@njit(parallel=True, cache=True)
def matmul_model(A, BT, out, prod_kind, PP, acc_kind, PA, PO, order, block, compensated, mode,
                 overflow, key, srk, nchunk):
    """``out[i, j]`` = the model's ``sum_k A[i, k] * BT[j, k]`` rounded into the output format.

    ``A`` (M, K) and ``BT`` (N, K) (B transposed, so that both operands of a dot product are
    contiguous) hold float64 values; ``out`` (M, N) float64. Rows are split into ``nchunk``
    chunks, one ``prange`` iteration each.
    """
    M, K = A.shape
    N = BT.shape[0]
    stride = 5 * K + 4
    for c in prange(nchunk):
        t = np.empty(K, np.float64)
        buf = np.empty(K, np.float64)
        for i in range((c * M) // nchunk, ((c + 1) * M) // nchunk):
            for j in range(N):
                base = np.int64(i * N + j) * stride
                if K == 0:
                    x, es = 0.0, np.int64(0)
                else:
                    for k in range(K):
                        t[k] = product(A[i, k], BT[j, k], prod_kind, PP, mode, overflow, key,
                                       base + k, srk)
                    x, es = model_sum(t, K, buf, acc_kind, PA, order, block, compensated, mode,
                                      overflow, key, base + K, srk)
                out[i, j] = final_round(x, es, PO, mode, overflow,
                                        _rnd(mode, key, base + stride - 1), srk)


@njit(cache=True, inline="always")
def _add_finite(s, p, PA, mode, overflow, rnd, srk):
    """``s + p`` rounded into the accumulator, for a finite ``p``, written without branches
    (it vectorizes). ``s`` may be ±Inf or NaN: the error term of TwoSum is then NaN, its sign
    reads as 0, and ``round_bits`` keeps Inf/NaN as :func:`.arith.op_round` would."""
    x, es = two_sum_sign(s, p, mode)
    mag, sign = odd_bits(x, es)
    r, sign_out, ev = round_bits(mag, sign, PA, mode, overflow, rnd, srk)
    return bits_f64(carrier_bits(r, sign_out, PA))


@njit(cache=True, inline="always")
def _mul_finite(a, b, PP, mode, overflow, rnd, srk):
    """``a * b`` rounded into a format, for finite operands, without branches."""
    mag, sign = odd_bits(mul_rn(a, b), np.int64(0))
    r, sign_out, ev = round_bits(mag, sign, PP, mode, overflow, rnd, srk)
    return bits_f64(carrier_bits(r, sign_out, PP))


@njit(cache=True, inline="always")
def _sequential_rows(A, B, out, s, lo, hi, prod_kind, PP, PA, PO, mode, overflow, key, srk):
    """Rows ``lo .. hi`` of :func:`matmul_sequential`; ``s`` is scratch of N elements."""
    K = A.shape[1]
    N = B.shape[1]
    stride = 5 * K + 4
    for i in range(lo, hi):
        e0 = np.int64(i * N) * stride
        for k in range(K):
            a = A[i, k]
            bk = B[k]
            for j in range(N):
                base = e0 + j * stride
                p = mul_rn(a, bk[j])
                if prod_kind == PROD_FORMAT:
                    p = _mul_finite(a, bk[j], PP, mode, overflow, _rnd(mode, key, base + k), srk)
                prev = s[j] if k > 0 else math.copysign(0.0, p)  # acc_first for k = 0
                s[j] = _add_finite(prev, p, PA, mode, overflow, _rnd(mode, key, base + K + k),
                                   srk)
        o = out[i]
        for j in range(N):
            base = e0 + j * stride
            o[j] = final_round(s[j], np.int64(0), PO, mode, overflow,
                               _rnd(mode, key, base + stride - 1), srk) if K > 0 else 0.0


@njit(cache=True)
def _sequential_rows_literal(A, B, out, s, lo, hi, prod_kind, PP, PA, PO, mode, overflow, key,
                             srk):
    """:func:`_sequential_rows` compiled for one mode (a literal at the call site)."""
    numba.literally(mode)
    _sequential_rows(A, B, out, s, lo, hi, prod_kind, PP, PA, PO, mode, overflow, key, srk)


@njit(cache=True)
def _sequential_rows_runtime(A, B, out, s, lo, hi, prod_kind, PP, PA, PO, mode, overflow, key,
                             srk):
    """:func:`_sequential_rows` with the mode read at run time."""
    _sequential_rows(A, B, out, s, lo, hi, prod_kind, PP, PA, PO, mode, overflow, key, srk)


@njit(cache=True, inline="always")
def _matmul_sequential(rows, A, B, out, prod_kind, PP, PA, PO, mode, overflow, key, srk, nchunk):
    M = A.shape[0]
    for c in prange(nchunk):
        s = np.empty(B.shape[1], np.float64)
        rows(A, B, out, s, (c * M) // nchunk, ((c + 1) * M) // nchunk, prod_kind, PP, PA, PO,
             mode, overflow, key, srk)


@njit(parallel=True, cache=True)
def matmul_sequential_rne(A, B, out, prod_kind, PP, PA, PO, overflow, key, srk, nchunk):
    _matmul_sequential(_sequential_rows_literal, A, B, out, prod_kind, PP, PA, PO, RNE, overflow,
                       key, srk, nchunk)


@njit(parallel=True, cache=True)
def matmul_sequential_any(A, B, out, prod_kind, PP, PA, PO, mode, overflow, key, srk, nchunk):
    _matmul_sequential(_sequential_rows_runtime, A, B, out, prod_kind, PP, PA, PO, mode, overflow,
                       key, srk, nchunk)


def matmul_sequential(A, B, out, prod_kind, PP, PA, PO, mode, overflow, key, srk, nchunk):
    """The sequential model with products exact or rounded into ``PP`` and every addition
    rounded into ``PA``, for finite ``A`` (M, K) and ``B`` (K, N); equal to :func:`matmul_model`
    with ``order`` sequential, no compensation, bit for bit (same roundings, same counters).
    Round to nearest even has a driver of its own with the mode a compile-time constant
    (measured 0.43 -> 1.28 G multiply-adds/s for fp16 accumulation, 256^3 on 2 cores)."""
    if mode == RNE:
        matmul_sequential_rne(A, B, out, prod_kind, PP, PA, PO, overflow, key, srk, nchunk)
    else:
        matmul_sequential_any(A, B, out, prod_kind, PP, PA, PO, mode, overflow, key, srk, nchunk)


_FRACTION = (np.int64(1) << 52) - 1
_SIGN = np.int64(1) << 63
_INF_BITS = np.int64(2047) << 52
#: ``lowest`` of an operand without a finite nonzero element.
NO_SET_BIT = 9999


@njit(cache=True, inline="always")
def _lowest_set_bit(a):
    """Exponent of the lowest set bit of the finite nonzero float64 magnitude with bits ``a``."""
    field = a >> 52
    sig = (a & _FRACTION) | (np.int64(field > 0) << 52)
    # |x| = sig * 2^(max(field, 1) - 1075); sig & -sig is its lowest set bit, a power of two that
    # float64 holds exactly, so its exponent field gives the bit's position.
    tz = (f64_bits(np.float64(sig & -sig)) >> 52) - 1023
    return max(field, 1) - 1075 + tz


@njit(cache=True, inline="always")
def plainly_value(a, low, P):
    """Whether the float64 magnitude with bits ``a`` (sign cleared; ``low`` its
    :func:`_lowest_set_bit`, any value when ``a`` is 0) is a value of the format ``P`` by a few
    integer tests, without rounding: True implies :func:`.arith.is_value` of either sign; False
    decides nothing.

    Only for formats with ``simple_signs`` (signed, a zero, Inf/NaN at most in the top codes):
    there ±0 is a value, and so is every number in ``[T, max]`` that is a multiple of its
    binade's ulp -- ``2^(e - man_bits)`` in a normal binade ``[2^e, 2^(e+1))``, ``T`` below
    ``min_normal`` -- since each such binade holds all of them up to ``max`` (the fn formats'
    NaN code lies above ``max``). A multiple of the ulp is a number whose lowest set bit is not
    below it. (Arithmetic formats have exponents within ±511, so ``[T, max]`` holds float64
    normals only and ``e`` is the float64 exponent.)
    """
    ulp = (a >> 52) - 1023 - P.man_bits if a >= P.min_normal_bits else P.min_positive_log2
    in_range = (a >= P.min_positive_bits) & (a <= P.max_bits)
    return (P.simple_signs != 0) & ((a == 0) | (in_range & (low >= ulp)))


@njit(cache=True)
def _max_row_sum(X):
    """The largest sum of magnitudes along a row of the 2-D ``X``, each row summed in order
    (four rows at a time: four independent chains of additions instead of one)."""
    M, K = X.shape
    best = 0.0
    for i0 in range(0, M, 4):
        r0 = r1 = r2 = r3 = 0.0
        i1, i2, i3 = min(i0 + 1, M - 1), min(i0 + 2, M - 1), min(i0 + 3, M - 1)
        for k in range(K):
            r0 += abs(X[i0, k])
            r1 += abs(X[i1, k])
            r2 += abs(X[i2, k])
            r3 += abs(X[i3, k])
        best = max(best, max(max(r0, r1), max(r2, r3)))
    return best


@njit(cache=True)
def scan_operand_into(X, P, X32, row_sums):
    """One fused pass over a 2-D float64 operand: ``(n_not_values, all_finite, lowest, max_abs,
    max_row_sum)`` -- elements that are not values of the format ``P``; whether all are finite;
    the smallest ``L`` such that every finite element is a multiple of ``2^L``
    (:data:`NO_SET_BIT` if none is nonzero); the largest finite magnitude; the largest sum of
    magnitudes along a row (0.0 unless ``row_sums``). When ``X32`` has ``X``'s shape the pass
    also writes ``X`` rounded to float32 into it (the float32 BLAS operand, exact when every
    element is a value of a format that fits float32).

    The main loop has no float reduction and no call, so it vectorizes; the exact
    :func:`.arith.is_value` (a rounding) runs in a second pass, only when some element is not
    :func:`plainly_value` -- zeros, normals and subnormals of the common formats are.
    """
    M, K = X.shape
    copy = X32.shape[0] == M and X32.shape[1] == K
    unsure = 0
    finite = True
    lowest = NO_SET_BIT
    max_bits = np.int64(0)
    for i in range(M):
        for k in range(K):
            x = X[i, k]
            a = f64_bits(x) & ~_SIGN
            fin = a < _INF_BITS
            low = _lowest_set_bit(a)
            unsure += not plainly_value(a, low, P)
            finite &= fin
            max_bits = max(max_bits, a if fin else np.int64(0))  # bit order is value order
            lowest = min(lowest, low if (a != 0) & fin else NO_SET_BIT)
            if copy:
                X32[i, k] = np.float32(x)
    nbad = 0
    if unsure:
        for i in range(M):
            for k in range(K):
                x = X[i, k]
                a = f64_bits(x) & ~_SIGN
                if not plainly_value(a, _lowest_set_bit(a), P):
                    nbad += not is_value(x, P)
    max_row = _max_row_sum(X) if row_sums else 0.0
    return nbad, finite, lowest, bits_f64(max_bits), max_row


@njit(cache=True)
def scan_operand(X, P):
    """:func:`scan_operand_into` with row sums and without a float32 copy."""
    return scan_operand_into(X, P, np.empty((0, 0), np.float32), True)


@njit(cache=True, inline="always")
def _zero_sum(A, B, i, j, mode):
    """The signed zero that the model's exact zero sum ``sum_k A[i, k] * B[k, j]`` is: -0 when
    every product is -0, or when rounding down and not every product is +0; else +0. (Each
    addition of an exact sum that is zero follows IEEE's rule, so any order of additions --
    sequential, blocked, pairwise, as :func:`exact_sum` -- ends with this sign.) The loop stops
    as soon as the products read so far decide it: usually at the first."""
    all_neg0 = A.shape[1] > 0
    all_pos0 = True
    for k in range(A.shape[1]):
        p = A[i, k] * B[k, j]
        all_neg0 &= (p == 0.0) & signbit(p)
        all_pos0 &= (p == 0.0) & (not signbit(p))
        if not all_neg0 and (mode != RDN or not all_pos0):
            break
    return -0.0 if all_neg0 or (mode == RDN and not all_pos0) else 0.0


@njit(cache=True)
def finish_exact(C, A, B, out, PO, mode, overflow, key, srk, stride, rounded):
    """``out[i, j]`` = the finite exact sum ``C[i, j]`` (float32 or float64) of the model, its
    zeros signed as the model's sum is (:func:`_zero_sum`), rounded into the output format with
    the final rounding's counter of :func:`matmul_model` when ``rounded``, else as it is (the
    caller proved every such sum a value of the output format). The BLAS fast path.

    Three loops, each simple enough to stay fast: the widening copy (it vectorizes), the signs
    of the zeros (only when there are any), the roundings (only when asked). Serial on purpose:
    it runs right after a BLAS call, whose OpenBLAS threads spin for a few milliseconds
    afterwards; a ``prange`` launch then waits for them (measured: 3.7 ms instead of 0.15 ms
    for 65536 elements on 2 cores).
    """
    M, N = out.shape
    zeros = 0
    for i in range(M):
        for j in range(N):
            c = np.float64(C[i, j])
            zeros += c == 0.0
            out[i, j] = c
    if zeros:
        for i in range(M):
            for j in range(N):
                if out[i, j] == 0.0:
                    out[i, j] = _zero_sum(A, B, i, j, mode)
    if rounded:
        for i in range(M):
            for j in range(N):
                hb = f64_bits(out[i, j])
                ctr = np.int64(i * N + j) * stride + stride - 1
                r, sign_out, ev = round_bits(hb & ~_SIGN, (hb >> 63) & 1, PO, mode, overflow,
                                             _rnd(mode, key, ctr), srk)
                out[i, j] = bits_f64(carrier_bits(r, sign_out, PO))
