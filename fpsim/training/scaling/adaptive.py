"""Adaptive loss scaling (ALS) — specs/loss-scaling.md section 3.

ALS is from Zhao, Vogel, Ahmed: "Adaptive Loss Scaling for Mixed Precision Training",
arXiv 1910.12385 (2019); its IJCAI-20 version is Zhao, Vogel, Ahmed, Luk: "Reducing Underflow
in Mixed Precision Training by Gradient Scaling". Two presets (:data:`PRESETS`) are selectable
by name in :func:`fpsim.training.scaling.scaler`: ``adaptive-paper``, the reference code as
the published Jan-2020 runs used it, and ``adaptive``, fpsim's version with its extensions.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from fpsim.engine import custom
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as parse_format
from fpsim.training.scaling.base import Scaler, StepStats


def _erfinv(y: float) -> float:
    """Inverse error function of ``y`` in (-1, 1), as a float. scipy is imported here, on the
    first adaptive scaler, not when fpsim (or the scaling package) is imported: it costs ~0.3 s."""
    from scipy.special import erfinv

    return float(erfinv(y))

#: Statistic variants of the reference code (specs/loss-scaling.md 3.2).
VARIANTS = ("A", "A0", "B")
#: Name of the cast site at the model output (the float32 loss gradient entering the format).
OUTPUT_SITE = "loss-cast"
#: The largest float16 value: ``relative`` caps measure SB and AB against it.
FP16_MAX = 65504.0
#: How parameter gradients are unscaled (see :class:`AdaptiveScaler`, ``unscale``).
UNSCALES = ("float32", "format")
#: How SB and AB are read (see :class:`AdaptiveScaler`, ``caps``).
CAPS = ("relative", "absolute")

#: The named presets: constructor arguments of :class:`AdaptiveScaler` (the gradient format
#: comes from the run). ``adaptive-paper`` is the reference code as the published Jan-2020
#: ("IJCAI") SSD / SegNet runs used it (specs 3.7, 4.2-4.3: statistic variant B,
#: ``F_100_AB_65504_SB_65504``, T_uf 1e-3, no cast site for a classifier's output, weight
#: gradients stored unscaled in the format). ``adaptive`` is fpsim's version: the HEAD
#: statistic (variant A) and defaults, plus the extensions, each of which can be switched off
#: on its own (``output_site=None``, ``unscale="format"``, ``wgrad_guard=False``), and the
#: optional relative caps (``caps="relative"``), which are not the default: in E4M3 they
#: leave SB' = 1, AB' = 7 and the scaler trains no better than no scaling at all (measured in
#: docs/loss_scaling.md).
PRESETS = {
    "adaptive": dict(variant="A", t_uf=1e-3, scale_bound=16.0, accum_bound=1024.0,
                     caps="absolute", period=1, power_of_two=True, init_scale=1.0,
                     output_site="lognormal", unscale="float32", wgrad_guard=True),
    "adaptive-paper": dict(variant="B", t_uf=1e-3, scale_bound=65504.0, accum_bound=65504.0,
                           caps="absolute", period=100, power_of_two=True, init_scale=1.0,
                           output_site=None, unscale="format", wgrad_guard=False),
}


def _tag_scale(tag) -> float:
    return 1.0 if tag is None else float(tag)


class AdaptiveScaler(Scaler):
    """Per-site loss scales computed during backward from the statistics of the incoming
    gradient and the layer weight; no global loss scale.

    At each GEMM site (Linear, Conv2d), whose incoming activation gradient ``g`` (rounded to the
    gradient format) already carries the cumulative scale ``a``::

        sigma = sqrt(E[g^2] E[W^2]) * sqrt(K / 2)    # variant A (default); A0: no sqrt(K/2);
                                                      # B: sigma = std(g), W ignored
        s = u_min / (sqrt(2) erfinv(T_uf) sigma)      # P(|s x| < u_min) = T_uf for x ~ N(0, sigma^2)
        s = max(s, 1)                                 # never scale down for underflow
        s = min(s, (u_max / K) / o_max)               # overflow guard (B: u_max / max|g|); may go < 1
        (the three lines above are recomputed every `period` calls of the site, else reused)
        s = min(s, AB' / a); s = min(s, SB')          # cumulative and per-site caps
        s = 2^floor(log2 s)                           # power-of-two rounding
        grad of the layer input  <- (g W) * s, carrying a * s   # scales compose down the network
        grad of the layer weight <- g^T x at scale a, rounded, then divided by a

    ``K`` is the backward fan-in (Linear: out_features; Conv2d: out_channels * kh * kw),
    ``o_max`` the largest magnitude of a product of the extremes of g and W. ``u_min`` and
    ``u_max`` are the gradient format's smallest positive value and largest finite value, so
    the same defaults serve fp16, bf16 and FP8. ``SB'`` and ``AB'`` are the caps as ``caps``
    reads them:

    - ``caps="absolute"`` (default; the reference): ``SB' = SB``, ``AB' = AB``, numbers as
      given.
    - ``caps="relative"``: SB and AB are read as fp16 numbers and moved to the
      gradient format's range, ``SB' = max(1, SB * u_max / 65504)`` and
      ``AB' = max(1, AB * u_max / 65504)``, so they leave the same headroom below ``u_max`` as
      SB and AB leave below 65504 in fp16. For fp16 this is the absolute rule exactly; for
      E4M3 (u_max 448) SB = 16, AB = 1024 become 1 and 7.0; for E5M2 (57344) 14.0 and 896.4;
      for bf16 about 8.3e34 and 5.3e36 (the caps are effectively off).

    Every parameter gradient reaches the optimizer at true magnitude, divided by the scale
    ``a`` it was computed at, as ``unscale`` says:

    - ``unscale="float32"`` (default): ``grad = R / a`` in float32, where ``R`` is the
      gradient as the weight-gradient cast rounded it at scale ``a`` (no second rounding).
    - ``unscale="format"`` (the reference, which stores the unscaled gradient in fp16):
      ``grad = quantize(float64(R) / a, format)``, round-to-nearest-even, IEEE overflow (a
      single rounding; for a power-of-two ``a`` this is ``quantize(float32(R) / a)``), so
      small true-magnitude gradients flush or lose bits as they do in the reference.

    BatchNorm, ReLU, pooling and reshapes pass the scale through. Where a tensor feeds several
    consumers (residual blocks), the cotangents arriving with scales ``a_i`` are rescaled to one
    target before they are added: the largest ``a_i`` with ``max_i(max|g_i| / a_i) * a < u_max``
    (else the smallest, halved down to 1/8 until it fits). A step with a non-finite parameter
    gradient is skipped; there is no global back-off.

    Weight-gradient guard (``wgrad_guard=True``, default; the reference has none). The
    overflow guard above bounds only the data-gradient GEMM ``g W``; the weight-gradient GEMM
    ``g^T x`` of each layer is computed at the incoming scale ``a`` and can overflow the format
    (a sum over the batch). An op on every parameter's gradient, between the weight-gradient
    GEMM and its cast, sees the float32 gradient ``G`` at scale ``a`` and::

        if max|G| > u_max (and finite):
            k = the smallest k >= 1 with max|G| * 2^-k <= u_max
            G <- G * 2^-k, carried scale a <- a * 2^-k       # the cast rounds G * 2^-k, and the
                                                             # unscale divides by a * 2^-k

    ``max|G| > u_max`` is the exact condition under which some rounding mode (stochastic,
    round-up) can round an element beyond ``u_max``; under round-to-nearest, values below
    ``u_max + ulp(u_max) / 2`` would still round to ``u_max``, so there the guard halves
    without need (conservatively: it only costs headroom at the small end). The
    multiplication by ``2^-k`` is exact in float32 (barring values below float32's normal
    range); the cost is at the cast, where the smallest elements, now ``2^k`` times smaller,
    round with fewer significand bits (subnormals) or flush. The guard uses the scaler's
    gradient format (the policy's ``activation_grads``) for ``u_max``, also where the policy
    rounds weight gradients into another format. Each firing is counted in
    :attr:`guard_events` (and this step's in :attr:`guard_last`).

    Differences from the reference code (all in fpsim's favour of exactness): statistics are
    computed in float64; scales are float64 numbers (no fp16 cap on ``a``); the data-gradient
    product is scaled after the float32 GEMM (bit-identical to scaling the fp16 input for
    power-of-two scales, as the GEMM's products and sums are exact multiples); merged branches
    are rescaled in float32 and rounded once, at the next cast site; ``u_min`` is the format's
    smallest subnormal (2^-24 for fp16, where the reference hard-codes 6.0e-8). Limitation:
    with a policy's accumulation model (``Policy(matmul=...)``) the data-gradient GEMM rounds
    its partial sums at the incoming scale ``a``, before ``s`` is applied, so ALS does not
    protect those roundings (the reference scales the GEMM's input).

    Args:
        format: the gradient format (u_min, u_max).
        t_uf: target underflow rate T_uf. scale_bound: SB. accum_bound: AB.
        period: recompute the unbound scale every ``period`` calls per site (N).
        variant: ``A``, ``A0`` or ``B``. power_of_two: round scales down to powers of two.
        init_scale: scale of the gradient at the loss (1 in the reference).
        output_site: the statistic of the cast site at the model output, where the float32
            gradient of the loss enters the gradient format (the reference's
            ``AdaLossCastFunction``): ``lognormal`` (default; as the reference's SSD and SegNet
            heads use it: ``s = u_min / exp(mu + Phi^-1(T_uf) sigma)`` over ln|g| of the
            non-zero values, then ``min(s, u_max / max|g|)``), ``gaussian`` (the gradient-only
            formula), or None (no site: the output gradient is rounded at ``init_scale``).
        unscale: ``float32`` (default) or ``format`` (see above).
        caps: ``absolute`` (default) or ``relative`` (see above).
        wgrad_guard: place the weight-gradient guard (default True; see above).
    """

    name = "adaptive"

    def __init__(self, format: "str | Format" = "float16", t_uf: float = 1e-3,
                 scale_bound: float = 16.0, accum_bound: float = 1024.0, period: int = 1,
                 variant: str = "A", power_of_two: bool = True, init_scale: float = 1.0,
                 output_site: str | None = "lognormal", unscale: str = "float32",
                 caps: str = "absolute", wgrad_guard: bool = True):
        fmt = format if isinstance(format, Format) else parse_format(format)
        if variant not in VARIANTS:
            raise ValueError(f"unknown ALS statistic variant {variant!r}; choose from {VARIANTS}")
        if not 0 < t_uf < 1:
            raise ValueError(f"t_uf must be in (0, 1), got {t_uf}")
        if not (scale_bound >= 1 and accum_bound >= 1 and init_scale > 0):
            raise ValueError("scale_bound and accum_bound must be >= 1, init_scale > 0")
        if int(period) != period or period < 1:
            raise ValueError(f"period must be a positive integer, got {period}")
        if output_site not in ("lognormal", "gaussian", None):
            raise ValueError(f"output_site must be 'lognormal', 'gaussian' or None, got "
                             f"{output_site!r}")
        if unscale not in UNSCALES:
            raise ValueError(f"unscale must be one of {UNSCALES}, got {unscale!r}")
        if caps not in CAPS:
            raise ValueError(f"caps must be one of {CAPS}, got {caps!r}")
        if wgrad_guard not in (True, False):
            raise ValueError(f"wgrad_guard must be True or False, got {wgrad_guard!r}")
        self.output_site = output_site
        self.format = fmt
        self.u_min = float(fmt.min_subnormal if fmt.subnormals else fmt.min_normal)
        self.u_max = float(fmt.max)
        self.t_uf, self.sb, self.ab = float(t_uf), float(scale_bound), float(accum_bound)
        self.period, self.variant, self.power_of_two = int(period), variant, power_of_two
        self.init_scale = float(init_scale)
        self.unscale_mode, self.caps, self.wgrad_guard = unscale, caps, bool(wgrad_guard)
        #: the caps SB', AB' as the site scale applies them (see ``caps``)
        if caps == "relative":
            self.sb_eff = max(1.0, self.sb * self.u_max / FP16_MAX)
            self.ab_eff = max(1.0, self.ab * self.u_max / FP16_MAX)
        else:
            self.sb_eff, self.ab_eff = self.sb, self.ab
        #: the preset this scaler was built from (:meth:`from_preset`), for :meth:`describe`
        self.preset = None
        self.c = math.sqrt(2.0) * _erfinv(self.t_uf)
        self.enabled = True
        self._calls: dict[str, int] = {}
        self._unbound: dict[str, float] = {}
        self._pending: dict[str, float] = {}
        self._weights: dict[str, np.ndarray] = {}
        #: this step's scales: GEMM site -> (carried scale a, local scale s)
        self.last: dict[str, tuple[float, float]] = {}
        #: how many times the weight-gradient guard has fired (parameter gradients scaled down),
        #: over the scaler's life (kept in :meth:`state_dict`)
        self.guard_events = 0
        #: this step's guard firings: parameter name -> (carried scale a, factor 2^-k)
        self.guard_last: dict[str, tuple[float, float]] = {}

    @classmethod
    def from_preset(cls, preset: str, format: "str | Format" = "float16", **overrides):
        """The scaler of :data:`PRESETS` ``[preset]`` for ``format``, with ``overrides``
        replacing any of its arguments (e.g. ``from_preset("adaptive", output_site=None)``)."""
        if preset not in PRESETS:
            raise ValueError(f"unknown ALS preset {preset!r}; choose from {', '.join(PRESETS)}")
        s = cls(format, **{**PRESETS[preset], **overrides})
        s.preset = preset
        return s

    def describe(self) -> str:
        """The preset (or ``adaptive``) and every switch, e.g. ``adaptive-paper (variant B,
        T_uf=0.001, SB=65504, AB=65504 [absolute], N=100, output site none, unscale format,
        wgrad guard off)``."""
        caps = "absolute" if self.caps == "absolute" else (
            f"relative: SB'={self.sb_eff:.4g}, AB'={self.ab_eff:.4g} in {self.format.name}")
        return (f"{self.preset or self.name} (variant {self.variant}, T_uf={self.t_uf:g}, "
                f"SB={self.sb:g}, AB={self.ab:g} [{caps}], N={self.period}, "
                f"output site {self.output_site or 'none'}, unscale {self.unscale_mode}, "
                f"wgrad guard {'on' if self.wgrad_guard else 'off'}"
                f"{'' if self.power_of_two else ', no power-of-two rounding'}"
                f"{'' if self.init_scale == 1 else f', init scale {self.init_scale:g}'})")

    def loss_scale(self) -> float:
        return self.init_scale

    # -- the scale of one site -----------------------------------------------------------------
    def unbound_scale(self, g: np.ndarray, w: np.ndarray | None) -> float:
        """The statistics-driven scale before the caps (float64 statistics)."""
        g = np.asarray(g, np.float64)
        if g.size == 0:
            return 1.0
        gmax, gmin = float(g.max()), float(g.min())
        if w is None or self.variant == "B":
            sigma, umax = float(g.std()), self.u_max
            omax = max(abs(gmax), abs(gmin))
        else:
            w = np.asarray(w, np.float64)
            k = w.shape[0] * int(np.prod(w.shape[2:]))  # backward fan-in
            sigma = math.sqrt((g.var() + g.mean() ** 2) * (w.var() + w.mean() ** 2))
            if self.variant == "A":
                sigma *= math.sqrt(0.5 * k)
            umax = self.u_max / k
            wmax, wmin = float(w.max()), float(w.min())
            omax = max(abs(gmax * wmax), abs(gmin * wmin), abs(gmax * wmin), abs(gmin * wmax))
        if sigma == 0 or not math.isfinite(sigma):
            return 1.0
        s = max(self.u_min / (self.c * sigma), 1.0)
        if omax > 0:
            s = min(s, umax / omax)
        return s

    def lognormal_scale(self, g: np.ndarray) -> float:
        """Unbound scale of a cast site under a log-normal model of |g| (non-zero values)."""
        a = np.abs(np.asarray(g, np.float64))
        nz = a[a > 0]
        if nz.size == 0 or not np.isfinite(nz).all():
            return 1.0
        logs = np.log(nz)
        s = math.exp(math.log(self.u_min) - logs.mean()
                     - logs.std() * math.sqrt(2.0) * _erfinv(2 * self.t_uf - 1))
        return min(max(s, 1.0), self.u_max / float(nz.max()))

    def site_scale(self, site: str, grad, weight, carried_scale: float,
                   lognormal: bool = False) -> float:
        """The local scale of ``site`` (see the class docstring); ``weight`` None means a
        gradient-only site; ``lognormal`` uses :meth:`lognormal_scale`."""
        calls = self._calls.get(site, 0)
        if calls % self.period == 0 or site not in self._unbound:
            self._unbound[site] = (self.lognormal_scale(grad) if lognormal
                                   else self.unbound_scale(grad, weight))
        self._calls[site] = calls + 1
        s = min(self._unbound[site], self.ab_eff / carried_scale, self.sb_eff)
        if self.power_of_two:
            s = 2.0 ** math.floor(math.log2(s)) if s > 0 and math.isfinite(s) else 1.0
        return s

    def merge(self, a, b):
        """Combine cotangents ``(g1, a1)`` and ``(g2, a2)`` of a tensor used twice (fan-out)."""
        (g1, a1), (g2, a2) = a, b
        a1, a2 = _tag_scale(a1), _tag_scale(a2)
        m = max(float(np.abs(g1).max(initial=0)) / a1, float(np.abs(g2).max(initial=0)) / a2)
        target = self.merge_target((a1, a2), m)
        dt = g1.dtype.type
        return g1 * dt(target / a1) + g2 * dt(target / a2), target

    def merge_target(self, scales, m: float) -> float:
        """The one scale that cotangents carried at ``scales`` are brought to before they are
        added, for a true-magnitude maximum ``m`` of the values: the largest of ``scales`` with
        ``m * scale < u_max``, else the smallest halved (down to 1/8) until it fits."""
        target = next((s for s in sorted(set(scales), reverse=True) if m * s < self.u_max),
                      None)
        if target is None:
            target = min(scales)
            while target >= 0.125 and m * target >= self.u_max:
                target /= 2
        return target

    def guard_factor(self, m: float) -> float:
        """The weight-gradient guard's factor ``2^-k`` for a gradient whose largest magnitude
        at its carried scale is ``m`` (class docstring), or 1.0 where it fits (or is NaN / Inf,
        where nothing can help)."""
        if not (self.u_max < m < math.inf):
            return 1.0
        # m / u_max = f * 2^e with f in [0.5, 1): m * 2^-e <= u_max, m * 2^-(e-1) > u_max
        # unless f == 0.5 exactly (then e - 1 suffices); e >= 1 since m > u_max.
        f, k = math.frexp(m / self.u_max)
        k = k - 1 if f == 0.5 and k > 1 else k
        while m * 2.0 ** -k > self.u_max:  # (guards the division's rounding)
            k += 1
        while k > 1 and m * 2.0 ** -(k - 1) <= self.u_max:
            k -= 1
        return 2.0 ** -k

    def unscale(self, grads: list) -> list:
        """Per-site scaling unscales every parameter gradient during backward: unchanged."""
        return grads

    def report(self) -> dict:
        """This step's scales: GEMM site (and ``loss-cast``) -> (carried scale a, local s)."""
        return dict(self.last)

    def notes(self) -> dict:
        """This step's weight-gradient guard firings: ``{parameter: message}``."""
        return {name: f"weight-gradient guard: gradient carried at scale {a:g} over the "
                      f"format's max, scaled by {f:g} before rounding"
                for name, (a, f) in self.guard_last.items()}

    def update(self, stats: StepStats) -> bool:
        """End of the step: forget its pending and reported scales; skip a non-finite step."""
        self._pending.clear()
        self.last = {}
        self.guard_last = {}
        return not stats.found_inf

    @contextlib.contextmanager
    def suspended(self):
        """Inside, every ALS op passes values and tags through and no scale is computed."""
        old, self.enabled = self.enabled, False
        try:
            yield self
        finally:
            self.enabled = old

    def state_dict(self) -> dict:
        return {"calls": dict(self._calls), "unbound": dict(self._unbound),
                "guard_events": self.guard_events}

    def load_state_dict(self, state: dict) -> None:
        self._calls = {k: int(v) for k, v in state["calls"].items()}
        self._unbound = {k: float(v) for k, v in state["unbound"].items()}
        self.guard_events = int(state.get("guard_events", 0))  # (older checkpoints: none)

    # -- placement in a model ------------------------------------------------------------------
    def attach(self, model) -> list[str]:
        """Place the scaler's ops in ``model`` through the modules' hooks (replacing any this
        scaler placed before; before or after a precision policy's ``apply``, the hook orders
        fix where they run relative to the casts): at every Linear / Conv2d a statistics op on
        the output that runs after the output cast going backward (so it sees the rounded
        gradient) and a scale op on the input; an unscale op on every parameter before its cast
        going forward (so the gradient is rounded at scale and unscaled after) and, with
        ``wgrad_guard``, the guard after the cast going forward (so going backward it sees the
        float32 gradient before the cast rounds it). Returns the GEMM site names."""
        from fpsim.training.nn import (ORDER_AFTER_CASTS, ORDER_BEFORE_CASTS, Conv2d, Linear,
                                       Parameter)
        sites = []
        for mname, m in model.named_modules():
            m.remove_hooks(self)
            if any(isinstance(v, Parameter) for v in vars(m).values()):
                m.register_hook("param", lambda mod, pname, p: self._unscale_op(p),
                                owner=self, order=ORDER_BEFORE_CASTS)
                if self.wgrad_guard:
                    m.register_hook("param", lambda mod, pname, p, prefix=mname + "." * bool(
                        mname): self._guard_op(prefix + pname, p), owner=self,
                        order=ORDER_AFTER_CASTS)
            if not isinstance(m, (Linear, Conv2d)):
                continue
            site = mname or "output"
            sites.append(site)
            m.register_hook("param", lambda mod, pname, p, site=site: self._keep_weight(
                site, pname, p), owner=self, order=ORDER_AFTER_CASTS)
            m.register_hook("output", lambda mod, y, site=site: custom(
                y, _identity, lambda g, t, site=site: self._measure(site, g, t), tagged=True),
                owner=self, order=ORDER_BEFORE_CASTS)
            m.register_hook("input", lambda mod, x, site=site: custom(
                x, _identity, lambda g, t, site=site: self._apply(site, g, t), tagged=True),
                owner=self, order=ORDER_AFTER_CASTS)
        if self.output_site is not None:
            model.register_hook("output", lambda mod, y: custom(
                y, _identity, self._output_cast, tagged=True), owner=self,
                order=ORDER_AFTER_CASTS + 1)
            sites.append(OUTPUT_SITE)
        return sites

    def _output_cast(self, g, tag):
        """Scale the float32 gradient of the loss before the output cast rounds it."""
        if not self.enabled:
            return g, tag
        a = _tag_scale(tag)
        s = self.site_scale(OUTPUT_SITE, g, None, a, lognormal=self.output_site == "lognormal")
        self.last[OUTPUT_SITE] = (a, s)
        return (g * g.dtype.type(s), a * s) if s != 1.0 else (g, tag)

    def _keep_weight(self, site, pname, p):
        if pname == "weight":
            self._weights[site] = p.data
        return p

    def _measure(self, site, g, tag):
        if self.enabled:
            a = _tag_scale(tag)
            s = self.site_scale(site, g, self._weights.get(site), a)
            self._pending[site] = s
            self.last[site] = (a, s)
        return g, tag

    def _apply(self, site, g, tag):
        s = self._pending.pop(site, 1.0)
        if not self.enabled or s == 1.0:
            return g, tag
        return g * g.dtype.type(s), _tag_scale(tag) * s

    def _unscale_op(self, p):
        def back(g, tag):
            if not self.enabled:
                return g, tag
            a = _tag_scale(tag)
            if self.unscale_mode == "format":
                from fpsim.numerics.convert import quantize  # (the kernels load on first use)
                # One rounding of the exact quotient (float64 holds R / a exactly for a power
                # of two, and rounds it once otherwise, far below the format's precision).
                q = quantize(g.astype(np.float64) / a, self.format)
                return q.astype(g.dtype, copy=False), 1.0
            if a == 1.0:
                return g, tag
            return g / g.dtype.type(a), 1.0
        return custom(p, _identity, back, tagged=True)

    def _guard_op(self, name, p):
        """The weight-gradient guard on parameter ``name`` (class docstring)."""
        def back(g, tag):
            if not self.enabled or g.size == 0:
                return g, tag
            factor = self.guard_factor(float(np.max(np.abs(g))))
            if factor == 1.0:
                return g, tag
            a = _tag_scale(tag)
            self.guard_events += 1
            self.guard_last[name] = (a, factor)
            return g * g.dtype.type(factor), a * factor
        return custom(p, _identity, back, tagged=True)


def _identity(v):
    return v
