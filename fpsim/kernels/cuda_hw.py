"""Kernels that use the GPU's own fp16 / bf16 instructions, and kernels that compare them with
the emulator on the device (``fpsim validate hardware``).

Needs a real GPU: ``numba.cuda.fp16`` intrinsics do not exist under the CUDA simulator.
Imported only by :mod:`fpsim.validate.hardware`.

Exhaustive streaming: the operand pair of linear index ``k`` is ``(k >> 16, k & 0xFFFF)`` as
16-bit codes; a chunk of ``n`` indices from ``k0`` runs the hardware op into a uint16 code array,
then a compare kernel recomputes each result with the emulator (``op_round`` on the decoded
operands, round to nearest even, then ``pack_code``) and counts mismatches, keeping the first
few indices. Two NaNs match whatever their payloads (the emulator returns the canonical NaN).
"""

from __future__ import annotations

import numpy as np

# blocks and THREADS are the drivers' own launch geometry (one definition for every kernel).
from fpsim.kernels.cuda import THREADS, blocks, cuda, f64_bits, to_f64

try:  # numba-cuda's bfloat16 intrinsics (cuda_bf16.h); absent from older numba-cuda and the
    from numba.cuda import bf16  # simulator: bf16 hardware checks then report why
    BF16_ERROR = None
except Exception as _e:  # noqa: BLE001
    bf16 = None
    BF16_ERROR = f"{type(_e).__name__}: {_e}"
from fpsim.kernels.arith import OP_ADD, OP_DIV, OP_FMA, OP_MUL, OP_SUB, op_round
from fpsim.kernels.round import RNE, pack_code, round_bits, unpack_code

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
def bf16_op(op, k0, n, c_code, out):
    """Hardware bfloat16 ``op`` (``cuda_bf16.h`` intrinsics) on the pairs ``k0 .. k0+n-1``,
    codes written to the uint16 array ``out``."""
    t = cuda.grid(1)
    if t >= n:
        return
    k = np.int64(k0) + t
    a = bf16.uint16_as_bfloat16(np.uint16((k >> 16) & 0xFFFF))
    b = bf16.uint16_as_bfloat16(np.uint16(k & 0xFFFF))
    if op == OP_ADD:
        r = bf16.hadd(a, b)
    elif op == OP_SUB:
        r = bf16.hsub(a, b)
    elif op == OP_MUL:
        r = bf16.hmul(a, b)
    elif op == OP_DIV:
        r = bf16.hdiv(a, b)
    else:
        r = bf16.hfma(a, b, bf16.uint16_as_bfloat16(np.uint16(c_code)))
    out[t] = bf16.bfloat16_as_uint16(r)


@cuda.jit
def bf16_convert(x32, n, out):
    """Hardware float32 -> bfloat16 (round to nearest even) of ``x32[:n]`` into uint16 codes."""
    t = cuda.grid(1)
    if t < n:
        out[t] = bf16.bfloat16_as_uint16(bf16.float32_to_bfloat16_rn(x32[t]))


@cuda.jit(device=True, inline=True)
def _is_nan_code(c, exp_mask, man_mask):
    return (c & exp_mask) == exp_mask and (c & man_mask) != 0


@cuda.jit(device=True, inline=True)
def _record(want, got, exp_mask, man_mask, mismatches, first, index):
    """Count a mismatch of codes (two NaNs match) and keep the first KEEP indices."""
    if want != got and not (_is_nan_code(want, exp_mask, man_mask)
                            and _is_nan_code(got, exp_mask, man_mask)):
        i = cuda.atomic.add(mismatches, 0, 1)
        if i < KEEP:
            first[i] = index


@cuda.jit
def compare_op(op, k0, n, c_code, hw_codes, P, W, exp_mask, man_mask, mismatches, first):
    """Count ``hw_codes[t] != emulated code`` over the chunk; store the first KEEP indices."""
    t = cuda.grid(1)
    if t >= n:
        return
    k = np.int64(k0) + t
    a = to_f64(unpack_code((k >> 16) & 0xFFFF, P))
    b = to_f64(unpack_code(k & 0xFFFF, P))
    c = to_f64(unpack_code(np.int64(c_code), P))
    x, fl = op_round(op, a, b, c, P, W, RNE, 0, np.int64(0), 1, 0)
    hb = f64_bits(x)
    r, s, ev = round_bits(hb & 0x7FFFFFFFFFFFFFFF, (hb >> 63) & 1, P, RNE, 0, np.int64(0), 1)
    _record(pack_code(r, s, P), np.int64(hw_codes[t]), exp_mask, man_mask, mismatches, first, k)


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
def compare_convert(k0, n, hw_codes, P, exp_mask, man_mask, mismatches, first):
    """Emulated float32 -> format rounding (RNE, ieee overflow) against ``hw_codes``."""
    t = cuda.grid(1)
    if t >= n:
        return
    u = np.int64(k0) + t
    r, s, ev = round_bits(u & 0x7FFFFFFF, (u >> 31) & 1, P, RNE, 0, np.int64(0), 1)  # noqa
    _record(pack_code(r, s, P), np.int64(hw_codes[t]), exp_mask, man_mask, mismatches, first, u)
