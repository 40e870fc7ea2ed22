"""A precision policy placed on a ``torch.nn.Module``: the cast sites of
:meth:`fpsim.training.precision.Policy.apply`, through torch's public hooks.

Sites (names as ``named_modules`` gives them):

- ``input``: the model's input, rounded to the activation format (``Policy.cast_input``), by a
  forward pre-hook of the root; no gradient rounding (an input has none that matters).
- ``<module>``: the output of every leaf module that can create new values, rounded forward to
  the activation format and, on the way back, its gradient to the activation-gradient format
  (a forward hook). Leaves that only move or select values (ReLU, max pooling, flatten,
  identity) are left out, as fpsim's engine leaves out its exact modules. An attention module
  (``nn.MultiheadAttention``) counts as a leaf: its output is rounded, not the values inside
  it. Values computed in a non-leaf module's own ``forward`` (a residual sum written as
  ``x + f(x)``) are not rounded: make such an operation a module of its own to give it a
  site.
- ``<module>.<parameter>``: every parameter, rounded forward to the weight format and its
  gradient to the weight-gradient format, through a parametrization
  (``torch.nn.utils.parametrize``): the optimizer still updates the float32 master
  parameter, and the layer computes with its rounded copy, as mixed-precision training does.

A root forward pass in training mode starts a new step of the returned context, which keys
stochastic rounding (with the seed, site and role); ``with sites.context.at_step(n):`` fixes
it. ``sites.remove()`` (or :func:`remove_policy`) takes every hook and parametrization off and
leaves the parameters as they were.
"""

from __future__ import annotations

import fnmatch

import torch
from torch.nn.utils import parametrize

from fpsim.training.context import RunContext
from fpsim.training.precision import Policy, policy as make_policy
from fpsim.torch.autograd import TorchRunContext, _CastFunction

#: Modules treated as leaves: their forward computes with their children's parameters without
#: calling the children (torch's attention calls F.linear on ``out_proj.weight``), so a site
#: on a child's output would never run. The module's output (the first element of a tuple) is
#: the site; what it computes inside (scores, probabilities) is not rounded.
OPAQUE = (torch.nn.MultiheadAttention,)
#: Leaf modules whose outputs are values of their inputs (no rounding can change them).
VALUE_PRESERVING = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Flatten, torch.nn.Unflatten,
                    torch.nn.Identity, torch.nn.MaxPool1d, torch.nn.MaxPool2d,
                    torch.nn.MaxPool3d, torch.nn.AdaptiveMaxPool1d, torch.nn.AdaptiveMaxPool2d)
_ATTR = "_fpsim_policy"


class PolicySites(list):
    """The names of the cast sites :func:`apply_policy` placed (a list of str), with the run
    :attr:`context` they read and :meth:`remove`."""

    def __init__(self, names, context: RunContext, undo, module=None, policy=None):
        super().__init__(names)
        self.context = context
        #: the model the sites are on, and the :class:`~fpsim.training.precision.Policy`
        self.module, self.policy = module, policy
        self._undo = undo

    def remove(self) -> None:
        """Take the policy off the model (hooks and parametrizations); idempotent."""
        while self._undo:
            self._undo.pop()()


class _RoundedParameter(torch.nn.Module):
    """The parametrization of one weight site: the parameter through its cast site."""

    def __init__(self, site: str, forward, backward, context: RunContext):
        super().__init__()
        self.site, self.forward_cast, self.backward_cast = site, forward, backward
        self.context = context

    def forward(self, w):
        out = _CastFunction.apply(w, self.forward_cast, self.backward_cast, self.site,
                                  "weight", self.context)
        if getattr(self.context, "gradient_scales", None) is not None:
            # (adaptive scaling measures the GEMM with the copy the layer computes with)
            self.last = out.detach()
        return out


def apply_policy(module: torch.nn.Module, policy, *, seed: int | None = None) -> PolicySites:
    """Place ``policy`` (a :class:`~fpsim.training.precision.Policy`, a preset name such as
    ``"mixed_fp16"``, a cast word such as ``"e4m3:sr"``, or a dict) on ``module``; returns the
    list of site names (a :class:`PolicySites`, with ``.context`` and ``.remove()``).

    Raises:
        TypeError: ``module`` is not a ``torch.nn.Module``.
        ValueError: the module already carries a policy (remove it first); an override's glob
            matches no site; the policy sets a GEMM accumulation model or optimizer-state casts,
            which belong to fpsim's own engine and optimizers.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"fpsim.torch.apply_policy: module must be a torch.nn.Module, got "
                        f"{type(module).__name__}")
    for mname, m in module.named_modules():
        if getattr(m, _ATTR, None) is not None:
            raise ValueError("fpsim.torch.apply_policy: "
                             + ("this module" if not mname else f"its submodule {mname!r}")
                             + " already carries a policy; call .remove() on the returned "
                             "sites (or fpsim.torch.remove_policy) before placing another")
        if parametrize.is_parametrized(m):
            raise ValueError(f"fpsim.torch.apply_policy: module {mname or '(root)'!r} already "
                             "has a torch parametrization (weight_norm, spectral_norm, ...); "
                             "cast sites on parametrized weights are not supported")
    pol = policy if isinstance(policy, Policy) else make_policy(policy)
    if pol.matmul is not None or any("matmul" in f for _, f in pol.overrides):
        raise ValueError("fpsim.torch.apply_policy: the policy sets a GEMM accumulation model "
                         "(matmul); the bridge places cast sites only, GEMMs run in torch. Use "
                         "fpsim's own engine for accumulation models")
    if pol.cast_for("optimizer_state", "*") is not None or any(
            "optimizer_state" in f for _, f in pol.overrides):
        raise ValueError("fpsim.torch.apply_policy: optimizer-state casts round fpsim's own "
                         "optimizers' state; a torch optimizer's state is not reached")
    context = TorchRunContext(pol.seed if seed is None else seed)
    names, undo, site_names, module_names = [], [], set(), set()

    def add(name):
        names.append(name)
        site_names.add(name)

    # each module's parameter order, restored on removal (a removed parametrization registers
    # its parameter again, last): optimizer state saved before the policy still fits after
    orders = [(m, list(dict(m.named_parameters(recurse=False)))) for m in module.modules()]
    undo.append(lambda: _restore_order(orders))
    if pol.cast_input and pol.cast_for("activations", "input") is not None:
        fwd = pol.cast_for("activations", "input")
        undo.append(module.register_forward_pre_hook(
            lambda m, args, f=fwd: _round_args(args, f, context)).remove)
        add("input")
    # (listed before parametrizations add modules of their own)
    tree = [(mname, m, isinstance(m, OPAQUE) or next(iter(m.children()), None) is None)
            for mname, m in module.named_modules()]
    opaque = [mname for mname, m, _ in tree if isinstance(m, OPAQUE)]
    for mname, m, leaf in tree:
        if any(mname.startswith(f"{o}.") for o in opaque):
            leaf = False  # (inside an opaque module: its parameters only)
        module_names.add(mname or "output")  # (the root's site is named "output")
        site = mname or "output"
        if leaf and not isinstance(m, VALUE_PRESERVING):
            fwd, bwd = pol.cast_for("activations", site), pol.cast_for("activation_grads", site)
            if fwd is not None or bwd is not None:
                undo.append(m.register_forward_hook(
                    lambda mod, args, out, f=fwd, b=bwd, s=site: _round_output(
                        out, f, b, s, context)).remove)
                add(site)
        for pname, p in list(m.named_parameters(recurse=False)):
            s = f"{mname}.{pname}" if mname else pname
            fwd, bwd = pol.cast_for("weights", s), pol.cast_for("weight_grads", s)
            if fwd is None and bwd is None:
                continue
            # unsafe=True: torch would otherwise call the parametrization once to check it,
            # rounding every weight at placement (Stats to a listening recorder, a step of
            # a stateful cast such as delayed scaling) before any training step
            parametrize.register_parametrization(m, pname,
                                                 _RoundedParameter(s, fwd, bwd, context),
                                                 unsafe=True)
            undo.append(lambda m=m, pname=pname: parametrize.remove_parametrizations(
                m, pname, leave_parametrized=False))
            add(s)
    for pattern, _ in pol.overrides:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in site_names | module_names):
            for u in reversed(undo):
                u()
            raise ValueError(f"fpsim.torch.apply_policy: the override {pattern!r} matches no "
                             f"site; sites: {', '.join(sorted(site_names)[:12])}"
                             f"{' ...' if len(site_names) > 12 else ''}")
    # first of all: a training-mode root forward pass starts the next step
    step_hook = module.register_forward_pre_hook(
        lambda m, args: context.forward_started(m), prepend=True)
    undo.insert(0, step_hook.remove)
    setattr(module, _ATTR, True)
    undo.insert(0, lambda: setattr(module, _ATTR, None))
    return PolicySites(names, context, undo, module, pol)


def remove_policy(module: torch.nn.Module, sites: PolicySites) -> None:
    """Take ``sites`` (what :func:`apply_policy` returned for ``module``) off the module."""
    if getattr(module, _ATTR, None) is None:
        raise ValueError("fpsim.torch.remove_policy: this module carries no fpsim policy")
    sites.remove()


def _restore_order(orders) -> None:
    """Re-register each module's parameters in their order before the policy (public API)."""
    for m, names in orders:
        if list(dict(m.named_parameters(recurse=False))) == names:
            continue
        params = {n: p for n, p in m.named_parameters(recurse=False)}
        for n in names:
            delattr(m, n)
        for n in names:
            m.register_parameter(n, params[n])


def _round_args(args, cast, context):
    """The model's input (its first argument) rounded, as fpsim's engine rounds it; further
    arguments (masks, lengths) pass unchanged."""
    if args and isinstance(args[0], torch.Tensor) and args[0].dtype.is_floating_point:
        return (_CastFunction.apply(args[0], cast, None, "input", "input", context), *args[1:])
    return args


def _round_output(out, fwd, bwd, site, context):
    if isinstance(out, torch.Tensor) and out.dtype.is_floating_point:
        return _CastFunction.apply(out, fwd, bwd, site, "activation", context)
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        # (attention returns (output, weights): the output is the activation)
        return (_round_output(out[0], fwd, bwd, site, context), *out[1:])
    return out  # (other outputs are left alone)
