"""The two ALS presets (``adaptive-paper``, ``adaptive``) and the switches of fpsim's
extensions: per-site scales against specs/loss-scaling.md section 3 evaluated with numpy, the
reference's second rounding of unscaled weight gradients bit for bit, and the weight-gradient
guard on a crafted overflow."""

import math

import numpy as np
import pytest
from scipy.special import erfinv

import fpsim
from fpsim import engine as E
from fpsim import models
from fpsim.training import nn
from fpsim.training.precision import policy as make_policy
from fpsim.training.scaling import AdaptiveScaler, StepStats, scaler

from _als_spec import spec_capped, spec_unbound

SITES = ["net.1", "net.3", "net.5", "net.7"]


def _mlp(seed=3):
    return models.build("mlp", {"input_shape": (1, 8, 8), "num_classes": 10,
                                "hidden": (64, 64, 64), "seed": seed})


def _backward(model, ctx, als, x, y, seed):
    """One backward pass with the loss times ``seed`` (tiny gradients); the cotangent's tag
    stays the scaler's scale, as in training. Returns the captured site gradients."""
    with ctx.capturing() as captured:
        loss = E.cross_entropy(model(E.Tensor(x)), y)
        with np.errstate(over="ignore", invalid="ignore"):
            loss.backward(seed * als.loss_scale(), tag=als.loss_scale(), merge=als.merge)
    return captured


def _batch(seed, n=32):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 10, n)


def _check_sites(als, model, captured, fmt, unbound, sb, ab, variant, t_uf=1e-3):
    """Every GEMM site's (carried, local) scale equals the spec's; ``unbound[site]`` is the
    pre-cap scale to use (None: evaluate it on this pass's gradient and weight, and store it).
    Returns the local scales, output layer first."""
    modules = dict(model.named_modules())
    carried = als.loss_scale()
    if "loss-cast" in als.last:
        carried *= als.last["loss-cast"][1]
    scales = []
    for site in reversed(SITES):
        if unbound.get(site) is None:
            w = fpsim.quantize(modules[site].weight.data, fmt)
            unbound[site] = spec_unbound(captured[site], w, fmt.min_subnormal, fmt.max, t_uf,
                                         variant)
        want = spec_capped(unbound[site], carried, sb, ab)
        assert als.last[site] == (carried, want), (site, als.last[site], carried, want)
        carried *= want
        scales.append(want)
    return scales


def test_paper_preset_scales_follow_variant_b_absolute_caps_and_period_100():
    """adaptive-paper: variant B (std of g alone), SB = AB = 65504 as numbers, no output site,
    and period 100: pass 1 computes the unbound scales, pass 2 (other data, 16x larger
    gradients) reuses them under its own carried scales, pass 101 recomputes them."""
    model = _mlp()
    ctx = make_policy("mixed_fp16").apply(model).context
    als = scaler("adaptive-paper", "float16")
    assert als.attach(model) == SITES  # no loss-cast site
    f16 = fpsim.format("float16")
    x, y = _batch(0)
    first = {}
    s1 = _check_sites(als, model, _backward(model, ctx, als, x, y, 2.0 ** -14), f16, first,
                      65504.0, 65504.0, "B")
    assert max(s1) > 16 and math.prod(s1) > 1024  # beyond the caps of `adaptive`
    als.update(StepStats(False))
    x2, y2 = _batch(1)
    captured = _backward(model, ctx, als, x2, y2, 2.0 ** -10)
    _check_sites(als, model, captured, f16, dict(first), 65504.0, 65504.0, "B")  # reused
    with pytest.raises(AssertionError):  # (the recomputed formula would differ: the test bites)
        _check_sites(als, model, captured, f16, {}, 65504.0, 65504.0, "B")
    als.update(StepStats(False))
    state = als.state_dict()
    assert state["calls"] == {s: 2 for s in SITES}
    als.load_state_dict({**state, "calls": {s: 100 for s in SITES}})  # pass 101 is next
    captured = _backward(model, ctx, als, x2, y2, 2.0 ** -10)
    _check_sites(als, model, captured, f16, {}, 65504.0, 65504.0, "B")  # recomputed


@pytest.mark.parametrize("grads, seed", [("float8_e4m3fn", 1.0), ("float8_e5m2", 2.0 ** -6)])
def test_adaptive_relative_caps_in_fp8_gradient_formats(grads, seed):
    """adaptive (variant A, lognormal output site) in an FP8 gradient format: the caps are
    SB' = max(1, 16 u_max / 65504), AB' = max(1, 1024 u_max / 65504) (E4M3: 1 and 7.003;
    E5M2: 14.007 and 896.4), and the scales differ from what the fp16 numbers would give."""
    model = _mlp()
    pol = make_policy({"preset": "fp8_e4m3_e5m2", "activation_grads": f"{grads}:rne:saturate"})
    ctx = pol.apply(model).context
    als = scaler("adaptive:caps=relative", grads)
    assert als.attach(model) == SITES + ["loss-cast"]
    fmt = fpsim.format(grads)
    sb, ab = max(1.0, 16 * fmt.max / 65504), max(1.0, 1024 * fmt.max / 65504)
    assert (als.sb_eff, als.ab_eff) == (sb, ab)
    x, y = _batch(0)
    captured = _backward(model, ctx, als, x, y, seed)
    # the output site: log-normal statistics of the float32 loss gradient (specs 3.2)
    out = model(E.Tensor(x)).data.astype(np.float64)
    p = np.exp(out - out.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(32), y] -= 1
    g = np.abs(p / 32 * seed)
    logs = np.log(g[g > 0])
    s0 = math.exp(math.log(fmt.min_subnormal) - logs.mean()
                  - logs.std() * math.sqrt(2) * erfinv(2e-3 - 1))
    s0 = min(max(s0, 1.0), fmt.max / g.max())
    assert als.last["loss-cast"] == (1.0, spec_capped(s0, 1.0, sb, ab))
    unbound = {}
    relative = _check_sites(als, model, captured, fmt, unbound, sb, ab, "A")
    # With the fp16 numbers as caps, some site would have scaled differently.
    carried, absolute = spec_capped(s0, 1.0, 16, 1024), []
    for site in reversed(SITES):
        absolute.append(spec_capped(unbound[site], carried, 16, 1024))
        carried *= absolute[-1]
    assert [spec_capped(s0, 1.0, 16, 1024)] + absolute != [als.last["loss-cast"][1]] + relative


def _recorder(model, order, log):
    """Record ``(gradient, tag)`` of every parameter at hook ``order`` going backward."""
    for mname, m in model.named_modules():
        if any(isinstance(v, nn.Parameter) for v in vars(m).values()):
            def hook(mod, pname, p, prefix=mname):
                def back(g, tag):
                    log[f"{prefix}.{pname}"] = (g.copy(), tag)
                    return g, tag
                return E.custom(p, lambda v: v, back, tagged=True)
            m.register_hook("param", hook, owner=log, order=order)


@pytest.mark.parametrize("spec", ["adaptive-paper", "adaptive:unscale=format"])
def test_format_unscale_rounds_the_unscaled_weight_gradient_again(spec):
    """unscale 'format': each parameter gradient is quantize(float32(R) / a, fp16), R the
    gradient the weight-gradient cast rounded at scale a — bit for bit; where a > 1 that
    flushes or shortens the smallest values, unlike the float32 division."""
    model = _mlp()
    ctx = make_policy("mixed_fp16").apply(model).context
    als = scaler(spec, "float16")
    als.attach(model)
    rounded = {}
    # between the unscale op (ORDER_BEFORE_CASTS) and the cast (ORDER_CASTS): sees R and a
    _recorder(model, (nn.ORDER_BEFORE_CASTS + nn.ORDER_CASTS) // 2, rounded)
    x, y = _batch(0)
    _backward(model, ctx, als, x, y, 2.0 ** -14)
    differs = 0
    for name, p in model.named_parameters():
        r, a = rounded[name]
        a = 1.0 if a is None else a
        want = fpsim.quantize(r / np.float32(a), "float16")
        assert want.dtype == np.float32 and p.grad.dtype == np.float32
        assert np.array_equal(p.grad.view(np.uint32), want.view(np.uint32)), name
        differs += int((want != r / np.float32(a)).sum())
    assert differs > 0


def _overflow_case(wgrad_guard):
    """One Linear(8 -> 4) under mixed_fp16, inputs ~200, every label 1, loss scale 2^12 and no
    output site: the output gradient fits fp16 (|g| <= 16) but g^T x reaches ~6e5."""
    model = nn.Sequential(nn.Linear(8, 4, rng=1))
    ctx = make_policy("mixed_fp16").apply(model).context
    als = AdaptiveScaler("float16", output_site=None, init_scale=2.0 ** 12,
                         wgrad_guard=wgrad_guard)
    als.attach(model)
    seen = {}
    # after the guard going forward (ORDER_AFTER_CASTS + 1): backward sees the unguarded G
    _recorder(model, nn.ORDER_AFTER_CASTS + 1, seen)
    rng = np.random.default_rng(4)
    x = fpsim.quantize(rng.uniform(150, 250, (256, 8)), "float16").astype(np.float32)
    y = np.ones(256, np.int64)
    with ctx.capturing() as captured:
        loss = E.cross_entropy(model(E.Tensor(x)), y)
        with np.errstate(over="ignore", invalid="ignore"):
            loss.backward(als.loss_scale(), tag=als.loss_scale(), merge=als.merge)
    finite = all(np.isfinite(p.grad).all() for p in model.parameters())
    fired = dict(als.guard_last)  # (update() starts the next step: it forgets them)
    grads = {n: p.grad for n, p in model.named_parameters()}
    return grads, als, fired, seen, captured, x, als.update(StepStats(not finite))


def test_wgrad_guard_scales_an_overflowing_weight_gradient_down():
    """The guard fires on the weight (not the bias), the step is not skipped, and the
    gradient is the unguarded float32 gradient G times 2^-k rounded into fp16, divided by
    the reduced scale 2^12 * 2^-k, with k the smallest k >= 1 for which max|G| 2^-k <= 65504."""
    grads, als, fired, seen, captured, x, stepped = _overflow_case(True)
    assert stepped
    g32, tag = seen["0.weight"]
    assert tag == 2.0 ** 12
    gref = captured["0"].astype(np.float64).T @ x.astype(np.float64)  # (sanity: G = g^T x)
    np.testing.assert_allclose(g32, gref, rtol=1e-5)
    m = float(np.abs(g32).max())
    assert m > 65504 * 4
    k = math.ceil(math.log2(m / 65504))
    assert m * 2.0 ** -k <= 65504 < m * 2.0 ** -(k - 1)
    assert fired == {"0.weight": (2.0 ** 12, 2.0 ** -k)} and als.guard_events == 1
    assert als.guard_last == {}
    w = grads["0.weight"]
    want = (fpsim.quantize(g32 * np.float32(2.0 ** -k), "float16")
            / np.float32(2.0 ** 12 * 2.0 ** -k))
    assert np.array_equal(w.view(np.uint32), want.astype(np.float32).view(np.uint32))
    gb, _ = seen["0.bias"]
    assert np.array_equal(grads["0.bias"].view(np.uint32),
                          (fpsim.quantize(gb, "float16") / np.float32(2.0 ** 12)).view(np.uint32))
    state = als.state_dict()
    fresh = AdaptiveScaler("float16")
    fresh.load_state_dict(state)
    assert fresh.guard_events == 1 and fresh.state_dict() == state


def test_without_wgrad_guard_the_overflowing_step_is_skipped():
    """wgrad_guard=False: the same weight gradient rounds to Inf in fp16 at scale 2^12 and
    the step is skipped (the bias gradient, a sum of |g| <= 16 over 256 rows, fits)."""
    grads, als, fired, seen, _, _, stepped = _overflow_case(False)
    assert not stepped and als.guard_events == 0 and fired == {}
    assert np.isinf(grads["0.weight"]).any() and np.isfinite(grads["0.bias"]).all()
    assert float(np.abs(seen["0.weight"][0]).max()) > 65504


def test_preset_specs_strings_and_describe():
    paper = scaler("adaptive-paper", "float16")
    assert (paper.variant, paper.sb, paper.ab, paper.caps, paper.period, paper.t_uf,
            paper.power_of_two, paper.init_scale, paper.output_site, paper.unscale_mode,
            paper.wgrad_guard) == ("B", 65504, 65504, "absolute", 100, 1e-3, True, 1.0, None,
                                   "format", False)
    assert paper.describe().startswith("adaptive-paper (variant B")
    ours = scaler("adaptive", "float8_e4m3fn")
    assert (ours.variant, ours.sb, ours.ab, ours.caps, ours.period, ours.output_site,
            ours.unscale_mode, ours.wgrad_guard) == ("A", 16, 1024, "absolute", 1, "lognormal",
                                                     "float32", True)
    assert (ours.sb_eff, ours.ab_eff) == (16.0, 1024.0)
    assert "wgrad guard on" in ours.describe() and "[absolute]" in ours.describe()
    rel = scaler("adaptive:caps=relative", "float8_e4m3fn")
    assert (rel.sb_eff, rel.ab_eff) == (1.0, 1024 * 448 / 65504)
    assert "SB'=1," in rel.describe()
    s = scaler("adaptive:output_site=none:wgrad_guard=off:caps=relative:period=4:t_uf=1e-4")
    assert (s.output_site, s.wgrad_guard, s.caps, s.period, s.t_uf) == (None, False,
                                                                       "relative", 4, 1e-4)
    d = scaler({"name": "adaptive", "output_site": None}, "float8_e5m2")
    assert d.output_site is None and d.u_max == 57344 and d.preset == "adaptive"
    assert scaler("adaptive-paper:period=1").period == 1
    for spec, message in [("adaptive:period", "key=value"), ("adaptive:bogus=1", "bogus"),
                          ("adaptive:unscale=fp8", "unscale"), ("adaptive:caps=x", "caps"),
                          ({"name": "adaptive-paper", "wgrad_guard": "maybe"}, "wgrad_guard")]:
        with pytest.raises(ValueError, match=message):
            scaler(spec)
