"""Precision policy: which format and rounding each role uses, and where the casts go.

A :class:`Policy` declares a :class:`Cast` (format, rounding, overflow) per role — activations
(forward values), activation gradients (backward cotangents), weights (the working copy of the
fp32 master), weight gradients, optimizer state — with per-site overrides by name pattern, and
the accumulation model of the matrix products. :meth:`Policy.apply` turns that into cast sites
through the modules' generic hooks (:mod:`fpsim.nn`); the engine is unchanged. A cast site is an
identity-forward op (:func:`fpsim.engine.custom`) that rounds the value going forward and the
cotangent going backward, and reports both roundings' :class:`~fpsim.instrument.Stats` to the
active recorders.

Sites and their names (``policy.sites(model)`` lists them):

========================  ====================  ==================================
site name                 forward role          backward role
========================  ====================  ==================================
``input``                 input                 (none: data needs no gradient)
module path, ``"0"``      activation            activation-grad
``<module>.weight``       weight                weight-grad
``<module>.<point>``      activation            activation-grad (``Module.site``)
``<param>.<state key>``   optimizer-state       (none)
========================  ====================  ==================================

Module outputs are cast for every leaf module that is not ``exact`` (ReLU, max pooling and
reshapes map a format's values to values of the same format, and their derivative rules commute
with rounding, so a cast after them would change nothing) and for composites that set
``cast_output = True`` (residual sums).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import zlib

import numpy as np

from fpsim.training import instrument
from fpsim.numerics.accumulation import matmul as model_matmul
from fpsim.numerics import backend
from fpsim.kernels.rng import stream_key
from fpsim.kernels.round import SR_BITS_MAX
from fpsim.engine import custom
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as parse_format
from fpsim.numerics.modes import Overflow, RoundMode
from fpsim.training.nn import Parameter

#: Policy fields, one per role that the policy can round.
FIELDS = ("activations", "activation_grads", "weights", "weight_grads", "optimizer_state")


@dataclasses.dataclass(frozen=True)
class Cast:
    """Rounding into ``format`` with ``rounding`` and ``overflow`` (see :func:`fpsim.quantize`)."""

    format: Format
    rounding: str = "rne"
    overflow: str = "ieee"

    def __post_init__(self):
        object.__setattr__(self, "format", parse_format(self.format)
                           if not isinstance(self.format, Format) else self.format)
        # The kernel arguments, parsed once: a training step makes dozens of casts.
        object.__setattr__(self, "_mode", int(RoundMode.parse(self.rounding)))
        object.__setattr__(self, "_overflow", int(Overflow.parse(self.overflow)))

    def round(self, x: np.ndarray, seed: int, stream: int, stats: bool):
        """``x`` (a float32/float64 array) rounded into the format, in ``x``'s dtype, and the
        Stats of the rounding (or None): :func:`fpsim.quantize` without its argument parsing."""
        if x.dtype not in (np.float32, np.float64):
            raise TypeError(f"cast sites round float32/float64 arrays, got {x.dtype}")
        arr = x if x.flags.c_contiguous else np.ascontiguousarray(x)
        y, st = backend.quantize(arr, self.format, self._mode, self._overflow,
                                 stream_key(seed, stream), SR_BITS_MAX, stats)
        return (y if y.dtype == x.dtype else y.astype(x.dtype)), st

    @classmethod
    def parse(cls, spec) -> "Cast | None":
        """A Cast from a Cast, a format name, ``"fp16:sr"`` / ``"e4m3:rne:saturate"``, a dict
        ``{"format", "rounding", "overflow"}``, or None / ``"fp32"`` / ``"float32"`` (no cast)."""
        if spec is None or isinstance(spec, Cast):
            return spec
        if isinstance(spec, dict):
            unknown = set(spec) - {"format", "rounding", "overflow"}
            if unknown:
                raise ValueError(f"unknown cast field(s) {sorted(unknown)}; "
                                 "allowed: format, rounding, overflow")
            spec = dict(spec)
            if spec.get("format") in (None, "fp32", "float32"):
                return None
            return cls(**spec)
        if not isinstance(spec, str):
            raise TypeError(f"a cast is a format name, a dict or None, got {spec!r}")
        parts = spec.split(":")
        if parts[0] in ("fp32", "float32", "none"):
            return None
        if len(parts) > 3:
            raise ValueError(f"cast {spec!r}: expected FORMAT[:ROUNDING[:OVERFLOW]]")
        return cls(*parts)

    def __str__(self):
        return f"{self.format.name}:{self.rounding}:{self.overflow}"


@dataclasses.dataclass(frozen=True)
class Site:
    """A place where the policy rounds: name, the roles of its two directions, the casts."""

    name: str
    forward_role: str
    backward_role: str | None
    forward: Cast | None
    backward: Cast | None


def _stream(site: str, role: str, step: int) -> int:
    """Random stream of stochastic rounding at one site, role and step (so SR bits never
    repeat across sites or steps and do not depend on call order)."""
    return zlib.crc32(f"{site}|{role}".encode()) | (int(step) << 32)


class Policy:
    """Formats and rounding per role, per-site overrides, and the matmul accumulation model.

    Args:
        name: a label for run records.
        activations, activation_grads, weights, weight_grads, optimizer_state: a cast for each
            role (anything :meth:`Cast.parse` takes; None keeps float32).
        overrides: ``{pattern: {field: cast}}``; a site whose name matches the glob ``pattern``
            (fnmatch, e.g. ``"head*"`` or ``"*.bn*"``) uses these instead (first match wins).
        matmul: None (float32 BLAS products) or keyword arguments of :func:`fpsim.matmul`
            (e.g. ``{"preset": "fp16 accumulate"}``) used for every GEMM of Linear and Conv2d,
            forward and backward.
        cast_input: round the model input to the activation format.
        seed: key of stochastic rounding (with the site, role and :attr:`step`).
    """

    def __init__(self, name: str = "custom", activations=None, activation_grads=None,
                 weights=None, weight_grads=None, optimizer_state=None, overrides=None,
                 matmul=None, cast_input: bool = True, seed: int = 0):
        self.name = name
        self.casts = {f: Cast.parse(v) for f, v in zip(FIELDS, (
            activations, activation_grads, weights, weight_grads, optimizer_state))}
        self.overrides = []
        for pattern, fields in (overrides or {}).items():
            unknown = set(fields) - set(FIELDS)
            if unknown:
                raise ValueError(f"override {pattern!r}: unknown field(s) {sorted(unknown)}; "
                                 f"allowed: {', '.join(FIELDS)}")
            self.overrides.append((pattern, {f: Cast.parse(v) for f, v in fields.items()}))
        if matmul is not None and not isinstance(matmul, dict):
            raise TypeError("matmul must be None or a dict of fpsim.matmul keyword arguments")
        self.matmul = matmul
        self.cast_input = cast_input
        self.seed = seed
        self.step = 0  #: current training step (set by the training loop; keys SR)
        #: True: every site passes values through unrounded (the shadow float32 pass)
        self.bypass = False
        #: a dict to receive each activation-gradient site's (rounded) cotangent, or None
        self.capture = None

    def __repr__(self):
        casts = ", ".join(f"{k}={v}" for k, v in self.casts.items() if v is not None)
        return f"Policy({self.name!r}{', ' if casts else ''}{casts})"

    # -- declaration -----------------------------------------------------------------------------
    def cast_for(self, field: str, site: str) -> Cast | None:
        """The cast of role field ``field`` at ``site`` after overrides."""
        for pattern, fields in self.overrides:
            if field in fields and fnmatch.fnmatchcase(site, pattern):
                return fields[field]
        return self.casts[field]

    def sites(self, model) -> list[Site]:
        """Every cast site this policy places in ``model`` (sites whose casts are both None are
        left out). Internal points (``Module.site``) are listed when their modules declare them
        in a ``sites`` tuple attribute."""
        out = []
        if self.cast_input:
            fwd = self.cast_for("activations", "input")
            if fwd is not None:
                out.append(Site("input", "input", None, fwd, None))
        for mname, m in model.named_modules():
            points = ([mname or "output"] if _casts_output(m) else []) + \
                     [f"{mname}.{p}" if mname else p for p in getattr(m, "sites", ())]
            for s in points:
                out.append(Site(s, "activation", "activation-grad",
                                self.cast_for("activations", s), self.cast_for("activation_grads", s)))
            for pname, v in vars(m).items():
                if not isinstance(v, Parameter):
                    continue
                s = f"{mname}.{pname}" if mname else pname
                out.append(Site(s, "weight", "weight-grad",
                                self.cast_for("weights", s), self.cast_for("weight_grads", s)))
        return [s for s in out if s.forward is not None or s.backward is not None]

    # -- placement -------------------------------------------------------------------------------
    def cast_op(self, x, site: str, forward: Cast | None, backward: Cast | None,
                roles=("activation", "activation-grad")):
        """``x`` through a cast site: forward value rounded by ``forward``, cotangent by
        ``backward`` (either may be None: passed through). The backward rule is tagged: a
        numeric tag is the scale the cotangent carries, reported with its Stats."""
        fwd = self._rounder(site, roles[0], "forward", forward)
        bwd = self._rounder(site, roles[1], "backward", backward)
        return custom(x, fwd, lambda g, tag: (bwd(g, tag), tag), tagged=True)

    def _rounder(self, site, role, direction, cast):
        capture = direction == "backward" and role == "activation-grad"

        def rnd(a, tag=None):
            if cast is None or self.bypass:
                y = a
            else:
                y, st = cast.round(a, self.seed, _stream(site, role, self.step),
                                   instrument.wants_stats())
                if st is not None:
                    instrument.emit(site, role, direction, st,
                                    tag if isinstance(tag, (int, float)) else None)
            if capture and self.capture is not None:
                self.capture[site] = y
            return y
        return rnd

    def apply(self, model, optimizer=None):
        """Place this policy's cast sites in ``model`` (and round ``optimizer`` state).

        Replaces hooks placed by an earlier ``apply``. Returns the list of :class:`Site`."""
        sites = {s.name: s for s in self.sites(model)}
        mm = None if self.matmul is None else _model_product(self.matmul)
        for mname, m in model.named_modules():
            for hooks in (m._input_hooks, m._output_hooks, m._param_hooks, m._site_hooks):
                hooks[:] = [h for h in hooks if not getattr(h, "_fpsim_policy", False)]
            if hasattr(m, "matmul"):
                m.matmul = mm
            prefix = f"{mname}." if mname else ""
            out_site = sites.get(mname or "output") if _casts_output(m) else None
            if out_site is not None:
                m._output_hooks.append(_tag(lambda mod, y, s=out_site: self.cast_op(
                    y, s.name, s.forward, s.backward)))
            if any(prefix + n in sites for n, v in vars(m).items() if isinstance(v, Parameter)):
                m._param_hooks.append(_tag(lambda mod, pname, p, prefix=prefix: self._param(
                    sites.get(prefix + pname), p)))
            if any(prefix + n in sites for n in getattr(m, "sites", ())):
                m._site_hooks.append(_tag(lambda mod, point, x, prefix=prefix: self._param(
                    sites.get(prefix + point), x)))
        inp = sites.get("input")
        if inp is not None:
            model._input_hooks.append(_tag(lambda mod, x, s=inp: self.cast_op(
                x, s.name, s.forward, None, ("input", None))))
        if optimizer is not None:
            optimizer.state_hook = self._state_hook()
        return list(sites.values())

    def _param(self, site, p):
        if site is None:
            return p
        return self.cast_op(p, site.name, site.forward, site.backward,
                            (site.forward_role, site.backward_role))

    def _state_hook(self):
        def hook(pname, key, value):
            cast = self.cast_for("optimizer_state", f"{pname}.{key}")
            return value if cast is None else self._rounder(
                f"{pname}.{key}", "optimizer-state", "forward", cast)(value)
        return hook


def _casts_output(m) -> bool:
    leaf = next(iter(m.children()), None) is None
    return getattr(m, "cast_output", False) or (leaf and not m.exact)


def _tag(hook):
    hook._fpsim_policy = True
    return hook


def _model_product(kwargs: dict):
    """A numpy-level product ``f(x, y)`` running :func:`fpsim.matmul` with ``kwargs`` (batched
    leading axes are looped over)."""
    def product(x, y):
        if x.ndim == 2 and y.ndim == 2:
            return model_matmul(x, y, **kwargs).astype(np.result_type(x, y), copy=False)
        shape = np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
        xs = np.broadcast_to(x, shape + x.shape[-2:]).reshape(-1, *x.shape[-2:])
        ys = np.broadcast_to(y, shape + y.shape[-2:]).reshape(-1, *y.shape[-2:])
        return np.stack([product(a, b) for a, b in zip(xs, ys)]).reshape(
            shape + (x.shape[-2], y.shape[-1]))
    return product


# -- presets ------------------------------------------------------------------------------------------


def _mixed(name, fmt):
    return lambda: Policy(name, activations=fmt, activation_grads=fmt, weights=fmt,
                          weight_grads=fmt)


#: Named policies. ``mixed_fp16`` is the Micikevicius et al. (2018) recipe: fp16 weights,
#: activations and gradients, fp32 master weights, fp32 accumulation in the GEMMs and fp32
#: reductions inside softmax / normalization (the engine computes those in float32).
PRESETS = {
    "fp32": lambda: Policy("fp32"),
    "mixed_fp16": _mixed("mixed_fp16", "float16"),
    "mixed_bf16": _mixed("mixed_bf16", "bfloat16"),
    "fp8_e4m3_e5m2": lambda: Policy(
        "fp8_e4m3_e5m2", activations="float8_e4m3fn:rne:saturate",
        activation_grads="float8_e5m2:rne:saturate", weights="float8_e4m3fn:rne:saturate",
        weight_grads="float8_e5m2:rne:saturate"),
}


def policy(spec) -> Policy:
    """A Policy from a Policy, a preset name, or a dict of :class:`Policy` arguments
    (``{"preset": name, ...}`` starts from a preset and replaces the given fields)."""
    if isinstance(spec, Policy):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown precision policy {spec!r}; presets: {', '.join(PRESETS)} "
                             "(or give a dict of Policy fields)")
        return PRESETS[spec]()
    if isinstance(spec, dict):
        spec = dict(spec)
        base = policy(spec.pop("preset")) if "preset" in spec else Policy()
        allowed = set(FIELDS) | {"name", "overrides", "matmul", "cast_input", "seed"}
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown policy field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        args = {**base.casts, "name": base.name, "overrides": dict(base.overrides),
                "matmul": base.matmul, "cast_input": base.cast_input, "seed": base.seed, **spec}
        return Policy(**args)
    raise TypeError(f"a policy is a name, a dict or a Policy, got {type(spec).__name__}")
