"""CUDA array drivers: ``@cuda.jit`` twins of :mod:`.cpu`, same names, same scalar cores.

Imported only by :mod:`fpsim.backend` when a device array arrives (or by tests), never by
``import fpsim``. One thread rounds one element; event counts and the histogram row (the layout of
:mod:`.histogram`, one copy of the exponent bins) are accumulated with atomics.

The scalar core is integer-only, so there is no float contraction hazard (``a*b+c`` -> FMA) here.
"""

from __future__ import annotations

import numpy as np

# numba-cuda 0.30.4 still calls np.row_stack, which numpy 2.5 removed; np.vstack is the same
# function (numpy deprecated the alias in 2.0), so restore the name before importing numba.cuda.
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

from numba import cuda  # noqa: E402

from .bits import bit_length  # noqa: E402
from .histogram import NAN_BIN, SUB0  # noqa: E402
from .rng import random_bits  # noqa: E402
from .round import EV_FIELD, SR, carrier_bits, round_bits  # noqa: E402

#: Threads per block of the elementwise drivers.
THREADS = 256


@cuda.jit
def quantize(xb, outb, P, mode, overflow, key, srk, counts, hist):
    """Round ``xb`` (carrier bits) into the format; write carrier bits to ``outb``.

    ``counts`` (1, 5) and ``hist`` (1, STATS_LEN) or (1, 0): zeroed int64 arrays on the device.
    """
    i = cuda.grid(1)
    if i >= xb.size:
        return
    u = np.int64(xb[i])
    a = u & ((np.int64(1) << P.csign) - 1)
    sign = (u >> P.csign) & 1
    rnd = random_bits(key, i) if mode == SR else np.int64(0)
    r, sign_out, ev = round_bits(a, sign, P, mode, overflow, rnd, srk)
    outb[i] = carrier_bits(r, sign_out, P)
    if hist.shape[1] != 0:
        for j in range(5):
            if (ev >> (EV_FIELD * j)) & 1:
                cuda.atomic.add(counts, (0, j), 1)
        cuda.atomic.add(hist, (0, a >> P.cm), 1)
        if (a != 0) & (a < (np.int64(1) << P.cm)):
            cuda.atomic.add(hist, (0, SUB0 + bit_length(a)), 1)
        if a > P.cinf:
            cuda.atomic.add(hist, (0, NAN_BIN), 1)


def launch_quantize(xb, outb, P, mode, overflow, key, srk, counts, hist):
    """Launch :func:`quantize` over all of ``xb`` (device arrays or host arrays under the simulator)."""
    n = xb.size
    blocks = max(1, -(-n // THREADS))
    quantize[blocks, THREADS](xb, outb, P, mode, overflow, np.uint64(key), srk, counts, hist)
