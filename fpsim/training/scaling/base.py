"""The loss-scaler interface (one small strategy object per algorithm)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class StepStats:
    """What a scaler learns about one step.

    Attributes:
        found_inf: some parameter gradient (after unscaling) is Inf or NaN.
        summary: the step's :class:`~fpsim.instrument.StepSummary` (per-site Stats), or None
            without instrumentation.
    """

    found_inf: bool
    summary: object = None


class Scaler:
    """Base class of loss scalers.

    The training loop uses five methods:

    - :meth:`loss_scale` — the scale ``S`` applied to the loss (the seed of backward);
    - :meth:`site_scale` — the local scale of one site during backward (1 for global scalers);
    - :meth:`update` — told whether the step's gradients were finite, returns whether to apply
      the optimizer step, and adapts the state;
    - :meth:`state_dict` / :meth:`load_state_dict` — for checkpoints.

    Global scalers (``per_site = False``) leave every gradient scaled by ``S``; the loop
    multiplies parameter gradients by ``float32(1/S)`` before the finiteness check, as
    PyTorch's GradScaler does. Per-site scalers (``per_site = True``) unscale each parameter
    gradient locally during backward.
    """

    per_site = False
    name = "scaler"

    def loss_scale(self) -> float:
        raise NotImplementedError

    def site_scale(self, site: str, grad, weight, carried_scale: float) -> float:
        """Local scale at ``site`` for the incoming gradient ``grad`` (1 for global scalers)."""
        return 1.0

    def update(self, stats: StepStats) -> bool:
        """Adapt to the step; return True to apply the optimizer step."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        """The scaler's state as a dict of numbers (for checkpoints)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""
        for k, v in state.items():
            setattr(self, k, type(getattr(self, k))(v))

    def describe(self) -> str:
        """A short label for reports."""
        return self.name
