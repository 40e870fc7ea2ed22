"""CPU array drivers: ``@njit(parallel=True)`` loops over the scalar cores.

Every driver works on flat, contiguous arrays of integer bit patterns (views made by the caller,
never inside a ``prange`` body) and splits the index range into ``nchunk`` contiguous chunks, one
``prange`` iteration each. A chunk writes only its own outputs and its own row of the statistics
arrays, so results never depend on the thread count; the serial twins in the tests check that.

Speed comes from two things. The rounding mode is a compile-time constant (one driver per mode,
compiled on first use and cached), so LLVM deletes the other modes'
logic and vectorizes the branch-free remainder (measured: 2.5x faster than a runtime mode). And statistics are gathered in
the same pass, block by block: a block of ``BLOCK`` elements is rounded (event counts are vector
reductions in that loop), then its exponent histogram is counted while the block is in L1 cache.

Statistics layout: ``counts[c, j]`` is the number of elements of chunk ``c`` with event bit ``j``;
``hist[c, :]`` is chunk ``c``'s histogram row laid out as :mod:`.histogram` describes. With
``hist.shape[1] == 0`` no statistics are gathered.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from fpsim.kernels import accumulate as _kacc
from fpsim.kernels import arith as _karith
from fpsim.kernels import tensor_core as _ktc
from fpsim.kernels.bits import bit_length
from fpsim.kernels.histogram import EXP_BINS, NAN_BIN, SUB0
from fpsim.kernels.rng import random_bits
from fpsim.kernels.round import EV_FIELD, EV_MAX_SUM, RDN, RNA, RNE, RTO, RTZ, RUP, SR, carrier_bits, pack_code, round_bits, unpack_code

#: Elements per block of the statistics loop (a block of inputs and outputs stays in L1 cache;
#: at most EV_MAX_SUM, so that the packed event counts of a block cannot overflow).
BLOCK = 2048


@njit(cache=True, inline="always")
def _load(xb, i, P):
    """Split element ``i`` of a carrier-bit array into (|x| bits, sign bit)."""
    u = np.int64(xb[i])
    return u & ((np.int64(1) << P.carrier_sign_shift) - 1), (u >> P.carrier_sign_shift) & 1


@njit(cache=True, inline="always")
def _round_range(xs, os, off, P, mode, overflow, key, srk, simple):
    """Round the slice ``xs`` (elements ``off ..`` of the whole array) into ``os``.

    The loop indexes from 0 over slices: with a non-zero start, Numba's negative-index
    wraparound check survives and stops LLVM from vectorizing (measured: 5x slower).
    """
    for j in range(xs.size):
        a, sign = _load(xs, j, P)
        rnd = random_bits(key, off + j) if mode == SR else np.int64(0)
        r, sign_out, ev = round_bits(a, sign, P, mode, overflow, rnd, srk, simple)
        os[j] = carrier_bits(r, sign_out, P)


@njit(cache=True, inline="always")
def _event_free_range(P):
    """``(lo, span, low_mask)``: carrier magnitudes ``a`` with ``lo <= a < lo + span`` (or 0)
    round with no event but inexact, in every mode and overflow policy of a simple format.

    Such an ``a`` is a normal carrier value in the format's normal range below ``2^e``, the
    binade of ``max``: rounding is monotone and both ``min_normal`` and ``2^e <= max`` are values of
    the format, so the result is normal and finite (no underflow, subnormal, overflow or NaN
    result). It is exact iff the carrier fraction bits the format lacks (``low_mask``) are zero.
    Zero is exact in a simple format. (With ``max`` below ``min_normal`` the range is empty.)
    """
    cm = P.carrier_man_bits
    lo = max(np.int64(P.min_normal_bits), np.int64(1) << cm)
    span = max(np.int64(0), ((np.int64(P.max_bits) >> cm) << cm) - lo)
    return lo, span, (np.int64(1) << (cm - P.man_bits)) - 1


@njit(cache=True, inline="always")
def _count_exponents(xblk, row, P):
    """Add the exponent fields of the block to the 4 interleaved histograms of ``row``, and the
    exact binades of its carrier-subnormal inputs."""
    # Four elements per step, one copy each (independent increments; measured 1.9x faster than
    # indexing the copy by j & 3).
    h0 = row[0:EXP_BINS]
    h1 = row[EXP_BINS:2 * EXP_BINS]
    h2 = row[2 * EXP_BINS:3 * EXP_BINS]
    h3 = row[3 * EXP_BINS:4 * EXP_BINS]
    m4 = xblk.size - xblk.size % 4
    field0_before = h0[0] + h1[0] + h2[0] + h3[0]
    for j in range(0, m4, 4):
        h0[_load(xblk, j, P)[0] >> P.carrier_man_bits] += 1
        h1[_load(xblk, j + 1, P)[0] >> P.carrier_man_bits] += 1
        h2[_load(xblk, j + 2, P)[0] >> P.carrier_man_bits] += 1
        h3[_load(xblk, j + 3, P)[0] >> P.carrier_man_bits] += 1
    for j in range(m4, xblk.size):
        h0[_load(xblk, j, P)[0] >> P.carrier_man_bits] += 1
    # Carrier subnormals (exponent field 0, not zero) need their exact binade: only blocks
    # with exponent-field-0 inputs (zeros or subnormals) are scanned again.
    if h0[0] + h1[0] + h2[0] + h3[0] != field0_before:
        for j in range(xblk.size):
            a, sign = _load(xblk, j, P)
            if (a != 0) & (a < (np.int64(1) << P.carrier_man_bits)):
                row[SUB0 + bit_length(a)] += 1


@njit(cache=True, inline="always")
def _count_outside(xblk, P, lo, span):
    """Number of non-zero inputs of the block outside ``lo <= |x| < lo + span`` (one unsigned
    compare: below ``lo`` the difference wraps to a huge value)."""
    n = 0
    for j in range(xblk.size):
        a = _load(xblk, j, P)[0]
        n += (a != 0) & (np.uint64(a - lo) >= np.uint64(span))
    return n


@njit(cache=True, inline="always")
def _count_inexact_fraction(xblk, P, low_mask):
    """Number of inputs of the block with fraction bits below the format's precision."""
    n = 0
    for j in range(xblk.size):
        n += (_load(xblk, j, P)[0] & low_mask) != 0
    return n


@njit(cache=True)
def _round_block(xs, os, off, P, mode, overflow, key, srk, simple):
    """:func:`_round_range` as a function of its own, for the event-free blocks of
    :func:`_round_range_stats`: inlined into its branch, the loop lost its AVX-512 width."""
    numba.literally(mode)
    numba.literally(simple)
    _round_range(xs, os, off, P, mode, overflow, key, srk, simple)


@njit(cache=True, inline="always")
def _round_block_events(xs, os, off, P, mode, overflow, key, srk, simple, counts, row, c):
    """Round one block, adding its events to ``counts[c]`` and its NaN inputs to ``row``.

    The event and NaN-input counts are vector reductions in the rounding loop. (Inlined: as a
    function of its own it measured 3-10% slower.)
    """
    packed = np.int64(0)  # one 12-bit count per event (BLOCK <= EV_MAX_SUM)
    n_xnan = 0
    for j in range(xs.size):
        a, sign = _load(xs, j, P)
        rnd = random_bits(key, off + j) if mode == SR else np.int64(0)
        r, sign_out, ev = round_bits(a, sign, P, mode, overflow, rnd, srk, simple)
        os[j] = carrier_bits(r, sign_out, P)
        packed += ev
        n_xnan += a > P.carrier_inf_bits
    for k in range(5):
        counts[c, k] += (packed >> (EV_FIELD * k)) & EV_MAX_SUM
    row[NAN_BIN] += n_xnan


@njit(cache=True, inline="always")
def _round_range_stats(xs, os, off, P, mode, overflow, key, srk, simple, counts, hist, c):
    """As :func:`_round_range`, block by block, adding events and histogram to row ``c``.

    Per block, every read of the inputs comes before the first write of the outputs, so ``os``
    may be ``xs`` (rounding in place): the histogram loop (a bare increment per element) and,
    when the block has carrier-subnormal inputs, the loop giving them their exact binade run
    first. Then, for a simple format, one vector pass counts the block's inputs outside the
    event-free range (:func:`_event_free_range`). A block without any (most blocks of data that
    fits the format) gets its inexact count from the input fractions and is rounded by the loop
    without statistics; computing the event word per element costs that loop half its vector
    width (AVX-512 to AVX2, measured: 2x the time). Other blocks take the loop with events.
    Both ways give the same counts, so which one a block takes is free to depend on the blocks
    before it: after a block that fails the test, the next ``skip`` blocks take the loop with
    events untested, ``skip`` growing 0, 1, 3, 7, 15 while the test keeps failing (data mostly
    outside the range, such as N(0,1) into float8_e4m3fn, then pays for a test every 16th block
    instead of every block) and back to 0 on a success.
    """
    row = hist[c]
    lo, span, low_mask = _event_free_range(P)
    backoff = 0
    skip = 0
    for b in range(0, xs.size, BLOCK):
        xblk = xs[b:b + BLOCK]
        oblk = os[b:b + BLOCK]
        _count_exponents(xblk, row, P)
        event_free = False
        if simple == 1:
            if skip > 0:
                skip -= 1
            else:
                event_free = _count_outside(xblk, P, lo, span) == 0
                backoff = 0 if event_free else min(2 * backoff + 1, 15)
                skip = backoff
        if event_free:
            counts[c, 4] += _count_inexact_fraction(xblk, P, low_mask)
            _round_block(xblk, oblk, off + b, P, mode, overflow, key, srk, simple)
        else:
            _round_block_events(xblk, oblk, off + b, P, mode, overflow, key, srk, simple,
                                counts, row, c)


@njit(cache=True)
def _chunk(xs, os, off, P, mode, overflow, key, srk, simple, counts, hist, c):
    """Round one chunk (elements ``off ..`` of the whole array), with or without statistics.

    ``mode`` and ``simple`` must be literals at the call site: ``numba.literally`` compiles one
    version per value at compile time of the caller (no cost per call), with the logic of the
    other modes and format classes gone. Being a function of its own, not inlined into the
    ``prange`` body, also matters: inlined, the loop ran 20% slower (measured), the format
    parameters no longer being plain arguments.
    """
    numba.literally(mode)
    numba.literally(simple)
    if hist.shape[1] == 0:
        _round_range(xs, os, off, P, mode, overflow, key, srk, simple)
    else:
        _round_range_stats(xs, os, off, P, mode, overflow, key, srk, simple, counts, hist, c)


@njit(cache=True, inline="always")
def _quantize(xb, outb, P, mode, overflow, key, srk, counts, hist):
    """Round every carrier value of ``xb`` into the format; write carrier bits to ``outb``.

    ``xb``/``outb``: 1-D uint32 (float32 carrier) or int64 (float64 carrier) bit arrays.
    ``key``: uint64 stream key of stochastic rounding; element ``i`` uses ``random_bits(key, i)``.
    ``counts`` (nchunk, 5) and ``hist`` (nchunk, STATS_LEN or 0) must be zeroed by the caller.
    """
    n = xb.size
    nchunk = counts.shape[0]
    simple = P.simple_signs == 1
    for c in prange(nchunk):
        lo = (c * n) // nchunk
        hi = ((c + 1) * n) // nchunk
        # The chunk index as int64: a prange index is uint64 and a plain range's int64, so
        # without the cast the parallel driver and its serial twin compiled every _chunk
        # version twice (28 of the 71 a test run compiled, measured in the kernel cache).
        row = np.int64(c)
        if simple:
            _chunk(xb[lo:hi], outb[lo:hi], lo, P, mode, overflow, key, srk, 1, counts, hist, row)
        else:
            _chunk(xb[lo:hi], outb[lo:hi], lo, P, mode, overflow, key, srk, 0, counts, hist, row)


# One compiled driver per rounding mode, each inlining _quantize with its mode as a literal.
# (Separate dispatchers compile lazily and cache independently. numba.literally on a driver that
# Python calls would re-dispatch on every call, measured at ~1 s a call; inside jitted code, as
# in _chunk, it is resolved once at compile time.)
@njit(parallel=True, cache=True)
def quantize_rne(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, RNE, overflow, key, srk, counts, hist)


@njit(parallel=True, cache=True)
def quantize_rna(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, RNA, overflow, key, srk, counts, hist)


@njit(parallel=True, cache=True)
def quantize_rtz(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, RTZ, overflow, key, srk, counts, hist)


@njit(parallel=True, cache=True)
def quantize_rup(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, RUP, overflow, key, srk, counts, hist)


@njit(parallel=True, cache=True)
def quantize_rdn(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, RDN, overflow, key, srk, counts, hist)


@njit(parallel=True, cache=True)
def quantize_rto(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, RTO, overflow, key, srk, counts, hist)


@njit(parallel=True, cache=True)
def quantize_sr(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, SR, overflow, key, srk, counts, hist)


#: The quantize driver of each :class:`~fpsim.numerics.modes.RoundMode`, indexed by its int value.
QUANTIZE = (quantize_rne, quantize_rna, quantize_rtz, quantize_rup, quantize_rdn, quantize_rto,
            quantize_sr)


# Serial twins for small arrays (used below config.SERIAL_BELOW elements): the same inlined
# _quantize, whose prange is a plain range outside a parallel function. In a training step the
# arrays are small and every cast follows a BLAS product; starting Numba's thread pool there
# made both the cast and the next GEMM wait on the other library's spinning threads (measured:
# 1.1 ms per 16k-element cast and 2 ms per 128x128 GEMM on 2 cores, against 40 us and 0.1 ms).
@njit(cache=True)
def quantize_serial_rne(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, RNE, overflow, key, srk, counts, hist)


@njit(cache=True)
def quantize_serial_rna(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, RNA, overflow, key, srk, counts, hist)


@njit(cache=True)
def quantize_serial_rtz(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, RTZ, overflow, key, srk, counts, hist)


@njit(cache=True)
def quantize_serial_rup(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, RUP, overflow, key, srk, counts, hist)


@njit(cache=True)
def quantize_serial_rdn(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, RDN, overflow, key, srk, counts, hist)


@njit(cache=True)
def quantize_serial_rto(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, RTO, overflow, key, srk, counts, hist)


@njit(cache=True)
def quantize_serial_sr(xb, outb, P, overflow, key, srk, counts, hist):
    _quantize(xb, outb, P, SR, overflow, key, srk, counts, hist)


#: Serial twins of :data:`QUANTIZE`, same order.
QUANTIZE_SERIAL = (quantize_serial_rne, quantize_serial_rna, quantize_serial_rtz,
                   quantize_serial_rup, quantize_serial_rdn, quantize_serial_rto,
                   quantize_serial_sr)


# ---- The drivers: the same names and arguments as :mod:`.cuda` exports ---------------------------
# (numerics/backend.py's dispatch table calls ``cpu.<name>`` or ``cuda.<name>`` with one argument
# list.) ``key`` is a Python int or uint64; the jitted loops take it as uint64, so that one
# compiled version serves every call.
def quantize(xb, outb, P, mode, overflow, key, srk, counts, hist):
    """Round every carrier value of ``xb`` into the format; carrier bits to ``outb``.

    ``xb``/``outb``: 1-D uint32 (float32 carrier) or int64 (float64 carrier) bit arrays.
    ``counts`` (nchunk, 5) and ``hist`` (nchunk, STATS_LEN or 0): zeroed int64 arrays, one row
    per parallel chunk (``hist.shape[1] == 0``: no statistics).
    """
    QUANTIZE[mode](xb, outb, P, overflow, np.uint64(key), srk, counts, hist)


def quantize_serial(xb, outb, P, mode, overflow, key, srk, counts, hist):
    """:func:`quantize` without Numba's thread pool (small arrays; see the serial twins). CPU
    only: the CUDA module has no thread pool to avoid."""
    QUANTIZE_SERIAL[mode](xb, outb, P, overflow, np.uint64(key), srk, counts, hist)


def encode(xb, codes, P, mode, overflow, key, srk, nchunk):
    """Round every carrier value of ``xb`` and write the format's codes (int64) to ``codes``,
    in ``nchunk`` parallel chunks."""
    _encode_chunks(xb, codes, P, mode, overflow, np.uint64(key), srk, nchunk)


def elementwise(op, A, B, C, out, flags, odd, P, W, mode, overflow, key, srk, tin_before, bad):
    """``op`` on flat float64 operands: :func:`fpsim.kernels.arith.elementwise` (its
    arguments), ``bad.size`` parallel chunks; ``bad[c] >= 0`` afterwards marks a chunk holding an
    operand that is not a value of the format."""
    _karith.elementwise(op, A, B, C, out, flags, odd, P, W, mode, overflow, np.uint64(key), srk,
                        tin_before, bad)


def matmul_model(A, BT, out, prod_kind, PP, acc_kind, PA, PO, order, block, compensated, mode,
                 overflow, key, srk, nchunk):
    """The accumulation model's ``A @ BT.T`` into ``out``:
    :func:`fpsim.kernels.accumulate.matmul_model` (its arguments), rows in ``nchunk`` chunks."""
    _kacc.matmul_model(A, BT, out, prod_kind, PP, acc_kind, PA, PO, order, block, compensated,
                       mode, overflow, np.uint64(key), srk, nchunk)


@njit(parallel=True, cache=True)
def _encode_chunks(xb, codes, P, mode, overflow, key, srk, nchunk):
    """The jitted loop of :func:`encode` (``key`` uint64)."""
    n = xb.size
    for c in prange(nchunk):
        lo = (c * n) // nchunk
        hi = ((c + 1) * n) // nchunk
        xs = xb[lo:hi]
        cs = codes[lo:hi]
        for j in range(xs.size):
            a, sign = _load(xs, j, P)
            rnd = random_bits(key, lo + j) if mode == SR else np.int64(0)
            r, sign_out, ev = round_bits(a, sign, P, mode, overflow, rnd, srk)
            cs[j] = pack_code(r, sign_out, P)


@njit(parallel=True, cache=True)
def decode(codes, outb, P, nchunk):
    """Write the float64 bit pattern of every code (int64) of ``codes`` to ``outb`` (int64)."""
    n = codes.size
    for c in prange(nchunk):
        lo = (c * n) // nchunk
        hi = ((c + 1) * n) // nchunk
        cs = codes[lo:hi]
        os = outb[lo:hi]
        for j in range(cs.size):
            os[j] = unpack_code(cs[j], P)


def tc_matmul(A, B, SA, EA, SB, EB, bad_rows, bad_cols, C, out, *model):
    """The tensor-core model's GEMM (:func:`.tensor_core.matmul_tc`): batched operands (T, M, K)
    and (T, K, N) with their splits, ``C`` and ``out`` (T, M, N); ``model`` is
    :meth:`fpsim.numerics.tensor_core.TensorCore.kernel_args`."""
    _ktc.matmul_tc(A, B, SA, EA, SB, EB, bad_rows, bad_cols, C, out, *model)


def tc_matmul_serial(A, B, SA, EA, SB, EB, bad_rows, bad_cols, C, out, *model):
    """The scalar twin of :func:`tc_matmul`, one output element at a time."""
    _ktc.matmul_tc_serial(A, B, SA, EA, SB, EB, bad_rows, bad_cols, C, out, *model)
