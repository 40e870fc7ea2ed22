"""Dynamic loss scaling: PyTorch GradScaler semantics and the Apex, TensorFlow, hysteresis
(Megatron / DeepSpeed) and Chainer variants (specs/loss-scaling.md section 6)."""

from __future__ import annotations

import math

import numpy as np

from fpsim.training.scaling.base import Scaler, StepStats

_F32_MAX = float(np.finfo(np.float32).max)


class DynamicScaler(Scaler):
    """Grow the loss scale while gradients stay finite, back off on Inf/NaN.

    Default semantics are exactly ``torch.amp.GradScaler``'s (``_amp_update_scale_``)::

        init: scale = 2^16, tracker = 0
        update(found_inf):
            if found_inf:                       # the step is skipped
                scale *= backoff_factor (0.5); tracker = 0
            else:
                tracker += 1
                if tracker == growth_interval (2000):
                    new = float32(scale * growth_factor (2))
                    if isfinite(new): scale = new   # never grow to Inf; no upper cap
                    tracker = 0
            return not found_inf

    There is no floor. Options reproduce the other implementations:

    - ``min_scale`` / ``max_scale``: clamp after backoff / growth (Apex amp: ``max 2^24``,
      ``min_loss_scale``; TensorFlow: floor 1).
    - ``hysteresis = h``: tolerate ``h - 1`` non-finite steps (each still skipped, the growth
      tracker reset) before backing off; a finite step restores the allowance (Apex's
      ``update_scale_hysteresis``, Megatron, DeepSpeed).
    - ``chainer_interval = n``: Chainer's scheme: start at 1, double after every step until the
      first non-finite step, then multiply by 2^(1/n) after every finite step; halve on a
      non-finite one; clamp to [1, 65504].

    Args:
        variant: a preset of :data:`VARIANTS` (``pytorch``, ``apex``, ``tensorflow``,
            ``hysteresis``, ``chainer``); explicit arguments override it.
    """

    def __init__(self, variant: str = "pytorch", **options):
        if variant not in VARIANTS:
            raise ValueError(f"unknown dynamic loss-scaling variant {variant!r}; choose from "
                             f"{', '.join(VARIANTS)}")
        cfg = {**VARIANTS["pytorch"], **VARIANTS[variant], **options}
        unknown = set(cfg) - set(VARIANTS["pytorch"])
        if unknown:
            raise ValueError(f"unknown dynamic scaler option(s) {sorted(unknown)}; allowed: "
                             f"{sorted(VARIANTS['pytorch'])}")
        if not cfg["growth_factor"] > 1 or not 0 < cfg["backoff_factor"] < 1:
            raise ValueError("growth_factor must be > 1 and backoff_factor in (0, 1)")
        if not 0 < cfg["init_scale"] < math.inf:
            raise ValueError(f"init_scale must be positive and finite, got {cfg['init_scale']}")
        if cfg["growth_interval"] < 1 or cfg["hysteresis"] < 1:
            raise ValueError("growth_interval and hysteresis must be >= 1")
        self.variant = variant
        self.growth_factor = float(cfg["growth_factor"])
        self.backoff_factor = float(cfg["backoff_factor"])
        self.growth_interval = int(cfg["growth_interval"])
        self.min_scale = cfg["min_scale"]
        self.max_scale = cfg["max_scale"]
        self.hysteresis = int(cfg["hysteresis"])
        self.chainer_interval = cfg["chainer_interval"]
        self.scale = float(np.float32(cfg["init_scale"]))
        self.tracker = 0
        self.hysteresis_left = self.hysteresis
        self.seen_inf = 0  # Chainer: a non-finite step has been seen
        self.name = "dynamic" if variant == "pytorch" else f"dynamic ({variant})"

    def loss_scale(self) -> float:
        return self.scale

    def _clamp(self, s: float) -> float:
        if self.min_scale is not None:
            s = max(s, float(self.min_scale))
        if self.max_scale is not None:
            s = min(s, float(self.max_scale))
        return s

    def update(self, stats: StepStats) -> bool:
        found_inf = bool(stats.found_inf)
        if self.chainer_interval:
            if found_inf:
                mult = 0.5
                self.seen_inf = 1
            else:
                mult = 2.0 if not self.seen_inf else 2.0 ** (1.0 / self.chainer_interval)
            self.scale = self._clamp(self.scale * mult)
            return not found_inf
        if found_inf:
            self.tracker = 0
            self.hysteresis_left -= 1
            if self.hysteresis_left <= 0:  # stays exhausted until a finite step
                self.scale = self._clamp(float(np.float32(self.scale * self.backoff_factor)))
            return False
        self.hysteresis_left = self.hysteresis
        self.tracker += 1
        if self.tracker == self.growth_interval:
            with np.errstate(over="ignore"):  # growth past float32 max is blocked below
                new = float(np.float32(self.scale * self.growth_factor))
            if math.isfinite(new):
                self.scale = self._clamp(new)
            self.tracker = 0
        return True

    def state_dict(self) -> dict:
        return {"scale": self.scale, "tracker": self.tracker,
                "hysteresis_left": self.hysteresis_left, "seen_inf": self.seen_inf}


#: Named variants (see the class docstring and docs/loss_scaling.md).
VARIANTS = {
    "pytorch": dict(init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                    growth_interval=2000, min_scale=None, max_scale=None, hysteresis=1,
                    chainer_interval=None),
    "apex": dict(max_scale=2.0 ** 24),
    "tensorflow": dict(init_scale=2.0 ** 15, min_scale=1.0),
    "hysteresis": dict(hysteresis=2),
    "chainer": dict(init_scale=1.0, chainer_interval=1000, min_scale=1.0, max_scale=65504.0),
    # The dynamic baseline of the adaptive loss scaling experiments: Chainer's scheme with
    # interval 10 (the scale grows by 2^(1/10) per finite step).
    "chainer-10": dict(init_scale=1.0, chainer_interval=10, min_scale=1.0, max_scale=65504.0),
}
