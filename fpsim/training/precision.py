"""Precision policy: which format and rounding each role uses, and where the casts go.

A :class:`Policy` declares a :class:`Cast` (format, rounding, overflow) per role — activations
(forward values), activation gradients (backward cotangents), weights (the working copy of the
fp32 master), weight gradients, optimizer state — with per-site overrides by name pattern, and
the accumulation model of the matrix products. :meth:`Policy.apply` turns that into cast sites
through the modules' generic hooks (:mod:`fpsim.training.nn`); the engine is unchanged. A cast site is an
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

import numpy as np

from fpsim.engine import custom
from fpsim.training import instrument
from fpsim.training.casts import Cast, CastContext
from fpsim.training.context import RunContext
from fpsim.training.nn import ORDER_CASTS, Parameter

#: Policy fields, one per role that the policy can round.
FIELDS = ("activations", "activation_grads", "weights", "weight_grads", "optimizer_state")
#: Fields an override may set: the casts, and the GEMM accumulation model of the sites' modules.
OVERRIDE_FIELDS = FIELDS + ("matmul",)


@dataclasses.dataclass(frozen=True)
class Site:
    """A place where the policy rounds: name, the roles of its two directions, the casts."""

    name: str
    forward_role: str
    backward_role: str | None
    forward: Cast | None
    backward: Cast | None


class Policy:
    """Formats and rounding per role, per-site overrides, and the matmul accumulation model.

    Args:
        name: a label for run records.
        activations, activation_grads, weights, weight_grads, optimizer_state: a cast for each
            role (anything :meth:`Cast.parse` takes; None keeps float32).
        overrides: ``{pattern: {field: value}}``; a site whose name matches the glob ``pattern``
            (fnmatch, e.g. ``"head*"`` or ``"*.bn*"``) uses these instead (first match wins).
            Fields: the five casts and ``matmul`` (matched against the module's name).
        matmul: the GEMMs of Linear and Conv2d, forward and backward, unless an override
            gives a module its own: None (float32 BLAS products), keyword arguments of
            :func:`fpsim.matmul` (e.g. ``{"preset": "fp16 accumulate"}``), or a tensor-core
            model (a preset name such as ``"H100-fp16"`` or a ``TensorCore``; its operands are
            rounded into the model's input format first, as autocast does), or a block format
            (``"mxfp8_e4m3"``, ``"nvfp4"``): the block-scaled GEMM of
            :func:`fpsim.numerics.block_gemm.block_matmul`.
        cast_input: round the model input to the activation format.
        seed: the default key of stochastic rounding (with the site, role and step); the
            training loop's :class:`~fpsim.training.context.RunContext` uses the run's seed.

    A cast is anything :meth:`Cast.parse` takes, including any object with
    ``round(x, ctx) -> (y, stats)`` (the cast protocol, :mod:`fpsim.training.casts`).
    A Policy holds no run-time state: :meth:`apply` returns the placed sites together with the
    :class:`~fpsim.training.context.RunContext` they read.
    """

    def __init__(self, name: str = "custom", activations=None, activation_grads=None,
                 weights=None, weight_grads=None, optimizer_state=None, overrides=None,
                 matmul=None, cast_input: bool = True, seed: int = 0):
        self.name = name
        self.casts = {f: Cast.parse(v) for f, v in zip(FIELDS, (
            activations, activation_grads, weights, weight_grads, optimizer_state))}
        self.overrides = []
        if not isinstance(overrides or {}, dict):
            raise ValueError(f"policy overrides must be a table {{pattern: {{field: cast}}}}, "
                             f"got {overrides!r}")
        for pattern, fields in (overrides or {}).items():
            if not isinstance(fields, dict):
                raise ValueError(f"override {pattern!r} must be a table of fields "
                                 f"({', '.join(OVERRIDE_FIELDS)}), got {fields!r}")
            unknown = set(fields) - set(OVERRIDE_FIELDS)
            if unknown:
                raise ValueError(f"override {pattern!r}: unknown field(s) {sorted(unknown)}; "
                                 f"allowed: {', '.join(OVERRIDE_FIELDS)}")
            self.overrides.append((pattern, {f: (_check_matmul(v) if f == "matmul" else
                                                 Cast.parse(v)) for f, v in fields.items()}))
        self.matmul = _check_matmul(matmul)
        self.cast_input = cast_input
        self.seed = seed

    def __repr__(self):
        casts = ", ".join(f"{k}={v}" for k, v in self.casts.items() if v is not None)
        return f"Policy({self.name!r}{', ' if casts else ''}{casts})"

    # -- declaration -----------------------------------------------------------------------------
    def cast_objects(self) -> list[tuple[str, object]]:
        """Every cast this policy holds, named by its field (``"weights"``) or
        ``"<pattern>/<field>"`` for overrides, in declaration order: the names a checkpoint
        keeps stateful casts' state under (:meth:`state_dict`)."""
        out = [(f, c) for f, c in self.casts.items() if c is not None]
        for pattern, fields in self.overrides:
            out += [(f"{pattern}/{f}", c) for f, c in fields.items()
                    if f != "matmul" and c is not None]
        return out

    def state_dict(self) -> dict:
        """The state of the casts that have one (delayed scaling's amax histories), by
        :meth:`cast_objects` name."""
        return {name: c.state_dict() for name, c in self.cast_objects()
                if callable(getattr(c, "state_dict", None))}

    def load_state_dict(self, d: dict) -> None:
        """Restore :meth:`state_dict` output."""
        casts = dict(self.cast_objects())
        for name, v in d.items():
            if name not in casts or not callable(getattr(casts[name], "load_state_dict", None)):
                raise ValueError(f"checkpoint holds cast state for {name!r}, which this policy "
                                 "has no stateful cast for")
            casts[name].load_state_dict(v)

    def scale_records(self) -> list[dict]:
        """The scale rows the scaled casts left since the last call (see
        :meth:`fpsim.training.scaled_cast.ScaledCast.scale_records`)."""
        rows, seen = [], set()
        for _, c in self.cast_objects():
            if id(c) not in seen and callable(getattr(c, "scale_records", None)):
                seen.add(id(c))
                rows += c.scale_records()
        return rows

    def gradient_format(self) -> str:
        """The activation-gradient format (u_min / u_max of the adaptive scaler): the cast's
        ``format`` attribute (float32 without a cast, or for a cast that names none)."""
        cast = self.casts["activation_grads"]
        return "float32" if cast is None else getattr(cast, "format", "float32")

    def cast_for(self, field: str, site: str):
        """The cast of role field ``field`` at ``site`` after overrides."""
        for pattern, fields in self.overrides:
            if field in fields and fnmatch.fnmatchcase(site, pattern):
                return fields[field]
        return self.casts[field]

    def matmul_for(self, module_name: str) -> dict | None:
        """The accumulation model (fpsim.matmul keyword arguments) of a module's GEMMs, or None
        (float32 BLAS), after overrides."""
        for pattern, fields in self.overrides:
            if "matmul" in fields and fnmatch.fnmatchcase(module_name, pattern):
                return fields["matmul"]
        return self.matmul

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
    def apply(self, model, optimizer=None, *, context: RunContext | None = None) -> "Placement":
        """Place this policy's cast sites in ``model`` (and round ``optimizer`` state) through
        the modules' public hooks, replacing whatever this policy placed there before.

        ``context`` is the run-time state the sites read (step, bypass, capture); by default a
        new :class:`RunContext` with this policy's seed that counts steps by itself (see
        :mod:`fpsim.training.context`). Returns a :class:`Placement`: the list of
        :class:`Site` with the context as ``.context``."""
        ctx = RunContext(self.seed) if context is None else context
        placer = _Placer(self, ctx)
        sites = {s.name: s for s in self.sites(model)}
        for mname, m in model.named_modules():
            m.remove_hooks(self)
            if hasattr(m, "matmul"):
                m.matmul = placer.product(self.matmul_for(mname))
            prefix = f"{mname}." if mname else ""
            out_site = sites.get(mname or "output") if _casts_output(m) else None
            if out_site is not None:
                m.register_hook("output", lambda mod, y, s=out_site: placer.cast_op(
                    y, s.name, s.forward, s.backward), owner=self, order=ORDER_CASTS)
            if any(prefix + n in sites for n, v in vars(m).items() if isinstance(v, Parameter)):
                m.register_hook("param", lambda mod, pname, p, prefix=prefix: placer.site(
                    sites.get(prefix + pname), p), owner=self, order=ORDER_CASTS)
            if any(prefix + n in sites for n in getattr(m, "sites", ())):
                m.register_hook("site", lambda mod, point, x, prefix=prefix: placer.site(
                    sites.get(prefix + point), x), owner=self, order=ORDER_CASTS)
        # first of all the root's input hooks: a forward pass starts (the context's step count),
        # then the parameters are rounded, all in one call per cast; the last output hook
        # drops what the pass did not use
        placer.weights = [(sites[prefix + n], m, n) for mname, m in model.named_modules()
                          for prefix in [f"{mname}." if mname else ""]
                          for n, v in vars(m).items()
                          if isinstance(v, Parameter) and prefix + n in sites
                          and callable(getattr(sites[prefix + n].forward, "round_many", None))]
        model.register_hook("input", lambda mod, x: ctx.forward_started(mod) or
                            placer.round_weights() or x, owner=self, order=-(1 << 30))
        model.register_hook("output", lambda mod, y: placer.rounded.clear() or y, owner=self,
                            order=1 << 30)
        inp = sites.get("input")
        if inp is not None:
            model.register_hook("input", lambda mod, x, s=inp: placer.cast_op(
                x, s.name, s.forward, None, ("input", None)), owner=self, order=ORDER_CASTS)
        if optimizer is not None:
            optimizer.state_hook = placer.state_hook()
        return Placement(sites.values(), ctx)


class Placement(list):
    """The :class:`Site` list that :meth:`Policy.apply` placed, with the
    :class:`~fpsim.training.context.RunContext` its casts read as :attr:`context`."""

    def __init__(self, sites, context: RunContext):
        super().__init__(sites)
        self.context = context


class _Placer:
    """The ops one :meth:`Policy.apply` places, bound to its run context."""

    def __init__(self, policy: Policy, ctx: RunContext):
        self.policy, self.ctx = policy, ctx
        #: (Site, module, parameter name) of every parameter whose forward cast has round_many
        self.weights: list = []
        #: site name -> (the parameter's array, context flags, (y, stats)): this pass's
        #: parameter roundings, taken by the parameter sites when they run
        self.rounded: dict = {}

    def round_weights(self) -> None:
        """Round every parameter of :attr:`weights` as its site would, one ``round_many`` call
        per cast, into :attr:`rounded` (a site uses the result only if it rounds the same array
        under the same step, Stats request and mode; otherwise it rounds for itself)."""
        ctx = self.ctx
        self.rounded.clear()
        if ctx.bypass or not self.weights:
            return
        flags = (ctx.step, instrument.wants_stats(), ctx.training, ctx.seed)
        groups: dict = {}
        for site, module, name in self.weights:
            groups.setdefault(id(site.forward), (site.forward, []))[1].append(
                (site.name, vars(module)[name].data))
        for cast, members in groups.values():
            ctxs = [CastContext(name, "weight", "forward", flags[0], flags[3], flags[1],
                                flags[2]) for name, _ in members]
            results = cast.round_many([a for _, a in members], ctxs)
            for (name, a), res in zip(members, results):
                self.rounded[name] = (a, flags, res)

    def cast_op(self, x, site: str, forward, backward, roles=("activation", "activation-grad")):
        """``x`` through a cast site: forward value rounded by ``forward``, cotangent by
        ``backward`` (either may be None: passed through). The backward rule is tagged: a
        numeric tag is the scale the cotangent carries, reported with its Stats."""
        fwd = self.rounder(site, roles[0], "forward", forward)
        bwd = self.rounder(site, roles[1], "backward", backward)
        return custom(x, fwd, lambda g, tag: (bwd(g, tag), tag), tagged=True)

    def rounder(self, site, role, direction, cast):
        ctx = self.ctx
        capture = direction == "backward" and role == "activation-grad"
        rounded = self.rounded if (role, direction) == ("weight", "forward") else {}

        def rnd(a, tag=None):
            if cast is None or ctx.bypass:
                y = a
            else:
                wants = instrument.wants_stats()
                done = rounded.pop(site, None)
                if done is not None and done[0] is a and done[1] == (
                        ctx.step, wants, ctx.training, ctx.seed):
                    y, st = done[2]
                else:
                    y, st = cast.round(a, CastContext(site, role, direction, ctx.step,
                                                      ctx.seed, wants, ctx.training))
                if st is not None:
                    instrument.emit(site, role, direction, st,
                                    tag if isinstance(tag, (int, float)) else None)
            if capture and ctx.capture is not None:
                ctx.capture[site] = y
            return y
        return rnd

    def site(self, site, p):
        if site is None:
            return p
        return self.cast_op(p, site.name, site.forward, site.backward,
                            (site.forward_role, site.backward_role))

    def state_hook(self):
        def hook(pname, key, value):
            cast = self.policy.cast_for("optimizer_state", f"{pname}.{key}")
            return value if cast is None else self.rounder(
                f"{pname}.{key}", "optimizer-state", "forward", cast)(value)
        return hook

    def product(self, kwargs: dict | None):
        """The numpy-level product of a module's GEMMs: None (np.matmul) without a model;
        otherwise :func:`fpsim.matmul` under ``kwargs``, or np.matmul during a shadow pass."""
        if kwargs is None:
            return None
        model = _model_product(kwargs)
        ctx = self.ctx
        return lambda x, y: np.matmul(x, y) if ctx.bypass else model(x, y)


def _check_matmul(matmul):
    """A matmul setting as fpsim.matmul keyword arguments: a dict as it is, a tensor-core preset
    name (``"H100-fp16"``) or a TensorCore as the dict that selects it."""
    from fpsim.numerics import tensor_core as tcm
    from fpsim.numerics import scaled
    if isinstance(matmul, str) and matmul in scaled.PRESETS:
        sf = scaled.PRESETS[matmul]
        if sf.tile is None or sf.tile[0] != 1:
            raise ValueError(f"matmul={matmul!r}: a block-scaled GEMM needs a format with 1 x k "
                             "blocks (mxfp8_e4m3, mxfp4_e2m1, nvfp4, ...)")
        return {"block_scaled": matmul}
    if isinstance(matmul, str):
        if matmul not in tcm.PRESETS:
            raise ValueError(f"matmul={matmul!r} is not a tensor-core preset; valid presets: "
                             + ", ".join(tcm.PRESET_NAMES) + "; or a block format for a "
                             "block-scaled GEMM (mxfp8_e4m3, nvfp4, ...); or a dict of "
                             "fpsim.matmul keyword arguments")
        return {"preset": matmul}
    if isinstance(matmul, tcm.TensorCore):
        return {"accum": matmul}
    if matmul is not None and not isinstance(matmul, dict):
        raise TypeError("matmul must be None, a tensor-core preset name, a TensorCore or a dict "
                        "of fpsim.matmul keyword arguments")
    return matmul


def _tensor_core_in(kwargs: dict):
    """The TensorCore that fpsim.matmul keyword arguments select, or None."""
    from fpsim.numerics import tensor_core as tcm
    if isinstance(kwargs.get("accum"), tcm.TensorCore):
        return kwargs["accum"]
    return tcm.PRESETS.get(kwargs.get("preset"))


def _casts_output(m) -> bool:
    leaf = next(iter(m.children()), None) is None
    return getattr(m, "cast_output", False) or (leaf and not m.exact)


def _model_product(kwargs: dict):
    """A numpy-level product ``f(x, y)`` running :func:`fpsim.matmul` with ``kwargs`` (batched
    leading axes are looped over)."""
    from fpsim.numerics.accumulation import matmul as model_matmul
    if "block_scaled" in kwargs:
        from fpsim.numerics.block_gemm import block_matmul
        gemm = lambda x, y: block_matmul(x, y, kwargs["block_scaled"])  # noqa: E731
    else:
        gemm = lambda x, y: model_matmul(x, y, **kwargs)  # noqa: E731
    tc = _tensor_core_in(kwargs)
    if tc is not None:
        from fpsim.numerics.convert import quantize
        from fpsim.numerics.tensor_core import tc_matmul

        def tc_product(x, y):
            # The operands are rounded into the model's input format (RNE), as autocast does
            # before a tensor-core GEMM; stacks are broadcast and run in one call.
            shape = np.broadcast_shapes(x.shape[:-2], y.shape[:-2])
            xs = quantize(np.broadcast_to(x, shape + x.shape[-2:]), tc.input_format)
            ys = quantize(np.broadcast_to(y, shape + y.shape[-2:]), tc.input_format)
            return tc_matmul(xs, ys, tc).astype(np.result_type(x, y), copy=False)
        return tc_product

    def product(x, y):
        if x.ndim == 2 and y.ndim == 2:
            return gemm(x, y).astype(np.result_type(x, y), copy=False)
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
    # The FP8 training recipe (E4M3 forward, E5M2 backward) with IEEE overflow, so that a
    # loss scaler sees an overflow as Inf/NaN (float8_e4m3fn has no Inf: overflow gives NaN).
    "fp8_hybrid": lambda: Policy(
        "fp8_hybrid", activations="float8_e4m3fn", weights="float8_e4m3fn",
        activation_grads="float8_e5m2", weight_grads="float8_e5m2"),
    # fp16 forward values and weights, FP8 gradients (IEEE overflow).
    "e5m2-grads": lambda: Policy(
        "e5m2-grads", activations="float16", weights="float16",
        activation_grads="float8_e5m2", weight_grads="float8_e5m2"),
    "e4m3-grads": lambda: Policy(
        "e4m3-grads", activations="float16", weights="float16",
        activation_grads="float8_e4m3fn", weight_grads="float8_e4m3fn"),
}

#: Role groups of the command-line policy syntax (see :func:`policy_from_text`).
ROLE_GROUPS = {"fwd": ("activations", "weights"), "grads": ("activation_grads", "weight_grads"),
               "all": ("activations", "weights", "activation_grads", "weight_grads")}


def policy_label(spec) -> str:
    """A short label of a policy spec: a preset's or word's text, a dict's ``name`` (or its
    role=cast items), a Policy's name."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        return spec.get("name") or spec.get("preset") or "+".join(
            f"{k}={v}" for k, v in spec.items() if k in FIELDS and v is not None)
    return getattr(spec, "name", type(spec).__name__)


def policy_from_text(text: str) -> "str | dict":
    """The policy spec of a command-line word: a preset name (returned as it is); a cast
    ``FORMAT[:ROUNDING[:OVERFLOW]]`` such as ``e3m4:sr`` (for activations, weights and both
    gradients: ``{"name": text, ...}``); or ``ROLE=CAST`` items joined by ``+`` or ``,``
    (``fwd=e4m3+grads=e5m2:sr``), where ROLE is a :data:`FIELDS` name (``-`` may stand for
    ``_``) or a group of :data:`ROLE_GROUPS`; roles not named stay float32. The result is what
    :func:`policy` takes (plain data, so run records can rebuild it).

    Raises:
        ValueError: unknown role, preset or format; the message names it.
    """
    text = text.strip()
    if text in PRESETS:
        return text
    if "=" not in text:
        try:
            cast = Cast.parse(text)
        except ValueError as e:
            raise ValueError(f"unknown precision policy {text!r}: neither a preset ({', '.join(PRESETS)}) nor "
                             f"a cast FORMAT[:ROUNDING[:OVERFLOW]] nor ROLE=CAST items: {e}") from None
        if cast is None:  # fp32 spelt as a format
            return "fp32"
        return {"name": text, **{f: text for f in ROLE_GROUPS["all"]}}
    spec: dict = {"name": text}
    for item in text.replace(",", "+").split("+"):
        role, eq, cast = (part.strip() for part in item.partition("="))
        if not eq or not role or not cast:
            raise ValueError(f"policy {text!r}: {item!r} is not ROLE=FORMAT[:ROUNDING[:OVERFLOW]]")
        role = role.replace("-", "_")
        roles = ROLE_GROUPS.get(role, (role,))
        for r in roles:
            if r not in FIELDS:
                raise ValueError(f"policy {text!r}: unknown role {role!r}; roles: "
                                 f"{', '.join(FIELDS)}, groups {', '.join(ROLE_GROUPS)}")
            if r in spec:
                raise ValueError(f"policy {text!r}: role {r} is given twice (separate two "
                                 "policies with ';' or a second --policies)")
            Cast.parse(cast)  # fail here, naming the cast
            spec[r] = cast
    return spec


def policy(spec) -> Policy:
    """A Policy from a Policy, a preset name or another command-line word of
    :func:`policy_from_text` (``"e3m4:sr"``, ``"fwd=e4m3+grads=e5m2"``), or a dict of
    :class:`Policy` arguments (``{"preset": name, ...}`` starts from a preset and replaces the
    given fields)."""
    if isinstance(spec, Policy):
        return spec
    if isinstance(spec, str):
        if spec in PRESETS:
            return PRESETS[spec]()
        return policy(policy_from_text(spec))
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
