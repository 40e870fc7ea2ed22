"""No loss scaling, and a constant loss scale."""

from __future__ import annotations

from fpsim.training.scaling.base import Scaler, StepStats


class NoScaler(Scaler):
    """No loss scaling: ``S = 1``. A step whose gradients are not finite is skipped (the
    master weights would otherwise become NaN), as every scaler here does.

    Pseudocode::

        loss_scale() = 1
        update(stats) = not stats.found_inf
    """

    name = "none"

    def loss_scale(self) -> float:
        return 1.0

    def update(self, stats: StepStats) -> bool:
        return not stats.found_inf


class StaticScaler(Scaler):
    """A constant loss scale ``S`` (Micikevicius et al. 2018): the loss is multiplied by ``S``,
    every gradient carries the factor, parameter gradients are multiplied by ``float32(1/S)``
    before the update; non-finite steps are skipped and ``S`` never changes.

    Pseudocode::

        loss_scale() = S
        update(stats) = not stats.found_inf
    """

    def __init__(self, scale: float):
        if not 0 < scale < float("inf"):
            raise ValueError(f"a static loss scale must be positive and finite, got {scale}")
        self.scale = float(scale)
        self.name = f"static {self.scale:g}"

    def loss_scale(self) -> float:
        return self.scale

    def update(self, stats: StepStats) -> bool:
        return not stats.found_inf

    def state_dict(self) -> dict:
        return {"scale": self.scale}
