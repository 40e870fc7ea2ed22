"""CUDA array drivers: ``@cuda.jit`` twins of :mod:`.cpu`, :mod:`.arith` and :mod:`.accumulate`,
calling the same scalar cores (``round_bits``, ``op_round``, ``model_sum``) unchanged.

Imported only by :func:`fpsim.numerics.backend.cuda_module` when a device array arrives (or by tests),
never by ``import fpsim``. One thread handles one element (one output element for matmul).

Statistics are gathered per block in shared memory (int32: event counts, one copy of the
exponent-field bins, the subnormal bins, the NaN bin — 2118 counters, 8.5 KB) and added to the
global int64 rows once per block, so the global atomics are per block and bin, not per element;
the rows have the layout of :mod:`.histogram`, so :func:`~.histogram.fold` reads them as it
reads the CPU's.

Float products in the scalar cores go through :func:`.bits.mul_rn`, which this module overloads
for CUDA with libdevice's ``dmul_rn``: numba-cuda contracts ``a*b + c`` into an FMA otherwise.
Under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) kernels run as Python and ``mul_rn`` is
the plain product.
"""

from __future__ import annotations

import numpy as np

# numba-cuda 0.30.4 still calls np.row_stack, which numpy 2.5 removed; np.vstack is the same
# function (numpy deprecated the alias in 2.0), so restore the name before importing numba.cuda.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

from numba import cuda, int32  # noqa: E402
from numba.core import config as _nconfig  # noqa: E402

from fpsim.kernels import bits, tensor_core
from fpsim.kernels.accumulate import final_round, model_sum, product
from fpsim.kernels.arith import OP_FMA, OP_SQRT, is_value, op_odd, op_round
from fpsim.kernels.bits import bit_length
from fpsim.kernels.histogram import EXP_BINS, NAN_BIN, SUB0, SUB_BINS
from fpsim.kernels.rng import random_bits
from fpsim.kernels.round import EV_FIELD, SR, carrier_bits, pack_code, round_bits, unpack_code

#: Threads per block.
THREADS = 256
#: Shared statistics per block: 5 event counts, EXP_BINS exponent fields, SUB_BINS subnormal
#: bit lengths, 1 NaN bin.
_SH_EXP = 5
_SH_SUB = _SH_EXP + EXP_BINS
_SH_NAN = _SH_SUB + SUB_BINS
SH_LEN = _SH_NAN + 1

if not _nconfig.ENABLE_CUDASIM:
    from numba.core.extending import overload
    from numba.cuda import libdevice

    @overload(bits.mul_rn, target="cuda")
    def _mul_rn_cuda(a, b):
        return lambda a, b: libdevice.dmul_rn(a, b)

    @cuda.jit(device=True, inline=True)
    def _local(a):
        """An array row handed to a shared scalar core (on the device: itself)."""
        return a

    from fpsim.kernels.bitcast import bits_f64 as to_f64, f64_bits as f64_bits
else:
    def _local(a):
        """Under the simulator kernels run as Python and wrap arrays; the jitted scalar cores
        need the numpy array underneath."""
        return a._item._ary

    def to_f64(b):
        """float64 of int64 bits (the bitcast intrinsic cannot run as Python)."""
        return np.array(b, np.int64).view(np.float64)[()]

    def f64_bits(x):
        """int64 bits of a float64."""
        return np.array(x, np.float64).view(np.int64)[()]


@cuda.jit(device=True, inline=True)
def _low_mask(k):
    """``2^k - 1`` for ``k <= 63`` without an intermediate ``2^63`` (-1 with its top bits
    cleared), which the simulator's numpy integers would report as an overflow."""
    return np.int64(-1) ^ (np.int64(-1) << k)


def blocks(n: int) -> int:
    """Blocks of :data:`THREADS` threads that cover ``n`` elements (at least one)."""
    return max(1, -(-n // THREADS))


@cuda.jit
def _quantize_kernel(xb, outb, P, mode, overflow, key, srk, counts, hist):
    """Round ``xb`` (carrier bits) into the format; write carrier bits to ``outb``.

    ``counts`` (1, 5) and ``hist`` (1, STATS_LEN) or (1, 0): zeroed int64 device arrays.
    """
    sh = cuda.shared.array(SH_LEN, int32)
    stats = hist.shape[1] != 0
    t = cuda.threadIdx.x
    if stats:
        for j in range(t, SH_LEN, cuda.blockDim.x):
            sh[j] = 0
        cuda.syncthreads()
    i = cuda.grid(1)
    if i < xb.size:
        u = np.int64(xb[i])
        a = u & _low_mask(P.carrier_sign_shift)
        sign = (u >> P.carrier_sign_shift) & 1
        rnd = random_bits(key, i) if mode == SR else np.int64(0)
        r, sign_out, ev = round_bits(a, sign, P, mode, overflow, rnd, srk)
        outb[i] = carrier_bits(r, sign_out, P)
        if stats:
            for j in range(5):
                if (ev >> (EV_FIELD * j)) & 1:
                    cuda.atomic.add(sh, j, 1)
            cuda.atomic.add(sh, _SH_EXP + (a >> P.carrier_man_bits), 1)
            if (a != 0) & (a < (np.int64(1) << P.carrier_man_bits)):
                cuda.atomic.add(sh, _SH_SUB + bit_length(a), 1)
            if a > P.carrier_inf_bits:
                cuda.atomic.add(sh, _SH_NAN, 1)
    if stats:
        cuda.syncthreads()
        for j in range(t, SH_LEN, cuda.blockDim.x):
            v = sh[j]
            if v != 0:
                if j < _SH_EXP:
                    cuda.atomic.add(counts, (0, j), v)
                elif j < _SH_SUB:
                    cuda.atomic.add(hist, (0, j - _SH_EXP), v)
                elif j < _SH_NAN:
                    cuda.atomic.add(hist, (0, SUB0 + j - _SH_SUB), v)
                else:
                    cuda.atomic.add(hist, (0, NAN_BIN), v)


def quantize(xb, outb, P, mode, overflow, key, srk, counts, hist):
    """Round ``xb`` (carrier bits) into the format, carrier bits to ``outb``: the twin of
    :func:`.cpu.quantize`, same arguments (device arrays, or host arrays under the simulator).

    ``counts`` (1, 5) and ``hist`` (1, STATS_LEN) or (1, 0) are zeroed int64 arrays; the CPU
    takes one row per chunk, here blocks add into the single row.
    """
    _quantize_kernel[blocks(xb.size), THREADS](xb, outb, P, mode, overflow, np.uint64(key), srk,
                                               counts, hist)


@cuda.jit
def _encode_kernel(xb, codes, P, mode, overflow, key, srk):
    """Round every carrier value of ``xb`` and write the format's codes (int64) to ``codes``."""
    i = cuda.grid(1)
    if i < xb.size:
        u = np.int64(xb[i])
        a = u & _low_mask(P.carrier_sign_shift)
        rnd = random_bits(key, i) if mode == SR else np.int64(0)
        r, sign_out, ev = round_bits(a, (u >> P.carrier_sign_shift) & 1, P, mode, overflow, rnd, srk)
        codes[i] = pack_code(r, sign_out, P)


def encode(xb, codes, P, mode, overflow, key, srk, nchunk=1):
    """Codes (int64) of ``xb`` rounded into the format: the twin of :func:`.cpu.encode`.
    ``nchunk`` (the CPU's parallel split) is accepted for the same signature and unused: the
    grid has one thread per element."""
    _encode_kernel[blocks(xb.size), THREADS](xb, codes, P, mode, overflow, np.uint64(key), srk)


@cuda.jit
def _decode_kernel(codes, outb, P):
    """Write the float64 bit pattern of every code (int64) of ``codes`` to ``outb`` (int64)."""
    i = cuda.grid(1)
    if i < codes.size:
        outb[i] = unpack_code(codes[i], P)


def decode(codes, outb, P, nchunk=1):
    """float64 bit patterns (int64) of the codes (int64): the twin of :func:`.cpu.decode`;
    ``nchunk`` is accepted for the same signature and unused."""
    _decode_kernel[blocks(codes.size), THREADS](codes, outb, P)


@cuda.jit
def _elementwise_kernel(op, A, B, C, out, flags, odd, P, W, mode, overflow, key, srk,
                        tin_before, bad):
    """One element of :func:`elementwise` per thread."""
    i = cuda.grid(1)
    if i >= A.size:
        return
    ok = is_value(A[i], P)
    if op != OP_SQRT:
        ok = ok & is_value(B[i], P)
    if op == OP_FMA:
        ok = ok & is_value(C[i], P)
    if not ok:
        # Every writer stores the same 0, so a plain store is race-free (no atomic needed).
        bad[0] = 0
        return
    rnd = random_bits(key, i) if mode == SR else np.int64(0)
    out[i], flags[i] = op_round(op, A[i], B[i], C[i], P, W, mode, overflow, rnd, srk, tin_before)
    if odd.size > 0:
        odd[i] = op_odd(op, A[i], B[i], C[i], mode)


def elementwise(op, A, B, C, out, flags, odd, P, W, mode, overflow, key, srk, tin_before, bad):
    """``op`` on flat float64 operands: the twin of :func:`.cpu.elementwise`, same arguments.

    float64 results in ``out``, IEEE flags (uint8) in ``flags``, with ``odd.size > 0`` the
    rounded-to-odd exact results in ``odd``. ``bad`` (int64, at least one entry, set to -1 by
    the caller) gets ``bad[0] = 0`` when an operand is not a value of the format; such elements
    are not written. (The CPU has one ``bad`` entry per chunk; any entry ``>= 0`` means the
    same thing on both.)
    """
    _elementwise_kernel[blocks(A.size), THREADS](op, A, B, C, out, flags, odd, P, W, mode,
                                                 overflow, np.uint64(key), srk, tin_before, bad)


@cuda.jit
def _matmul_kernel(A, BT, out, i0, T, BUF, prod_kind, PP, acc_kind, PA, PO, order, block,
                 compensated, mode, overflow, key, srk):
    """Output elements ``i0 ..`` (flat, row-major) of :func:`.accumulate.matmul_model`, one per
    thread, with the same counters; ``T`` and ``BUF`` are (threads, K) float64 scratch rows."""
    t = cuda.grid(1)
    M, K = A.shape
    N = BT.shape[0]
    e = i0 + t
    if t >= T.shape[0] or e >= M * N:
        return
    i = e // N
    j = e - i * N
    stride = 5 * K + 4
    base = np.int64(e) * stride
    x = 0.0
    es = np.int64(0)
    if K > 0:
        terms = T[t]
        for k in range(K):
            terms[k] = product(A[i, k], BT[j, k], prod_kind, PP, mode, overflow, key, base + k,
                               srk)
        x, es = model_sum(_local(terms), K, _local(BUF[t]), acc_kind, PA, order, block,
                          compensated, mode, overflow, key, base + K, srk)
    rnd = random_bits(key, base + stride - 1) if mode == SR else np.int64(0)
    out[i, j] = final_round(x, es, PO, mode, overflow, rnd, srk)


#: Output elements per matmul launch (bounds the scratch: 2 * this * K float64).
MATMUL_TILE = 1 << 16


def matmul_model(A, BT, out, prod_kind, PP, acc_kind, PA, PO, order, block, compensated, mode,
                 overflow, key, srk, nchunk=1):
    """The accumulation model's matmul: the twin of :func:`.cpu.matmul_model`, same arguments,
    run over all outputs :data:`MATMUL_TILE` at a time (``nchunk`` is unused: one thread per
    output element)."""
    M, K = A.shape
    N = BT.shape[0]
    total = M * N
    # Two float64 scratch rows of K per output in flight: at most MATMUL_TILE outputs and at
    # most 1 GiB of scratch.
    tile = max(1, min(total, MATMUL_TILE, (1 << 30) // (16 * max(K, 1))))
    T = cuda.device_array((tile, max(K, 1)), np.float64)
    BUF = cuda.device_array((tile, max(K, 1)), np.float64)
    for i0 in range(0, total, tile):
        _matmul_kernel[blocks(tile), THREADS](A, BT, out, i0, T, BUF, prod_kind, PP, acc_kind,
                                              PA, PO, order, block, compensated, mode, overflow,
                                              np.uint64(key), srk)


@cuda.jit
def _tc_kernel(A, B, SA, EA, SB, EB, bad_rows, bad_cols, C, out, G, two_m, F0, carry_rule,
               late_c, c_emin, PO, omode, olimit, L, LP):
    """One output element of :func:`.tensor_core.matmul_tc_serial` per thread (flat index
    over batch, row, column)."""
    e = cuda.grid(1)
    T, M, N = out.shape
    if e >= T * M * N:
        return
    t = e // (M * N)
    r = e - t * (M * N)
    i = r // N
    j = r - i * N
    out[t, i, j] = tensor_core.element(
        _local(A[t, i]), _local(B[t, :, j]), _local(SA[t, i]), _local(EA[t, i]),
        _local(SB[t, :, j]), _local(EB[t, :, j]), C[t, i, j], bad_rows[t, i] | bad_cols[t, j],
        G, two_m, F0, carry_rule, late_c, c_emin, PO, omode, olimit, L, LP)


def tc_matmul(A, B, SA, EA, SB, EB, bad_rows, bad_cols, C, out, *model):
    """The tensor-core model's GEMM: the twin of :func:`.cpu.tc_matmul`, same arguments (device
    arrays), one thread per output element."""
    _tc_kernel[blocks(out.size), THREADS](A, B, SA, EA, SB, EB, bad_rows, bad_cols, C, out,
                                          *model)
