"""Event statistics of roundings (:class:`Stats`).

A kernel ORs :class:`~fpsim.modes.Event` bits per element and counts them in the same pass; this
module turns those counts into a :class:`Stats` value that can be added across calls.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .kernels.histogram import K_MAX, K_MIN, N_BINADES, fold


@dataclasses.dataclass(eq=False)
class Stats:
    """Event counts and the input exponent histogram of one or more roundings.

    Counts are numbers of elements (see :class:`~fpsim.modes.Event` for the exact definitions).
    """

    #: Number of elements rounded.
    total: int = 0
    #: Non-zero, non-NaN inputs that became ±0.
    underflow: int = 0
    #: Results that are non-zero subnormal numbers.
    subnormal: int = 0
    #: Inputs whose magnitude, rounded with an unbounded exponent, exceeds max (the result is
    #: Inf, NaN or ±max), and Inf inputs that the format or policy does not keep
    #: (see :class:`~fpsim.modes.Event`; 65510 into float16 rounds to 65504: no overflow).
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


# -- recorders: the side channel from cast sites to whoever listens ------------------------------

#: Roles of cast sites (what a rounded value is).
ROLES = ("input", "activation", "activation-grad", "weight", "weight-grad", "optimizer-state")
#: Roles whose values are gradients (their underflow is gradient underflow).
GRAD_ROLES = ("activation-grad", "weight-grad")

_active: list["Recorder"] = []


def wants_stats() -> bool:
    """True when some recorder is listening (cast sites then ask the kernel for Stats)."""
    return bool(_active)


def emit(site: str, role: str, direction: str, stats: Stats, scale: float | None = None) -> None:
    """Hand one rounding's Stats to every active recorder; does nothing when none is active.

    Args:
        site: the cast site's name (a module path such as ``"layers.0"``, ``"layers.0.weight"``).
        role: one of :data:`ROLES`.
        direction: ``"forward"`` or ``"backward"``.
        scale: the loss scale the rounded values carry (gradients under loss scaling), if known;
            the histogram of the unscaled values is the recorded one shifted by -log2(scale).
    """
    for r in _active:
        r.add(site, role, direction, stats, scale)


class paused:
    """Context manager under which no recorder listens (evaluation passes, shadow passes)."""

    def __enter__(self):
        self._saved = list(_active)
        _active.clear()

    def __exit__(self, *exc):
        _active.extend(self._saved)


class recording:
    """Context manager that makes ``recorder`` active: ``with recording(rec): ...``."""

    def __init__(self, recorder: "Recorder"):
        self.recorder = recorder

    def __enter__(self):
        _active.append(self.recorder)
        return self.recorder

    def __exit__(self, *exc):
        _active.remove(self.recorder)


@dataclasses.dataclass
class StepSummary:
    """Everything the cast sites reported during one training step.

    Attributes:
        step: the step number.
        sites: ``(site, role, direction) -> Stats`` summed over the step's roundings.
    """

    step: int
    sites: dict
    #: ``(site, role, direction) -> scale`` of the values rounded there (only where known).
    scales: dict = dataclasses.field(default_factory=dict)

    def rows(self):
        """``(site, role, direction, Stats)`` in a stable order (sorted by key)."""
        return [(*k, self.sites[k]) for k in sorted(self.sites)]

    def scale(self, site: str, role: str, direction: str) -> float | None:
        """The scale recorded with a site's values (None if unknown)."""
        return self.scales.get((site, role, direction))

    def total(self, roles=GRAD_ROLES) -> Stats:
        """Sum of the Stats of every site with one of ``roles``."""
        return sum((s for (_, role, _), s in self.sites.items() if role in roles), Stats())

    def grad_underflow_rate(self) -> float:
        """Fraction of non-zero finite gradient values (both gradient roles) flushed to zero."""
        t = self.total()
        live = t.total - t.hist_zero - t.hist_inf - t.hist_nan
        return t.underflow / live if live else 0.0

    def nonfinite(self, roles=GRAD_ROLES) -> int:
        """Number of gradient values that are Inf or NaN after rounding (overflow or NaN
        produced, or non-finite inputs)."""
        t = self.total(roles)
        return t.overflow + t.nan + t.hist_inf + t.hist_nan


class Recorder:
    """Collects the Stats of each cast site per step.

    Use: ``rec = Recorder(); with recording(rec): ... rec.end_step()`` — every ``emit`` between
    two :meth:`end_step` calls belongs to step ``rec.step``.

    Args:
        keep: keep every :class:`StepSummary` in :attr:`history` (else only the last).
    """

    def __init__(self, keep: bool = True):
        self.step = 0
        self.keep = keep
        self.history: list[StepSummary] = []
        self._current: dict = {}
        self._scales: dict = {}

    def add(self, site, role, direction, stats, scale=None):
        key = (site, role, direction)
        old = self._current.get(key)
        self._current[key] = stats if old is None else old + stats
        if scale is not None:
            self._scales[key] = scale

    def peek(self) -> StepSummary:
        """The current step's summary so far, without closing the step."""
        return StepSummary(self.step, dict(self._current), dict(self._scales))

    def end_step(self) -> StepSummary:
        """Close the current step: returns its summary and starts step ``step + 1``."""
        summary = StepSummary(self.step, self._current, self._scales)
        if self.keep:
            self.history.append(summary)
        self._current, self._scales = {}, {}
        self.step += 1
        return summary
