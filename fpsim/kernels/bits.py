"""Small integer helpers shared by the scalar kernels (no float arithmetic here)."""

from __future__ import annotations

from numba import njit


@njit(cache=True)
def bit_length(x):
    """Number of significant bits of a non-negative int64 (0 for 0), by binary search.

    Six halving steps cover 64 bits; this avoids a count-leading-zeros intrinsic, which would
    need a separate implementation per target (CPU, CUDA, CUDA simulator).
    """
    n = 0
    for s in (32, 16, 8, 4, 2, 1):
        if x >> s:
            x >>= s
            n += s
    return n + (1 if x else 0)

