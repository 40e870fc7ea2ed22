"""Kernels that use the GPU's own fp16 / bf16 instructions, and kernels that compare them with
the emulator on the device (``fpsim validate hardware``).

Needs a real GPU: ``numba.cuda.fp16`` intrinsics do not exist under the CUDA simulator.
Imported only by :mod:`fpsim.validate_hw`.

Exhaustive streaming: the operand pair of linear index ``k`` is ``(k >> 16, k & 0xFFFF)`` as
16-bit codes; a chunk of ``n`` indices from ``k0`` runs the hardware op into a uint16 code array,
then a compare kernel recomputes each result with the emulator (``op_round`` on the decoded
operands, round to nearest even, then ``pack_code``) and counts mismatches, keeping the first
few indices. Two NaNs match whatever their payloads (the emulator returns the canonical NaN).
"""

from __future__ import annotations

import numpy as np

from .cuda import THREADS, cuda  # (applies the numpy 2.5 shim, registers mul_rn's overload)
from .arith import OP_ADD, OP_DIV, OP_FMA, OP_MUL, OP_SUB, op_round
from .round import RNE, pack_code, round_bits, unpack_code
from .bitcast import bits_f64, f64_bits

#: Mismatch examples kept per run.
KEEP = 16
HW_OPS = {"add": OP_ADD, "sub": OP_SUB, "mul": OP_MUL, "div": OP_DIV, "fma": OP_FMA}


@cuda.jit
def fp16_op(op, k0, n, c_code, table16, out):
    """Hardware fp16 ``op`` on the pairs ``k0 .. k0+n-1``; fma adds the fixed ``c_code``."""
    t = cuda.grid(1)
    if t >= n:
        return
    k = np.int64(k0) + t
    a = table16[(k >> 16) & 0xFFFF]
    b = table16[k & 0xFFFF]
    if op == OP_ADD:
        r = cuda.fp16.hadd(a, b)
    elif op == OP_SUB:
        r = cuda.fp16.hsub(a, b)
    elif op == OP_MUL:
        r = cuda.fp16.hmul(a, b)
    elif op == OP_DIV:
        r = cuda.fp16.hdiv(a, b)
    else:
        r = cuda.fp16.hfma(a, b, table16[c_code])
    out[t] = r


@cuda.jit
def compare_op(op, k0, n, c_code, hw_codes, P, W, mismatches, first):
    """Count ``hw_codes[t] != emulated code`` over the chunk; store the first KEEP indices."""
    t = cuda.grid(1)
    if t >= n:
        return
    k = np.int64(k0) + t
    a = bits_f64(unpack_code((k >> 16) & 0xFFFF, P))
    b = bits_f64(unpack_code(k & 0xFFFF, P))
    c = bits_f64(unpack_code(np.int64(c_code), P))
    x, fl = op_round(op, a, b, c, P, W, RNE, 0, np.int64(0), 1, 0)
    hb = f64_bits(x)
    r, s, ev = round_bits(hb & 0x7FFFFFFFFFFFFFFF, (hb >> 63) & 1, P, RNE, 0, np.int64(0), 1)
    want = pack_code(r, s, P)
    got = np.int64(hw_codes[t])
    nan_w = (want & 0x7C00) == 0x7C00 and (want & 0x3FF) != 0
    nan_g = (got & 0x7C00) == 0x7C00 and (got & 0x3FF) != 0
    if want != got and not (nan_w and nan_g):
        i = cuda.atomic.add(mismatches, 0, 1)
        if i < KEEP:
            first[i] = k


@cuda.jit
def iota32(k0, n, out):
    """``out[t] = k0 + t`` as uint32 (a chunk of float32 bit patterns)."""
    t = cuda.grid(1)
    if t < n:
        out[t] = np.uint32(np.int64(k0) + t)


@cuda.jit
def fp16_convert(x32, n, out):
    """Hardware float32 -> float16 conversion (``cvt.rn.f16.f32``) of ``x32[:n]``."""
    t = cuda.grid(1)
    if t < n:
        out[t] = np.float16(x32[t])


@cuda.jit
def compare_convert(k0, n, hw_codes, P, mismatches, first):
    """Emulated float32 -> float16 rounding (RNE, ieee overflow) against ``hw_codes``."""
    t = cuda.grid(1)
    if t >= n:
        return
    u = np.int64(k0) + t
    r, s, ev = round_bits(u & 0x7FFFFFFF, (u >> 31) & 1, P, RNE, 0, np.int64(0), 1)
    want = pack_code(r, s, P)
    got = np.int64(hw_codes[t])
    nan_w = (want & 0x7C00) == 0x7C00 and (want & 0x3FF) != 0
    nan_g = (got & 0x7C00) == 0x7C00 and (got & 0x3FF) != 0
    if want != got and not (nan_w and nan_g):
        i = cuda.atomic.add(mismatches, 0, 1)
        if i < KEEP:
            first[i] = u


def blocks(n: int) -> int:
    return max(1, -(-n // THREADS))
