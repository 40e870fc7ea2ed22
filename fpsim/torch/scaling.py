"""fpsim's global loss scalers (none, static, dynamic and its variants) on a torch model and
optimizer, through fpsim's scaler protocol (:mod:`fpsim.training.scaling.base`).

One step::

    scaling = fpsim.torch.LossScaling("dynamic", optimizer)
    optimizer.zero_grad()
    scaling.scale(loss).backward()   # the gradients, and every gradient cast, carry S
    applied = scaling.step()         # unscale in place, check, update S, step or skip

The optimizer holds the float32 master parameters (a policy placed by
:func:`fpsim.torch.apply_policy` rounds copies of them), so this is mixed-precision training
as AMP does it. What differs from ``torch.amp.GradScaler``: the scaler is fpsim's, so every
variant (``dynamic:apex``, ``dynamic:hysteresis``, ``dynamic:chainer``, ...) and every static
scale is available, and the unscaling multiplies by ``float32(1 / float64(S))`` exactly as
fpsim's training loop does; there is no autocast (the policy's cast sites do the rounding);
the gradients are checked for Inf/NaN on the host. Per-site (adaptive) scaling needs the
engine's tagged cotangents and is not available on torch models.
"""

from __future__ import annotations

import torch

from fpsim.training.scaling import AdaptiveScaler, StepStats
from fpsim.training.scaling import scaler as make_scaler


class LossScaling:
    """A global loss scaler driving a torch optimizer.

    Args:
        scaler: a scaler spec of :func:`fpsim.training.scaling.scaler` (``"dynamic"``,
            ``"static:1024"``, ``{"name": "dynamic", "growth_interval": 100}``, ...) or a
            scaler object.
        optimizer: the ``torch.optim.Optimizer`` over the master parameters.
        sites: the cast sites whose gradients carry the scale (what
            :func:`fpsim.torch.apply_policy` returned, a :class:`fpsim.torch.Cast`, or a list
            of them): their backward Stats are then reported with the scale.

    Attributes:
        scaler: the fpsim scaler; steps / skipped: counts of steps applied and skipped.
    """

    def __init__(self, scaler, optimizer: torch.optim.Optimizer, sites=None):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError("fpsim.torch.LossScaling: optimizer must be a "
                            f"torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.scaler = make_scaler(scaler)
        if isinstance(self.scaler, AdaptiveScaler):
            raise ValueError("fpsim.torch.LossScaling: adaptive (per-site) loss scaling carries "
                             "a scale with every cotangent, which fpsim's engine does and "
                             "torch's autograd does not; use a global scaler here (none, "
                             "static, dynamic) or train with fpsim's engine")
        self.optimizer = optimizer
        self.steps = self.skipped = 0
        many = sites if isinstance(sites, (list, tuple)) and not hasattr(sites, "context") \
            else ([] if sites is None else [sites])
        self._contexts = []
        for s in many:
            ctx = getattr(s, "context", None)
            if not hasattr(ctx, "loss_scale"):
                raise TypeError("fpsim.torch.LossScaling: sites= takes what apply_policy "
                                f"returned or fpsim.torch.Cast modules, got {type(s).__name__}")
            self._contexts.append(ctx)

    def loss_scale(self) -> float:
        """The scale ``S`` of this step's loss."""
        return float(self.scaler.loss_scale())

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss * S`` (S is exact in the loss's dtype for the power-of-two scales of every
        scaler; others round once, as ``loss * S`` does anywhere)."""
        scale = self.loss_scale()
        for ctx in self._contexts:  # (the backward pass this loss starts carries it)
            ctx.loss_scale = scale
        return loss * scale

    def step(self, summary=None) -> bool:
        """Unscale the gradients in place, then let the scaler decide: apply
        ``optimizer.step()`` (True) or skip it (False, a non-finite gradient). ``summary``:
        this step's :class:`~fpsim.training.instrument.StepSummary`, for scalers that read
        it."""
        grads = [p.grad for group in self.optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        for g in grads:
            if g.is_cuda:
                raise TypeError("fpsim.torch.LossScaling: the scaler unscales host gradients; "
                                "this model's are on a CUDA device (not supported yet)")
            if g.dtype not in (torch.float32, torch.float64):
                raise TypeError(f"fpsim.torch.LossScaling: master gradients are float32 or "
                                f"float64, got {g.dtype} (keep the optimizer's parameters in "
                                "float32; the policy rounds copies)")
        with torch.no_grad():
            # the scaler's unscale multiplies numpy views of the gradients in place
            self.scaler.unscale([g.numpy() for g in grads])
            found_inf = any(not bool(torch.isfinite(g).all()) for g in grads)
        apply = bool(self.scaler.update(StepStats(found_inf, summary)))
        if apply:
            self.optimizer.step()
            self.steps += 1
        else:
            self.skipped += 1
        return apply

    def state_dict(self) -> dict:
        """The scaler's state and the step counts (for checkpoints)."""
        return {"scaler": self.scaler.state_dict(), "steps": self.steps,
                "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""
        self.scaler.load_state_dict(state["scaler"])
        self.steps, self.skipped = int(state["steps"]), int(state["skipped"])
