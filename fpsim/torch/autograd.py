"""Cast sites with a gradient: a rounding of the forward value and another of the incoming
gradient, straight through otherwise.

``cast(x, forward, backward)`` returns ``x`` rounded by ``forward`` (an fpsim cast: ``"fp16"``,
``"e4m3:sr:saturate"``, a :class:`fpsim.training.casts.Cast`, ``None`` for no rounding), and
its backward pass hands on the incoming gradient rounded by ``backward``: the derivative of a
rounding is taken as 1 (the straight-through estimator), and the rounding of the gradient is
what a low-precision backward pass does to it. Both roundings go through the cast protocol of
:mod:`fpsim.training.casts`, so they are the kernels of :func:`fpsim.quantize` and their
stochastic rounding draws counter-based bits keyed by (seed, site, role, step), never torch's
random generator: the same step of the same run rounds the same way on any machine. When a
recorder listens (:func:`fpsim.recording`), each rounding's :class:`~fpsim.Stats` is emitted
under the site's name, role and direction, as fpsim's own cast sites do.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from fpsim.numerics.format import Format
from fpsim.training import instrument
from fpsim.training.casts import Cast as _ElementCast
from fpsim.training.casts import CastContext
from fpsim.training.context import RunContext
from fpsim.torch.tensors import FLOAT_DTYPES, as_dtype, from_array, to_array

#: The gradient role of each forward role.
GRAD_ROLE = {"input": "activation-grad", "activation": "activation-grad",
             "weight": "weight-grad"}


class TorchRunContext(RunContext):
    """A :class:`~fpsim.training.context.RunContext` that also knows the loss scale the
    gradients of the current backward pass carry (:attr:`loss_scale`, set by
    :class:`fpsim.torch.LossScaling`; None: unscaled or unknown). Backward roundings report it
    with their Stats, so recorded gradient histograms can be read at true magnitude."""

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self.loss_scale: float | None = None
        #: the per-site scales of adaptive loss scaling (:class:`fpsim.torch.adaptive.
        #: GradientScales`, set by :class:`fpsim.torch.LossScaling`), or None
        self.gradient_scales = None


def parse_cast(spec, what: str):
    """An fpsim cast object (or None) from a spec :meth:`fpsim.training.casts.Cast.parse`
    takes; the error names ``what``."""
    try:
        return _ElementCast.parse(spec)
    except (ValueError, TypeError) as e:
        raise type(e)(f"fpsim.torch: {what} cast {spec!r}: {e}") from None


def round_tensor(x: torch.Tensor, cast, site: str, role: str, direction: str, key: tuple,
                 scale: float | None = None):
    """``x`` rounded by the cast object ``cast`` at ``site`` (None: ``x`` itself), its Stats
    emitted to the active recorders; the result in ``x``'s dtype (refused where inexact).
    ``key`` is ``(step, seed, training, bypass)`` of the run context when the forward pass
    ran (the backward rounding uses the same step); ``scale`` the loss scale ``x`` carries."""
    step, seed, training, bypass = key
    if cast is None or bypass:
        return x
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"fpsim.torch: the cast at {site} rounds float tensors, got {x.dtype}")
    if x.is_cuda:
        raise TypeError(f"fpsim.torch: the cast at {site} got a CUDA tensor; cast sites round "
                        "host tensors (the CUDA path serves fpsim.torch.quantize and friends)")
    ctx = CastContext(site, role, direction, step, seed, instrument.wants_stats(), training)
    y, st = cast.round(to_array(x.detach()), ctx)
    if st is not None:
        instrument.emit(site, role, direction, st, scale)
    element = cast.format if isinstance(cast, _ElementCast) and isinstance(
        cast.format, Format) else None
    return as_dtype(from_array(y, x), x.dtype, element, f"cast at {site}")


class _CastFunction(torch.autograd.Function):
    """Forward: round the value; backward: round the incoming gradient (at the same step)."""

    @staticmethod
    def forward(ctx, x, forward, backward, site, role, context):
        key = (context.step, context.seed, context.training, context.bypass)
        ctx.rounding = (backward, site, GRAD_ROLE.get(role, f"{role}-grad"), key, context)
        return round_tensor(x, forward, site, role, "forward", key)

    @staticmethod
    @once_differentiable  # (a rounding has no second derivative: refuse create_graph)
    def backward(ctx, grad):
        backward, site, role, key, context = ctx.rounding
        scales = getattr(context, "gradient_scales", None)
        if scales is not None:  # (adaptive scaling: this site's own scale, see adaptive.py)
            return (scales.round_gradient(ctx, grad, lambda g, a: round_tensor(
                g, backward, site, role, "backward", key, a), site, role),
                None, None, None, None, None)
        scale = getattr(context, "loss_scale", None)  # (read now: set after the forward pass)
        return (round_tensor(grad, backward, site, role, "backward", key, scale),
                None, None, None, None, None)


def cast(x: torch.Tensor, forward=None, backward=None, *, site: str = "cast",
         role: str = "activation", context: RunContext | None = None,
         step: int = 0, seed: int = 0) -> torch.Tensor:
    """``x`` through a cast site: the value rounded by ``forward``, the gradient that flows back
    through it rounded by ``backward`` (either None: passed through).

    Args:
        forward, backward: fpsim casts (``"fp16"``, ``"e5m2:sr"``, ``{"format": ...}``, a cast
            object, or None).
        site, role: the names the Stats are recorded under (``role``: ``activation``,
            ``weight`` or ``input``; the gradient's role follows).
        context: the :class:`~fpsim.training.context.RunContext` whose step and seed key
            stochastic rounding; without one, ``step`` and ``seed`` do.

    The returned tensor is differentiable whenever ``x`` is.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"fpsim.torch.cast: x must be a torch.Tensor, got {type(x).__name__}")
    fwd, bwd = parse_cast(forward, "forward"), parse_cast(backward, "backward")
    if context is not None:
        return _CastFunction.apply(x, fwd, bwd, site, role, context)
    context = TorchRunContext(seed)
    with context.at_step(step):
        return _CastFunction.apply(x, fwd, bwd, site, role, context)


class Cast(torch.nn.Module):
    """A cast site as a module: ``Cast(forward="fp16", backward="e5m2:sr")(x)`` is
    :func:`cast` of ``x`` under this module's site name, role and run context.

    The context's step keys stochastic rounding. Outside ``with module.context.at_step(n):``
    each training-mode call counts one step (0, 1, ...), so repeated steps draw fresh bits;
    calls in eval mode reuse the current step.
    """

    def __init__(self, forward=None, backward=None, *, site: str = "cast",
                 role: str = "activation", seed: int = 0):
        super().__init__()
        self.forward_cast = parse_cast(forward, "forward")
        self.backward_cast = parse_cast(backward, "backward")
        self.site, self.role = site, role
        self.context = TorchRunContext(seed)

    def forward(self, x):
        self.context.forward_started(self)
        return _CastFunction.apply(x, self.forward_cast, self.backward_cast, self.site,
                                   self.role, self.context)

    def extra_repr(self) -> str:
        return (f"forward={self.forward_cast}, backward={self.backward_cast}, "
                f"site={self.site!r}, role={self.role!r}")
