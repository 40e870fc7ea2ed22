"""Block-scaled matrix products: the GEMM of MX and NVFP4 hardware, as a matmul model.

Both operands are quantized with a block format along the reduction axis (rows of ``a``,
columns of ``b``: blocks of ``k`` consecutive products share a pair of scales). For each block
``j`` the dot product of the element values is computed in float64, multiplied by the two
blocks' decode scales and added to a float32 accumulator, block after block in order of the
reduction index (MX hardware accumulates block results in FP32; OCP MX v1.0 section 6.2 leaves
the internal precision of the block dot product to the implementation). The block dot product
is exact in float64 whenever its products span fewer than 2^(53 - 2p - 5) binades for
``p``-bit element significands — always for FP4, FP6, E4M3 and INT8 elements; E5M2 blocks
whose products span more are rounded once to float64 (so are NVFP4's products with its two
float32 block scales). Each accumulation step is one float32 rounding (RNE) of the exact
``acc + scaled block product``: the float64 sum is rounded to odd (its error from TwoSum
decides), which makes its rounding to float32 the correct rounding of the exact sum.

The element GEMMs run through BLAS on float64 values whose products and block sums are exact,
so their order (and BLAS's thread count) does not change a bit.
"""

from __future__ import annotations

import numpy as np

from fpsim.numerics import scaled


def block_matmul(a, b, fmt="mxfp8_e4m3", fmt_b=None, rounding: str = "rne", seed: int = 0):
    """``a @ b`` (2-D float32 arrays) under the block-scaled GEMM model of ``fmt``
    (``fmt_b`` for ``b``; default the same): float32 result.

    Raises:
        ValueError: shapes that do not multiply, or a format without 1 x k blocks.
    """
    from fpsim.numerics.modes import RoundMode
    from fpsim.kernels.rng import stream_key
    sa = scaled.scaled_format(fmt)
    sb = scaled.scaled_format(fmt_b if fmt_b is not None else fmt)
    if sa is None or sb is None:
        raise ValueError(f"block_matmul needs scaled block formats, got {fmt!r}, {fmt_b!r}")
    for sf in (sa, sb):
        if sf.tile is None or sf.tile[0] != 1:
            raise ValueError(f"{sf.name}: a block-scaled GEMM needs 1 x k blocks along the "
                             "reduction axis")
    a = np.ascontiguousarray(a, np.float32)
    b = np.asarray(b, np.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"block_matmul multiplies (M, K) by (K, N), got {a.shape} and "
                         f"{b.shape}")
    if sa.tile[1] != sb.tile[1]:
        raise ValueError(f"operand block sizes differ ({sa.tile[1]} vs {sb.tile[1]})")
    mode = int(RoundMode.parse(rounding))
    qa, xa = scaled.block_parts(a, sa, mode, stream_key(seed, 1))
    qb, xb = scaled.block_parts(np.ascontiguousarray(b.T), sb, mode, stream_key(seed, 2))
    k = sa.tile[1]
    K = a.shape[1]
    acc = np.zeros((a.shape[0], b.shape[1]), np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        for j in range(-(-K // k)):
            blk = slice(j * k, min(K, (j + 1) * k))
            part = qa[:, blk] @ qb[:, blk].T
            part *= xa[:, j][:, None]
            part *= xb[:, j][None, :]
            acc = add_rn32(acc, part)
    return acc


def add_rn32(acc: np.ndarray, part: np.ndarray) -> np.ndarray:
    """float32 ``acc + part`` rounded once (RNE) from the exact sum, for float32 ``acc`` and
    float64 ``part``: the float64 sum ``s`` and its error ``e`` (TwoSum, exact) give ``s``
    rounded to odd (moved one float64 ulp toward ``e`` when inexact and even), and a value
    rounded to odd with 29 spare bits rounds to float32 as the exact value would."""
    a = acc.astype(np.float64)
    s = a + part
    bb = s - a
    e = (a - (s - bb)) + (part - bb)
    even = (s.view(np.int64) & 1) == 0
    fix = (e != 0) & even & np.isfinite(s)
    if fix.any():
        s[fix] = np.nextafter(s[fix], np.where(e[fix] > 0, np.inf, -np.inf))
    return s.astype(np.float32)
