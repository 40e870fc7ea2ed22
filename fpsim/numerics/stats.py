"""Event statistics of roundings (:class:`Stats`).

A kernel ORs :class:`~fpsim.numerics.modes.Event` bits per element and counts them in the same
pass; this module turns those counts into a :class:`Stats` value that can be added across calls.
"""

from __future__ import annotations

import dataclasses

import numpy as np

#: Binades of the input histogram: ``k = floor(log2|x|)`` for every float64 binade, from the
#: smallest subnormal 2^-1074 to 2^1023, whatever the carrier and format (so histograms add).
K_MIN = -1074
K_MAX = 1023
N_BINADES = K_MAX - K_MIN + 1


@dataclasses.dataclass(eq=False)
class Stats:
    """Event counts and the input exponent histogram of one or more roundings.

    Counts are numbers of elements (see :class:`~fpsim.numerics.modes.Event` for the exact definitions).
    """

    #: Number of elements rounded.
    total: int = 0
    #: Non-zero, non-NaN inputs that became ±0.
    underflow: int = 0
    #: Results that are non-zero subnormal numbers.
    subnormal: int = 0
    #: Inputs whose magnitude, rounded with an unbounded exponent, exceeds max (the result is
    #: Inf, NaN or ±max), and Inf inputs that the format or policy does not keep
    #: (see :class:`~fpsim.numerics.modes.Event`; 65510 into float16 rounds to 65504: no overflow).
    overflow: int = 0
    #: NaN results from non-NaN inputs.
    nan: int = 0
    #: Results that differ from their input.
    inexact: int = 0
    #: Input histogram: ``exp_hist[j]`` counts inputs with ``floor(log2|x|) == exp_bins[j]``
    #: (binades 2^-1074 .. 2^1023), then zeros, infinities and NaNs in :attr:`hist_zero` etc.
    exp_hist: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(N_BINADES, np.int64))
    #: Number of ±0 inputs.
    hist_zero: int = 0
    #: Number of ±Inf inputs.
    hist_inf: int = 0
    #: Number of NaN inputs.
    hist_nan: int = 0

    #: Binade exponents ``k`` of the bins of :attr:`exp_hist` (``K_MIN .. K_MAX``).
    exp_bins = np.arange(K_MIN, K_MAX + 1)

    @property
    def exp_edges(self) -> np.ndarray:
        """Bin edges as values: bin ``j`` holds ``exp_edges[j] <= |x| < exp_edges[j+1]``."""
        with np.errstate(over="ignore"):
            return np.ldexp(1.0, np.arange(K_MIN, K_MAX + 2))

    @classmethod
    def from_kernel(cls, total: int, counts: np.ndarray, rows: np.ndarray, P) -> "Stats":
        """Build from a driver's per-chunk ``counts`` (nchunk, 5) and histogram ``rows``
        (nchunk, STATS_LEN; see :mod:`fpsim.kernels.histogram`) for carrier params ``P``."""
        # Imported here: the kernels (and Numba) load on first use, not with `import fpsim`.
        from fpsim.kernels.histogram import fold

        c = counts.sum(axis=0)
        exp_hist, zeros, infs, nans = fold(rows, P)
        return cls(
            total=int(total), underflow=int(c[0]), subnormal=int(c[1]), overflow=int(c[2]),
            nan=int(c[3]), inexact=int(c[4]), exp_hist=exp_hist,
            hist_zero=zeros, hist_inf=infs, hist_nan=nans,
        )

    def __add__(self, other: "Stats") -> "Stats":
        if not isinstance(other, Stats):
            return NotImplemented
        return Stats(self.total + other.total, self.underflow + other.underflow,
                     self.subnormal + other.subnormal, self.overflow + other.overflow,
                     self.nan + other.nan, self.inexact + other.inexact,
                     self.exp_hist + other.exp_hist, self.hist_zero + other.hist_zero,
                     self.hist_inf + other.hist_inf, self.hist_nan + other.hist_nan)

    def __radd__(self, other):
        if other == 0:  # sum([...]) starts from 0
            return self
        return NotImplemented

    def __eq__(self, other) -> bool:
        if not isinstance(other, Stats):
            return NotImplemented
        return all(np.array_equal(getattr(self, f.name), getattr(other, f.name))
                   for f in dataclasses.fields(self))

    def rate(self, event: str) -> float:
        """Fraction of elements with ``event`` (``"underflow"``, ``"overflow"``, ...); 0 if empty."""
        return getattr(self, event) / self.total if self.total else 0.0

    def binades(self) -> tuple[np.ndarray, np.ndarray]:
        """``(k, counts)`` over the non-empty span of the histogram (both empty if none)."""
        nz = np.flatnonzero(self.exp_hist)
        if nz.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        span = slice(nz[0], nz[-1] + 1)
        return self.exp_bins[span], self.exp_hist[span]

    def __repr__(self) -> str:
        return (f"Stats(total={self.total}, underflow={self.underflow}, subnormal={self.subnormal}, "
                f"overflow={self.overflow}, nan={self.nan}, inexact={self.inexact}, "
                f"zeros={self.hist_zero}, infs={self.hist_inf}, nans={self.hist_nan})")
