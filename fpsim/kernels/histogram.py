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

K_MIN = -1074
K_MAX = 1023
N_BINADES = K_MAX - K_MIN + 1

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

    ``P`` is the carrier's :class:`~fpsim.format.KernelParams` (it says how exponent fields map
    to binades).
    """
    h = rows.sum(axis=0)
    fields = h[:SUB0].reshape(4, EXP_BINS).sum(axis=0)
    sub = h[SUB0:NAN_BIN]
    nans = int(h[NAN_BIN])
    exp_hist = np.zeros(N_BINADES, np.int64)
    # Normal carrier binades: field be holds 2^(be - cbias) <= |x| < 2^(be - cbias + 1).
    be = np.arange(1, P.cexp_max)
    exp_hist[be - P.cbias - K_MIN] += fields[1:P.cexp_max]
    # Carrier subnormals with an n-bit fraction: 2^(1 - cbias - cm + n - 1) <= |x|.
    n = np.arange(1, P.cm + 1)
    exp_hist[(1 - P.cbias - P.cm) + n - 1 - K_MIN] += sub[1:P.cm + 1]
    zeros = int(fields[0] - sub.sum())
    infs = int(fields[P.cexp_max] - nans)
    return exp_hist, zeros, infs, nans
