"""Reinterpret a float64 as its IEEE bit pattern (int64) and back, inside jitted code.

Numba has no scalar ``view``; an LLVM ``bitcast`` costs nothing (same register) and, unlike a
store/load through a scratch array, keeps loops vectorizable and works unchanged on CUDA.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic


@intrinsic
def f64_bits(typingctx, x):
    """int64 bit pattern of the float64 ``x``."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def bits_f64(typingctx, b):
    """float64 whose bit pattern is the int64 ``b``."""
    if b != types.int64:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen
