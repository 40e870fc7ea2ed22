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
the gradients are checked for Inf/NaN on the host.

Adaptive per-layer scaling (``"adaptive"``, ``"adaptive-paper"`` and their options) works on a
model whose sites :func:`fpsim.torch.apply_policy` placed (pass them as ``sites=``): the scale
of every gradient rounding is the one fpsim's engine would carry there
(:mod:`fpsim.torch.adaptive` says how), the gradients reach the optimizer at true magnitude,
and a step with a non-finite gradient is skipped.
"""

from __future__ import annotations

import torch

from fpsim.torch.adaptive import GradientScales
from fpsim.training.scaling import AdaptiveScaler, StepStats
from fpsim.training.scaling import scaler as make_scaler


class LossScaling:
    """A loss scaler driving a torch optimizer: a global one, or adaptive per-layer scaling.

    Args:
        scaler: a scaler spec of :func:`fpsim.training.scaling.scaler` (``"dynamic"``,
            ``"static:1024"``, ``{"name": "dynamic", "growth_interval": 100}``, ...) or a
            scaler object.
        optimizer: the ``torch.optim.Optimizer`` over the master parameters.
        sites: the cast sites whose gradients carry the scale (what
            :func:`fpsim.torch.apply_policy` returned, a :class:`fpsim.torch.Cast`, or a list
            of them): their backward Stats are then reported with the scale. An adaptive
            scaler needs what ``apply_policy`` returned (its model and gradient format).

    Attributes:
        scaler: the fpsim scaler; steps / skipped: counts of steps applied and skipped;
        last_scale: the scale of the latest loss (what the step's run record should show).
    """

    def __init__(self, scaler, optimizer: torch.optim.Optimizer, sites=None):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError("fpsim.torch.LossScaling: optimizer must be a "
                            f"torch.optim.Optimizer, got {type(optimizer).__name__}")
        many = sites if isinstance(sites, (list, tuple)) and not hasattr(sites, "context") \
            else ([] if sites is None else [sites])
        self._contexts = []
        for s in many:
            ctx = getattr(s, "context", None)
            if not hasattr(ctx, "loss_scale"):
                raise TypeError("fpsim.torch.LossScaling: sites= takes what apply_policy "
                                f"returned or fpsim.torch.Cast modules, got {type(s).__name__}")
            if getattr(ctx, "gradient_scales", None) is not None:
                raise ValueError("fpsim.torch.LossScaling: these sites already carry adaptive "
                                 "scaling; call .remove() on that LossScaling first")
            self._contexts.append(ctx)
        placed = [s for s in many if getattr(s, "module", None) is not None]
        # (an adaptive scaler reads u_min / u_max from the policy's gradient format)
        self.scaler = make_scaler(scaler, placed[0].policy.gradient_format() if placed
                                  else "float16")
        #: the per-site scales of an adaptive scaler (None for a global one)
        self.gradient_scales = None
        if isinstance(self.scaler, AdaptiveScaler):
            if len(placed) != 1:
                raise ValueError("fpsim.torch.LossScaling: adaptive (per-layer) scaling measures "
                                 "the model's Linear and Conv2d layers; pass sites= the one "
                                 "list apply_policy returned for the model (with any Cast "
                                 "modules beside it)")
            self.gradient_scales = GradientScales(self.scaler, placed[0].module,
                                                  self._contexts)
        self.optimizer = optimizer
        self.steps = self.skipped = 0
        self.last_scale: float | None = None
        self._unscaled = self._stepped = False

    def loss_scale(self) -> float:
        """The scale ``S`` of this step's loss."""
        return float(self.scaler.loss_scale())

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss * S``, in float32 for a float16 / bfloat16 loss (2^16 times a float16 loss
        would overflow; ``torch.amp.GradScaler`` also returns float32). Starts a step:
        :meth:`unscale_` and :meth:`step` may follow once each."""
        scale = self.loss_scale()
        self._unscaled = self._stepped = False
        self.last_scale = scale
        if loss.dtype in (torch.float16, torch.bfloat16):
            loss = loss.float()
        if self.gradient_scales is not None:
            # (the gradients stay at true magnitude; the scales travel beside them, starting
            # at the loss with init_scale)
            self.gradient_scales.begin(loss)
            return loss
        for ctx in self._contexts:  # (the backward pass this loss starts carries it)
            ctx.loss_scale = scale
        return loss * scale

    def _grads(self) -> list[torch.Tensor]:
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
        return grads

    def unscale_(self) -> None:
        """Bring the gradients to true magnitude in place now (e.g. to clip their norm before
        :meth:`step`), as ``GradScaler.unscale_``; once per step."""
        if self._stepped:
            raise RuntimeError("fpsim.torch.LossScaling: unscale_() after step(); call scale() "
                               "on the next loss first")
        if self._unscaled:
            raise RuntimeError("fpsim.torch.LossScaling: unscale_() was already called this "
                               "step")
        with torch.no_grad():  # (the scaler's unscale multiplies numpy views in place)
            self.scaler.unscale([g.numpy() for g in self._grads()])
        self._unscaled = True

    def step(self, summary=None) -> bool:
        """Unscale the gradients in place (unless :meth:`unscale_` did), then let the scaler
        decide: apply ``optimizer.step()`` (True) or skip it (False, a non-finite gradient).
        ``summary``: this step's :class:`~fpsim.training.instrument.StepSummary`, for scalers
        that read it. :attr:`last_scale` keeps the scale this step's loss was multiplied by
        (the scaler's own may change here)."""
        if self._stepped:
            raise RuntimeError("fpsim.torch.LossScaling: step() was already called for this "
                               "loss; call scale() on the next loss first")
        if not self._unscaled:
            self.unscale_()
        found_inf = any(not bool(torch.isfinite(g).all()) for g in self._grads())
        self._stepped = True
        if self.gradient_scales is not None:
            self.gradient_scales.end()
        apply = bool(self.scaler.update(StepStats(found_inf, summary)))
        if apply:
            self.optimizer.step()
            self.steps += 1
        else:
            self.skipped += 1
        return apply

    def remove(self) -> None:
        """Take an adaptive scaler's hooks off the model (nothing to do for a global one)."""
        if self.gradient_scales is not None:
            self.gradient_scales.remove()

    def state_dict(self) -> dict:
        """The scaler's state and the step counts (for checkpoints)."""
        return {"scaler": self.scaler.state_dict(), "steps": self.steps,
                "skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output."""
        self.scaler.load_state_dict(state["scaler"])
        self.steps, self.skipped = int(state["steps"]), int(state["skipped"])
