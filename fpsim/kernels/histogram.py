"""Layout of the input exponent histogram that drivers fill, and its folding into binades.

Drivers count, per chunk, the carrier exponent field of every input in 4 interleaved copies of
``EXP_BINS`` bins (four copies break the store-to-load dependency when neighbouring elements share
a bin), carrier-subnormal inputs by the bit length of their fraction in ``SUB_BINS`` bins, and
NaN inputs in one bin. :func:`fold` turns that row into the public histogram: one bin per binade
``k = floor(log2|x|)`` for every float64 binade ``k = K_MIN .. K_MAX``, plus zero/Inf/NaN counts,
so histograms of any carrier and any format can be added.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# The public binade range lives with Stats, so that importing fpsim (and Stats) needs no Numba;
# re-exported here for the drivers.
from fpsim.numerics.stats import K_MAX, K_MIN, N_BINADES  # noqa: F401

#: Exponent-field bins per interleaved copy (enough for float64's 11-bit field).
EXP_BINS = 2048
#: Bins for carrier-subnormal inputs, indexed by the bit length of their fraction (1..52).
SUB_BINS = 64
#: Offsets within a chunk's statistics row.
SUB0 = 4 * EXP_BINS
NAN_BIN = SUB0 + SUB_BINS
#: Length of one chunk's statistics row.
STATS_LEN = NAN_BIN + 1


def fold(rows: np.ndarray, P) -> tuple[np.ndarray, int, int, int]:
    """Fold driver rows (nchunk, STATS_LEN) into ``(exp_hist, zeros, infs, nans)``.

    ``P`` is the carrier's :class:`~fpsim.numerics.format.KernelParams` (it says how exponent fields map
    to binades).
    """
    exp_hist = np.zeros(N_BINADES, np.int64)
    extra = np.zeros(3, np.int64)
    _fold(rows, int(P.carrier_bias), int(P.carrier_exp_max), int(P.carrier_man_bits), K_MIN,
          exp_hist, extra)
    return exp_hist, int(extra[0]), int(extra[1]), int(extra[2])


@njit(cache=True)
def _fold(rows, cbias, cexp_max, cm, k_min, exp_hist, extra):
    """Jitted body of :func:`fold` (the numpy version cost 14 us a call, a training step's
    casts make dozens of calls); ``extra`` receives (zeros, infs, nans). ``k_min`` (the binade
    of ``exp_hist[0]``) is an argument, not a global: it is defined outside the kernel sources
    whose hash keys Numba's cache."""
    nans = 0
    field0 = 0
    field_max = 0
    sub_total = 0
    for c in range(rows.shape[0]):
        row = rows[c]
        nans += row[NAN_BIN]
        for q in range(4):
            base = q * EXP_BINS
            field0 += row[base]
            field_max += row[base + cexp_max]
            # Normal carrier binades: field be holds 2^(be - cbias) <= |x| < 2^(be - cbias + 1).
            for be in range(1, cexp_max):
                exp_hist[be - cbias - k_min] += row[base + be]
        # Carrier subnormals with an n-bit fraction: 2^(1 - cbias - cm + n - 1) <= |x|.
        for n in range(1, cm + 1):
            exp_hist[(1 - cbias - cm) + n - 1 - k_min] += row[SUB0 + n]
        for n in range(SUB_BINS):
            sub_total += row[SUB0 + n]
    extra[0] = field0 - sub_total
    extra[1] = field_max - nans
    extra[2] = nans
