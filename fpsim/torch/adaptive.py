"""Adaptive per-layer loss scaling (ALS, :class:`fpsim.training.scaling.AdaptiveScaler`) on a
torch model whose cast sites :func:`fpsim.torch.apply_policy` placed.

fpsim's engine carries a scale ``a`` with every cotangent: the gradient values are ``a`` times
their true magnitude, each Linear / Conv2d multiplies the gradient of its input by its own
scale ``s`` (so ``a`` grows down the network), and cotangents that meet at a tensor used twice
are brought to one scale before they are added. torch's autograd adds the gradients of a tensor
used twice by itself, with no place for a tag, so here the gradients stay at true magnitude
and the scale travels beside them: each cast site's gradient rounding rounds ``g * a`` and
hands on ``quantize(g * a) / a``. For power-of-two scales (ALS rounds every scale to one) this
is the engine's computation bit for bit: multiplying by a power of two is exact in float32 and
float64, and every product and sum of the backward pass commutes with it, barring values that
leave the carrier's range (float32's subnormals below 2^-126, which a gradient at true
magnitude reaches only when the format's smallest value divided by ``a`` does).

Where does a rounding learn its ``a``? :meth:`GradientScales.begin`, called with the loss by
:meth:`fpsim.torch.LossScaling.scale`, walks the autograd graph once per step and notes, for
every node, which nodes that set a scale lie between it and the loss (cast sites, the scale
marks on the GEMM inputs, the measurements on the GEMM outputs, the model output). Going
backward, each node that needs a scale takes the scales those nodes set; where several meet
(a residual block's input) it takes :meth:`~fpsim.training.scaling.AdaptiveScaler.merge_target`
of them for the largest magnitude of the gradient it holds, where the engine uses the largest of
each branch's: the two pick the same scale unless one branch is near the format's maximum.

Placement, with the engine's names (module paths; ``loss-cast`` for the model output):

- every ``nn.Linear`` / ``nn.Conv2d``: a tensor hook on its output measures the incoming
  gradient (after the output cast rounded it) and the rounded weight, and a mark on its input
  (a forward pre-hook) declares the input's gradient to carry ``a * s``;
- the model output (``output_site``): a tensor hook scales the loss gradient before the last
  cast rounds it;
- the weight-gradient guard, inside every weight site's gradient rounding;
- ``unscale="format"``: a hook on every master parameter rounds its true-magnitude gradient
  into the gradient format.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import BackwardCFunction
from torch.nn.utils import parametrize

from fpsim.training.scaling.adaptive import OUTPUT_SITE, AdaptiveScaler

#: The modules ALS measures (the engine's Linear and Conv2d).
GEMMS = (torch.nn.Linear, torch.nn.Conv2d)
#: Stands for the loss in the sets of scale-setting nodes (its gradient carries init_scale).
_LOSS = "loss"
#: The key of a node's ``metadata`` that marks it as measured or scaled by a tensor hook.
_HOOKED = "fpsim.adaptive"


class _InputMark(torch.autograd.Function):
    """Identity going forward; going backward, the gradient of a GEMM's input carries the
    incoming scale times the GEMM's local scale (measured on its output just before)."""

    @staticmethod
    def forward(ctx, x, tracker, site):
        ctx.tracker, ctx.site = tracker, site
        return x.view_as(x)  # (a view: the GEMM reads it, nothing writes to it)

    @staticmethod
    def backward(ctx, grad):
        ctx.tracker.input_gradient(ctx, ctx.site, grad)
        return grad, None, None


class GradientScales:
    """The scales the gradients of one torch model carry under an ALS scaler.

    Args:
        scaler: the :class:`~fpsim.training.scaling.AdaptiveScaler` (its gradient format,
            statistics and caps; :attr:`~AdaptiveScaler.last` gets each step's scales).
        module: the model (its GEMMs are measured; ``output_site`` goes on its output).
        contexts: the run contexts of the cast sites whose gradient roundings round at scale
            (what :func:`fpsim.torch.apply_policy` returned carries one).
    """

    def __init__(self, scaler: AdaptiveScaler, module: torch.nn.Module, contexts):
        if not scaler.power_of_two:
            raise ValueError("fpsim.torch: adaptive scaling on a torch model keeps gradients at "
                             "true magnitude and rounds them at scale, which is exact only for "
                             "power-of-two scales; leave power_of_two=True")
        self.scaler, self.contexts = scaler, list(contexts)
        self._handles = []
        self._pending: dict[str, float] = {}
        self._ups = None
        self._arrived: dict = {}  # node -> the scale of the gradient it receives
        self._out: dict = {}      # node that set a scale -> the scale it hands on
        for ctx in self.contexts:
            ctx.gradient_scales = self
        for name, m in module.named_modules():
            if isinstance(m, GEMMS):
                site = name or "output"
                self._handles.append(m.register_forward_pre_hook(
                    lambda mod, args, site=site: self._mark_input(args, site)))
                self._handles.append(m.register_forward_hook(
                    lambda mod, args, out, site=site: self._watch_output(mod, out, site),
                    prepend=True))  # (before the policy's cast: it sees the rounded gradient)
        if scaler.output_site is not None:
            self._handles.append(module.register_forward_hook(
                lambda mod, args, out: self._watch_model_output(out)))
        if scaler.unscale_mode == "format":
            for p in module.parameters():
                if p.requires_grad:
                    self._handles.append(p.register_hook(self._unscale_in_format))

    def remove(self) -> None:
        """Take every hook off the model and release the contexts; idempotent."""
        while self._handles:
            self._handles.pop().remove()
        for ctx in self.contexts:
            if getattr(ctx, "gradient_scales", None) is self:
                ctx.gradient_scales = None
        self.end()

    # -- once per step, before backward ------------------------------------------------------
    def begin(self, loss: torch.Tensor) -> None:
        """Note the graph of ``loss``: for every node, the nearest nodes toward the loss that
        set a scale (``_LOSS`` where none lies between)."""
        self.end()
        root = loss.grad_fn
        self._ups = {}
        if root is None:
            return
        parents, order, seen, stack = {}, [], {root}, [root]
        while stack:  # (every node reachable from the loss, and who consumes it)
            n = stack.pop()
            order.append(n)
            for child, _ in n.next_functions:
                if child is None:
                    continue
                parents.setdefault(child, []).append(n)
                if child not in seen:
                    seen.add(child)
                    stack.append(child)
        pending = {n: len(parents.get(n, ())) for n in order}
        ready, ups = [root], {root: frozenset((_LOSS,))}
        while ready:  # (topological: a node after every node that consumes it)
            n = ready.pop()
            if n is not root:
                ups[n] = frozenset().union(*({p} if self._sets_scale(p) else ups[p]
                                             for p in parents[n]))
            for child, _ in n.next_functions:
                if child is not None:
                    pending[child] -= 1
                    if pending[child] == 0:
                        ready.append(child)
        self._ups = ups

    def _sets_scale(self, node) -> bool:
        if node.metadata.get(_HOOKED) is self:  # (a tensor hook measures or scales there)
            return True
        if not isinstance(node, BackwardCFunction):
            return False
        if isinstance(node, _InputMark._backward_cls):
            return True
        rounding = getattr(node, "rounding", None)  # (a cast site's node: _CastFunction)
        return rounding is not None and getattr(rounding[-1], "gradient_scales", None) is self

    # -- going backward ------------------------------------------------------------------------
    def arriving(self, node, grad: torch.Tensor) -> float:
        """The scale of the gradient ``grad`` that ``node`` receives (see the module doc)."""
        a = self._arrived.get(node)
        if a is not None:
            return a
        if self._ups is None or node not in self._ups:
            raise RuntimeError("fpsim.torch: this model's gradients carry adaptive loss "
                               "scales, and this backward pass was not started by "
                               "LossScaling.scale(loss).backward()")
        scales = {self.scaler.init_scale if u == _LOSS else self._out.get(u, self._arrived.get(u))
                  for u in self._ups[node]} - {None}
        if not scales:  # (no node toward the loss set one: the loss's)
            scales = {self.scaler.init_scale}
        if len(scales) == 1:
            a = scales.pop()
        else:
            m = float(grad.detach().abs().max()) if grad.numel() else 0.0
            a = self.scaler.merge_target(scales, m)
        self._arrived[node] = a
        return a

    def round_gradient(self, node, grad, rounder, site: str, role: str) -> torch.Tensor:
        """A cast site's gradient rounding at scale: ``rounder(grad * a, a) / a``, with ``a``
        the arriving scale, lowered by the weight-gradient guard at weight sites."""
        a = self.arriving(node, grad)
        if (role == "weight-grad" and self.scaler.wgrad_guard and self.scaler.enabled
                and grad.numel()):
            factor = self.scaler.guard_factor(float(grad.detach().abs().max()) * a)
            if factor != 1.0:
                self.scaler.guard_events += 1
                self.scaler.guard_last[site] = (a, factor)
                a *= factor
        self._out[node] = a
        if a == 1.0:
            return rounder(grad, a)
        return rounder(grad * a, a) / a

    def input_gradient(self, node, site: str, grad) -> None:
        """The GEMM input's gradient: it carries the arriving scale times the local one."""
        a = self.arriving(node, grad)
        self._out[node] = a * self._pending.pop(site, 1.0)

    # -- the forward-pass hooks ----------------------------------------------------------------
    def _mark_input(self, args, site):
        if (args and isinstance(args[0], torch.Tensor) and args[0].requires_grad
                and torch.is_grad_enabled()):
            return (_InputMark.apply(args[0], self, site), *args[1:])
        return None

    def _watch_output(self, mod, out, site):
        if not (isinstance(out, torch.Tensor) and out.grad_fn is not None):
            return None
        weight = _rounded_weight(mod)
        node = out.grad_fn
        node.metadata[_HOOKED] = self  # (the mark lives and dies with the node)
        out.register_hook(lambda g: self._measure(site, node, g, weight))
        return None

    def _measure(self, site, node, grad, weight):
        if not self.scaler.enabled:
            return None
        a = self.arriving(node, grad)
        s = self.scaler.site_scale(site, _at_scale(grad, a), weight, a)
        self._pending[site] = s
        self.scaler.last[site] = (a, s)
        return None

    def _watch_model_output(self, out):
        y = out[0] if isinstance(out, tuple) and out else out
        if not (isinstance(y, torch.Tensor) and y.grad_fn is not None):
            return None
        node = y.grad_fn
        node.metadata[_HOOKED] = self
        y.register_hook(lambda g: self._scale_output(node, g))
        return None

    def _scale_output(self, node, grad):
        if not self.scaler.enabled:
            return None
        a = self.arriving(node, grad)
        s = self.scaler.site_scale(OUTPUT_SITE, _at_scale(grad, a), None, a,
                                   lognormal=self.scaler.output_site == "lognormal")
        self.scaler.last[OUTPUT_SITE] = (a, s)
        self._arrived[node] = a * s
        return None

    def _unscale_in_format(self, grad):
        if not self.scaler.enabled or grad.is_cuda:
            return None
        from fpsim.numerics.convert import quantize  # (the kernels load on first use)
        q = quantize(grad.detach().numpy().astype(np.float64), self.scaler.format)
        return torch.from_numpy(q.astype(grad.numpy().dtype, copy=False))

    def end(self) -> None:
        """Forget this step's graph and scales (the step is over)."""
        self._ups, self._arrived, self._out, self._pending = None, {}, {}, {}


def _at_scale(grad: torch.Tensor, a: float) -> np.ndarray:
    """``grad * a`` as float64 numpy (exact for a power of two): the values the engine holds."""
    g = np.ascontiguousarray(grad.detach().numpy(), dtype=np.float64)
    return g * a if a != 1.0 else g


def _rounded_weight(mod) -> np.ndarray | None:
    """The weight the GEMM computed with: the policy's rounded copy where a weight site
    rounds it (kept by the parametrization), else the parameter."""
    if parametrize.is_parametrized(mod, "weight"):
        last = getattr(mod.parametrizations["weight"][0], "last", None)
        if last is not None:
            return last.numpy()
    w = getattr(mod, "weight", None)
    return None if w is None else w.detach().numpy()
