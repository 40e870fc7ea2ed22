"""Small helpers shared by the scalar kernels: integer bit length, the sign bit of a float, and
the float-product shim.

The scalar kernels test floats with ``math.isnan`` / ``math.isinf`` / ``math.isfinite`` /
``math.copysign`` / ``math.sqrt`` and :func:`signbit`, not NumPy's ufuncs: numba-cuda's table of
NumPy ufuncs has no ``isinf``, ``isfinite``, ``signbit``, ``copysign`` or ``sqrt`` (a CUDA kernel
using them fails to compile, measured with numba-cuda 0.30.4), while the ``math`` functions
compile on every target to the same instructions.

``mul_rn(a, b)`` is ``a * b`` rounded to nearest. On the CPU it is the plain product (Numba does
not contract ``a*b + c`` into a fused multiply-add there). A CUDA kernel would: numba-cuda
contracts a product feeding an addition into ``fma.rn.f64``, which breaks the error-free
transformations of :mod:`.arith` (TwoSum after an exact product, Dekker's TwoProduct).
:mod:`.cuda` therefore registers a CUDA overload that calls libdevice's ``__nv_dmul_rn``,
which is never contracted. Every product whose result is later added goes through it.
"""

from __future__ import annotations

import math

from numba import njit
from numba.core.extending import overload


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


@njit(cache=True)
def signbit(x):
    """Whether the float64 ``x`` has its sign bit set (``-0.0`` and negative NaNs included), as
    ``np.signbit``: ``copysign`` copies the sign bit, whatever ``x`` is."""
    return math.copysign(1.0, x) < 0.0


def mul_rn(a, b):
    """``a * b`` rounded to nearest, never fused with a following addition (see the module
    docstring). Plain Python (the CUDA simulator) multiplies."""
    return a * b


@overload(mul_rn, target="generic")
def _mul_rn_generic(a, b):
    return lambda a, b: a * b
