"""One jitted call that rounds several tensors (segments of one buffer) and folds each one's
statistics: the hot path of the training loop's cast sites.

A plain :func:`fpsim.quantize` call pays, besides the rounding, a fixed cost that a training
step pays dozens of times: Numba types the 30-field :class:`~fpsim.numerics.format.KernelParams`
tuple on every call (about 10 us), the statistics rows are allocated and zeroed, and the
histogram is folded in a second jitted call. Here the format comes in as an int64 array (typed
at C speed) and is turned back into ``KernelParams`` inside the kernel; the rounding is the
quantize drivers' own (:data:`fpsim.kernels.cpu.QUANTIZE_SERIAL` / :data:`~fpsim.kernels.cpu.QUANTIZE`,
called from jitted code), so values and Stats are those of the plain path by construction; the
histogram rows are a scratch buffer the caller keeps, folded and cleared in the same call.

A segment is a slice of ``xb`` rounded with its own random stream (its elements indexed from
0, as if it were quantized alone) in its own number of chunks (1: the serial driver), with its
own event counts and folded histogram; see :func:`_segments`.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.np.unsafe.ndarray import to_fixed_tuple

from fpsim.kernels import cpu as _cpu
from fpsim.kernels.histogram import EXP_BINS, K_MIN, STATS_LEN, SUB0, _fold
from fpsim.numerics.format import KernelParams

#: Number of fields of KernelParams (the length of a format's int64 parameter vector).
N_PARAMS = len(KernelParams._fields)


@njit(cache=True, inline="always")
def _segments(serial, parallel, xb, ob, seg, pv, overflow, srk, counts, rows, exp_hist):
    """Round every segment of ``xb`` into ``ob`` (see the module docstring).

    ``serial`` / ``parallel``: the quantize drivers of one rounding mode. ``seg`` (nseg, 4):
    start, end, chunk count and stream key (the uint64 bits as int64) of each segment.
    ``rows``: zeroed scratch statistics rows (at least the largest chunk count of them, or width
    0: no statistics), zeroed again on return. ``counts`` (nseg, 8): the five event counts, then
    zeros, infinities and NaNs among the inputs; ``exp_hist`` (nseg, N_BINADES): the binade
    histograms. Both zeroed by the caller.
    """
    P = KernelParams(*to_fixed_tuple(pv, N_PARAMS))
    want_stats = rows.shape[1] > 0
    chunk_counts = np.zeros((max(rows.shape[0], 1), 5), np.int64)
    for s in range(seg.shape[0]):
        lo, hi, k, key = seg[s, 0], seg[s, 1], seg[s, 2], np.uint64(seg[s, 3])
        if k == 1:
            serial(xb[lo:hi], ob[lo:hi], P, overflow, key, srk, chunk_counts[:1], rows[:1])
        else:
            parallel(xb[lo:hi], ob[lo:hi], P, overflow, key, srk, chunk_counts[:k], rows[:k])
        if want_stats:
            for c in range(k):
                for e in range(5):
                    counts[s, e] += chunk_counts[c, e]
                    chunk_counts[c, e] = 0
            _fold(rows[:k], P.carrier_bias, P.carrier_exp_max, P.carrier_man_bits, K_MIN,
                  exp_hist[s], counts[s, 5:])
            _clear(rows[:k], P.carrier_exp_max)


@njit(cache=True, inline="always")
def _clear(rows, exp_max):
    """Zero what the drivers write in statistics rows: the four copies' exponent fields up to
    the carrier's largest (a float32 carrier's 256 of 2048), the subnormal and NaN bins."""
    for c in range(rows.shape[0]):
        for q in range(4):
            rows[c, q * EXP_BINS:q * EXP_BINS + exp_max + 1] = 0
        rows[c, SUB0:STATS_LEN] = 0


# One driver per rounding mode, as in kernels/cpu.py: a jitted function passed from Python
# would be typed on every call (measured: slower than the whole saving).
@njit(cache=True)
def segments_rne(xb, ob, seg, pv, overflow, srk, counts, rows, exp_hist):
    _segments(_cpu.quantize_serial_rne, _cpu.quantize_rne, xb, ob, seg, pv, overflow,
              srk, counts, rows, exp_hist)


@njit(cache=True)
def segments_rna(xb, ob, seg, pv, overflow, srk, counts, rows, exp_hist):
    _segments(_cpu.quantize_serial_rna, _cpu.quantize_rna, xb, ob, seg, pv, overflow,
              srk, counts, rows, exp_hist)


@njit(cache=True)
def segments_rtz(xb, ob, seg, pv, overflow, srk, counts, rows, exp_hist):
    _segments(_cpu.quantize_serial_rtz, _cpu.quantize_rtz, xb, ob, seg, pv, overflow,
              srk, counts, rows, exp_hist)


@njit(cache=True)
def segments_rup(xb, ob, seg, pv, overflow, srk, counts, rows, exp_hist):
    _segments(_cpu.quantize_serial_rup, _cpu.quantize_rup, xb, ob, seg, pv, overflow,
              srk, counts, rows, exp_hist)


@njit(cache=True)
def segments_rdn(xb, ob, seg, pv, overflow, srk, counts, rows, exp_hist):
    _segments(_cpu.quantize_serial_rdn, _cpu.quantize_rdn, xb, ob, seg, pv, overflow,
              srk, counts, rows, exp_hist)


@njit(cache=True)
def segments_rto(xb, ob, seg, pv, overflow, srk, counts, rows, exp_hist):
    _segments(_cpu.quantize_serial_rto, _cpu.quantize_rto, xb, ob, seg, pv, overflow,
              srk, counts, rows, exp_hist)


@njit(cache=True)
def segments_sr(xb, ob, seg, pv, overflow, srk, counts, rows, exp_hist):
    _segments(_cpu.quantize_serial_sr, _cpu.quantize_sr, xb, ob, seg, pv, overflow,
              srk, counts, rows, exp_hist)


#: The segmented driver of each :class:`~fpsim.numerics.modes.RoundMode`, by its int value
#: (the order of :data:`fpsim.kernels.cpu.QUANTIZE`).
SEGMENTS = (segments_rne, segments_rna, segments_rtz, segments_rup, segments_rdn, segments_rto,
            segments_sr)
