"""The side channel from cast sites to whoever listens: cast sites :func:`emit` the
:class:`~fpsim.numerics.stats.Stats` of each rounding, labelled (site, role, direction); the
active :class:`Recorder` objects sum them per step into a :class:`StepSummary`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fpsim.numerics.stats import Stats

#: The integer fields of Stats (every field but the histogram array).
_COUNT_FIELDS = tuple(f.name for f in dataclasses.fields(Stats) if f.name != "exp_hist")

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
        chosen = [s for (_, role, _), s in self.sites.items() if role in roles]
        if not chosen:
            return Stats()
        # Field by field, one histogram accumulated in place: the loop sums the step's
        # gradient sites twice a step, and Stats + Stats allocates a histogram per term.
        exp_hist = chosen[0].exp_hist.copy()
        for s in chosen[1:]:
            np.add(exp_hist, s.exp_hist, out=exp_hist)
        return Stats(exp_hist=exp_hist, **{f: sum(getattr(s, f) for s in chosen)
                                           for f in _COUNT_FIELDS})

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
