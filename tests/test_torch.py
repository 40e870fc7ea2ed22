"""The PyTorch bridge: tensor results equal the numpy path's bit for bit (every function, format
kind and rounding mode, CPU tensors), dtypes kept where exact and refused where not, the cast's
backward equals a hand-written straight-through rounding of the gradient (stochastic rounding
keyed as documented, independent of torch's generator), per-site Stats of a hooked model equal
numpy recounts, policies come off cleanly, and bad input is refused with a message.

The bit-for-bit tests run once more on CUDA tensors where torch sees a GPU (``device="cuda"``;
they skip, saying so, elsewhere): the reference is always the numpy path on a host copy."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch bridge needs torch (the [torch] extra)")

import fpsim  # noqa: E402
import fpsim.torch as ft  # noqa: E402
from _cudasim_cases import TORCH_FORMATS  # noqa: E402

MODES = ("rne", "rna", "rtz", "rup", "rdn", "rto", "sr")
#: Every format kind: float, fixed-point, scaled (shared with the GPU parity cases).
FORMATS = TORCH_FORMATS
#: Where the bit-for-bit tests run: CPU tensors always, CUDA tensors where torch has a GPU.
DEVICES = ("cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False")))


def _inputs(dtype=torch.float32, n=4096, seed=0, device="cpu"):
    """Values across the binades of every tested format, with zeros, specials and ties."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n) * np.exp2(rng.integers(-30, 20, n))
    x[:8] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.5, 2.5, 65520.0]
    return torch.from_numpy(x.astype(np.float64)).to(dtype).reshape(64, -1).to(device)


def _bits(a) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(np.uint64 if a.dtype == np.float64 else np.uint32)


def _host(t: torch.Tensor) -> np.ndarray:
    """``t``'s values as numpy holds them (copied from the device if need be), converted exactly
    by numpy (torch's own float16 to float32 conversion rewrites NaN payloads)."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # (the top half of a float32)
        return (t.view(torch.int16).numpy().astype(np.uint16).astype(np.uint32) << 16).view(
            np.float32)
    return t.numpy()


def _same(t: torch.Tensor, ref: np.ndarray):
    """``t`` holds exactly ``ref``'s values: both widened by numpy to the wider dtype, the same
    bits (NaN signs included)."""
    got = _host(t)
    wide = np.float64 if np.float64 in (got.dtype, np.asarray(ref).dtype) else np.float32
    np.testing.assert_array_equal(_bits(got.astype(wide)), _bits(np.asarray(ref).astype(wide)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_equals_the_numpy_path_bit_for_bit(fmt, device):
    # (scaled formats scale float32 tensors: the numpy path refuses float64, and so does this)
    for dtype in (torch.float32,) if fmt == "mxfp8_e4m3" else (torch.float32, torch.float64):
        x = _inputs(dtype, device=device)
        for mode in MODES:
            for overflow in (None, "saturate"):
                got = ft.quantize(x, fmt, rounding=mode, overflow=overflow, seed=7, stream=3)
                ref = fpsim.quantize(_host(x), fmt, mode, overflow, seed=7, stream=3)
                assert got.dtype == dtype and got.shape == x.shape and got.device == x.device
                _same(got, ref)


@pytest.mark.parametrize("device", DEVICES)
def test_stats_and_codes_equal_the_numpy_path(device):
    x = _inputs(device=device)
    for fmt in ("fp16", "e4m3", "e2m1"):
        got, st = ft.quantize(x, fmt, rounding="sr", seed=1, stats=True)
        ref, rst = fpsim.quantize(_host(x), fmt, "sr", seed=1, stats=True)
        _same(got, ref)
        assert st == rst
        codes = ft.encode(x, fmt, rounding="rna")
        ref_codes = fpsim.encode(_host(x), fmt, "rna")
        assert codes.dtype == {1: torch.uint8, 2: torch.uint16}[ref_codes.itemsize]
        assert codes.device == x.device
        np.testing.assert_array_equal(codes.to(torch.int64).cpu().numpy(),
                                      ref_codes.astype(np.int64))
        values = ft.decode(codes, fmt)
        assert values.dtype == torch.float64 and values.device == x.device
        _same(values, fpsim.decode(ref_codes, fmt))
    enc = ft.encode(x, "mxfp8_e4m3")  # a scaled format: (element codes, scale codes)
    ref = fpsim.encode(_host(x), "mxfp8_e4m3")
    for a, b in zip(enc, ref):
        np.testing.assert_array_equal(a.to(torch.int64).cpu().numpy(), np.asarray(b, np.int64))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op, arity", [("add", 2), ("sub", 2), ("mul", 2), ("div", 2),
                                       ("fma", 3), ("sqrt", 1)])
def test_arithmetic_equals_the_numpy_path(op, arity, device):
    for fmt in ("fp16", "e4m3", "bfloat16"):
        args = [ft.quantize(_inputs(seed=i, device=device).abs() if op == "sqrt"
                            else _inputs(seed=i, device=device), fmt) for i in range(arity)]
        for mode in MODES:
            # CUDA tensors: Stats are computed on a host copy, so without them is the device
            for stats in (True, False) if device == "cuda" else (True,):
                done = getattr(ft, op)(*args, fmt, rounding=mode, seed=2, flags=True,
                                       stats=stats)
                ref, rflags, rst = getattr(fpsim, op)(*[_host(a) for a in args], fmt, mode,
                                                      seed=2, flags=True, stats=True)
                got, flags = done[:2]
                assert got.dtype == torch.float32
                assert got.device == flags.device == args[0].device
                _same(got, ref)
                np.testing.assert_array_equal(flags.cpu().numpy(), rflags)
                assert not stats or done[2] == rst


def test_narrow_dtypes_kept_where_exact_and_refused_where_not():
    x = _inputs(torch.float16)
    for fmt in ("e4m3", "e5m2", "e2m1", "float16"):
        got = ft.quantize(x, fmt)
        assert got.dtype == torch.float16
        _same(got, fpsim.quantize(x.numpy(), fmt))
    b = _inputs(torch.bfloat16)
    got = ft.quantize(b, "e4m3", rounding="sr")
    assert got.dtype == torch.bfloat16
    _same(got, fpsim.quantize(b.float().numpy(), "e4m3", "sr"))
    with pytest.raises(ValueError, match="bfloat16 do not all fit torch.float16"):
        ft.quantize(x, "bfloat16")
    with pytest.raises(ValueError, match="do not all fit torch.bfloat16"):
        ft.quantize(b, "fp16")  # (fp16 has 10 fraction bits, bfloat16 7)
    with pytest.raises(ValueError, match="float64.*torch.float32"):
        ft.quantize(_inputs(), "float64")
    # a fixed-point grid is checked value by value: int8 codes fit float16, a fine grid not
    _same(ft.quantize(x, "int8"), fpsim.quantize(x.numpy(), "int8"))
    with pytest.raises(ValueError, match="is not a torch.float16 value"):
        ft.quantize(torch.full((4,), 0.3, dtype=torch.float16), "int8*0.0001")


def test_bad_input_is_refused_with_a_message():
    x = _inputs()
    with pytest.raises(TypeError, match="requires grad.*fpsim.torch.cast"):
        ft.quantize(x.clone().requires_grad_(), "fp16")
    with pytest.raises(TypeError, match="dtype torch.int32"):
        ft.quantize(torch.ones(3, dtype=torch.int32), "fp16")
    with pytest.raises(TypeError, match="dtype torch.complex64"):
        ft.quantize(torch.ones(3, dtype=torch.complex64), "fp16")
    with pytest.raises(TypeError, match="must be a torch.Tensor, got ndarray"):
        ft.quantize(x.numpy(), "fp16")
    with pytest.raises(TypeError, match="codes, which are integers"):
        ft.decode(x, "fp16")
    with pytest.raises(TypeError, match="takes 2 tensor"):
        ft.add(x, "fp16")
    with pytest.raises(ValueError, match="forward cast 'e9m9x'"):
        ft.cast(x, "e9m9x")


def test_nan_signs_and_small_float16_tensors():
    """torch widens float16 NaNs element by element (small tensors, and the tail of large
    ones) into positive NaNs; the bridge widens with numpy, which keeps the sign."""
    for n in (3, 1027):
        h = torch.full((n,), -1, dtype=torch.int16).view(torch.float16)  # 0xFFFF: -NaN
        h[1] = 1.0
        for fmt in ("fp16", "e4m3", "e5m2"):
            _same(ft.quantize(h, fmt), fpsim.quantize(h.numpy(), fmt))
        x = h.clone().requires_grad_()
        y = ft.cast(x, "fp16", "fp16")
        y.backward(h)
        assert _host(y.detach()).view(np.uint16)[0] >> 15 == 1  # (still negative)
        _same(x.grad, fpsim.quantize(h.numpy(), "fp16"))
    b = torch.tensor([-float("nan"), 1.0]).to(torch.bfloat16)
    _same(ft.quantize(b, "e4m3"), fpsim.quantize(_host(b), "e4m3"))
    q = ft.quantize(_inputs(), "fp16")  # positional arguments as fpsim takes them
    _same(ft.add(q, q, "fp16", "rtz"), fpsim.add(q.numpy(), q.numpy(), "fp16", "rtz"))
    with pytest.raises(TypeError, match="unexpected keyword argument 'roundng'"):
        ft.add(q, q, "fp16", roundng="rtz")


# ----------------------------------------------------------------------------- autograd
def _stream(site, role, step):
    """The documented key of a cast site's stochastic rounding (fpsim.training.casts)."""
    return zlib.crc32(f"{site}|{role}".encode()) | (step << 32)


@pytest.mark.parametrize("device", DEVICES)
def test_cast_backward_is_straight_through_rounding_of_the_gradient(device):
    x = _inputs(device=device).clone().requires_grad_()
    upstream = _inputs(seed=5, device=device)
    for fwd, bwd in (("fp16", "e5m2"), ("e4m3:sr", "e5m2:sr:saturate"), (None, "bf16:rtz")):
        x.grad = None
        torch.manual_seed(0)
        y = ft.cast(x, fwd, bwd, site="blk", role="activation", step=3, seed=11)
        y.backward(upstream)
        f = fwd and fwd.split(":")
        b = bwd.split(":")
        want_y = _host(x) if f is None else fpsim.quantize(
            _host(x), f[0], *(f[1:] or ["rne"]), seed=11, stream=_stream("blk", "activation", 3))
        want_g = fpsim.quantize(_host(upstream), b[0], *(b[1:] or ["rne"]), seed=11,
                                stream=_stream("blk", "activation-grad", 3))
        _same(y.detach(), np.asarray(want_y))
        _same(x.grad, want_g)
        assert y.device == x.grad.device == x.device
        # torch's generator plays no part in the bits
        torch.manual_seed(12345)
        again = ft.cast(x, fwd, bwd, site="blk", role="activation", step=3, seed=11)
        _same(again.detach(), np.asarray(want_y))


def test_cast_module_counts_steps_and_passes_gradients_in_dtype():
    m = ft.Cast("e4m3:sr", "e5m2:sr", site="c")
    x = _inputs().clone().requires_grad_()
    first = m(x).detach().clone()
    second = m(x).detach()
    assert m.context.step == 1 and not torch.equal(first, second)
    _same(first, fpsim.quantize(x.detach().numpy(), "e4m3", "sr",
                                stream=_stream("c", "activation", 0)))
    _same(second, fpsim.quantize(x.detach().numpy(), "e4m3", "sr",
                                 stream=_stream("c", "activation", 1)))
    m.eval()
    m(x)
    assert m.context.step == 1  # (evaluation passes reuse the step)
    h = _inputs(torch.float16).clone().requires_grad_()
    out = ft.cast(h, "e4m3", "e5m2")
    out.sum().backward()
    assert out.dtype == h.grad.dtype == torch.float16


# ----------------------------------------------------------------------------- policies
def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))


def test_apply_policy_sites_stats_and_removal():
    model = _mlp()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((8, 16), np.float32) * 1e-3)
    plain = model(x).detach()
    pol = fpsim.Policy("p", activations="fp16", weights="fp16", weight_grads="e5m2")
    sites = ft.apply_policy(model, pol)
    assert list(sites) == ["input", "0", "0.weight", "0.bias", "2", "2.weight", "2.bias"]
    rec = fpsim.Recorder()
    with fpsim.recording(rec):
        out = model(x)
        out.sum().backward()
    summary = rec.end_step()
    # recount by hand: the input, layer 0's rounded weights, its output, its weight gradient
    q = lambda a, f="fp16": fpsim.quantize(a, f, stats=True)  # noqa: E731
    xq, st_in = q(x.numpy())
    w0q, st_w0 = q(before["0.weight"].numpy())
    b0q, _ = q(before["0.bias"].numpy())
    h = torch.nn.functional.linear(torch.from_numpy(xq), torch.from_numpy(w0q),
                                   torch.from_numpy(b0q))
    hq, st_h = q(h.numpy())
    assert summary.sites["input", "input", "forward"] == st_in
    assert summary.sites["0.weight", "weight", "forward"] == st_w0
    assert summary.sites["0", "activation", "forward"] == st_h
    # d(sum)/d(weight 0): the activation gradients pass unrounded, so it is g1^T xq with
    # g1 the gradient at layer 0's output, recomputed in torch from the rounded tensors
    w2q, _ = q(before["2.weight"].numpy())
    relu_mask = torch.from_numpy(hq) > 0
    g1 = (torch.ones(8, 4) @ torch.from_numpy(w2q)) * relu_mask
    dw0 = (g1.T @ torch.from_numpy(xq)).numpy()
    _, st_dw0 = fpsim.quantize(dw0, "e5m2", stats=True)
    assert st_dw0.inexact > 0 and st_dw0.underflow > 0 and st_h.inexact > 0  # (not trivial)
    assert summary.sites["0.weight", "weight-grad", "backward"] == st_dw0
    assert sites.context.step == 0
    # the master weights got the rounded gradient; take the policy off: the model is as before
    got = model[0].parametrizations.weight.original.grad.numpy()
    np.testing.assert_array_equal(_bits(got), _bits(fpsim.quantize(dw0, "e5m2")))
    sites.remove()
    assert not hasattr(model[0], "parametrizations")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert torch.equal(model(x), plain)
    ft.apply_policy(model, "mixed_bf16").remove()  # (a second policy after removal is fine)


def test_placement_rounds_nothing_and_attention_is_one_site():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    pol = fpsim.Policy("d", weights="fp8_delayed")
    rec = fpsim.Recorder()
    with fpsim.recording(rec):  # (torch's parametrization check would round every weight)
        ft.apply_policy(model, pol)
    assert rec.peek().sites == {} and pol.state_dict() == {"weights": {}}

    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = torch.nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x)[0]
    model = Attention()
    sites = ft.apply_policy(model, "mixed_fp16")
    # torch's attention calls F.linear on out_proj's weight: no site on out_proj's output,
    # which would never run; the attention's output is the site
    assert list(sites) == ["input", "attn", "attn.in_proj_weight", "attn.in_proj_bias",
                           "attn.out_proj.weight", "attn.out_proj.bias"]
    rec = fpsim.Recorder()
    with fpsim.recording(rec):
        model(torch.randn(2, 5, 8)).sum().backward()
    assert {site for site, _, _ in rec.peek().sites} == set(sites)


def test_removal_keeps_parameter_order_and_input_arguments():
    model = _mlp()
    order = [n for n, _ in model.named_parameters()]
    sites = ft.apply_policy(model, fpsim.Policy("w", weights="fp16"))
    sites.remove()
    assert [n for n, _ in model.named_parameters()] == order  # (optimizer state still fits)

    class TwoInputs(torch.nn.Module):
        def forward(self, x, mask):
            return x * mask
    m = TwoInputs()  # (input cast only: the root is a leaf, its output site is turned off)
    assert ft.apply_policy(m, fpsim.Policy("in", activations="fp16", overrides={
        "output": {"activations": None}})) == ["input"]
    mask = 1 + 2.0 ** -20  # (not an fp16 value)
    out = m(torch.full((2,), 0.1), torch.full((2,), mask))
    # the input (first argument) is rounded to fp16, the mask is not
    x16 = np.float32(np.float16(0.1))
    assert out[0].item() == x16 * np.float32(mask) != x16 * np.float32(np.float16(mask))


def test_once_differentiable_and_nested_policies_refused():
    x = torch.ones(3, requires_grad=True)
    y = ft.cast(x, "fp16", "fp16")
    (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        g.sum().backward()
    model = _mlp()
    ft.apply_policy(model[0], "mixed_fp16")
    with pytest.raises(ValueError, match="submodule '0' already carries a policy"):
        ft.apply_policy(model, "mixed_fp16")
    wn = torch.nn.Sequential(torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(4, 3)))
    with pytest.raises(ValueError, match="already has a torch parametrization"):
        ft.apply_policy(wn, "mixed_fp16")


def test_apply_policy_refusals():
    model = _mlp()
    sites = ft.apply_policy(model, "mixed_fp16")
    with pytest.raises(ValueError, match="already carries a policy"):
        ft.apply_policy(model, "mixed_bf16")
    sites.remove()
    with pytest.raises(ValueError, match=r"override 'head\*' matches no site; sites: 0, "):
        ft.apply_policy(model, fpsim.Policy("p", activations="fp16",
                                            overrides={"head*": {"activations": "e4m3"}}))
    assert not hasattr(model[0], "parametrizations")  # (a refused policy leaves nothing)
    with pytest.raises(ValueError, match="GEMM accumulation model"):
        ft.apply_policy(model, fpsim.Policy("p", matmul={"preset": "fp16 accumulate"}))
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        ft.apply_policy(object(), "mixed_fp16")
    # an override that matches applies to its sites only
    sites = ft.apply_policy(model, fpsim.Policy("p", activations="fp16",
                                                overrides={"2": {"activations": "e2m1"}}))
    x = _inputs(n=4 * 16).reshape(4, 16).clamp(-4, 4)
    out = model(x).detach().numpy()
    np.testing.assert_array_equal(out, fpsim.quantize(out, "e2m1"))
    sites.remove()


# ----------------------------------------------------------------------------- loss scaling
def test_dynamic_scaling_matches_torch_gradscaler_step_for_step():
    """fpsim's dynamic scaler (GradScaler's rule) against torch.amp.GradScaler itself: the same
    scales, the same skipped steps, and the same parameters bit for bit."""
    import copy
    ours = _mlp()
    theirs = copy.deepcopy(ours)
    opt_a = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    scaling = ft.LossScaling({"name": "dynamic", "init_scale": 2.0 ** 10,
                              "growth_interval": 3}, opt_a)
    grad_scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((8, 16), np.float32))
    overflow_steps = {2, 5, 6}
    scales, applied = [], []
    for step in range(12):
        for model, opt, scale in ((ours, opt_a, scaling.scale),
                                  (theirs, opt_b, grad_scaler.scale)):
            opt.zero_grad()
            scale(model(x).square().mean()).backward()
            if step in overflow_steps:  # (a gradient overflowed the format)
                next(model.parameters()).grad[0, 0] = float("inf")
        scales.append((scaling.loss_scale(), float(grad_scaler.get_scale())))
        applied.append(scaling.step())
        grad_scaler.step(opt_b)
        grad_scaler.update()
    assert all(a == b for a, b in scales), scales
    assert [not a for a in applied] == [s in overflow_steps for s in range(12)]
    assert scaling.skipped == 3 and scaling.steps == 9
    for pa, pb in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_array_equal(_bits(pa.detach().numpy()), _bits(pb.detach().numpy()))


def test_loss_scaling_float16_loss_unscale_and_one_step_per_loss():
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaling = ft.LossScaling("dynamic", opt)
    scaled = scaling.scale(torch.tensor(1.0, dtype=torch.float16))
    assert scaled.dtype == torch.float32 and scaled.item() == 2.0 ** 16  # (not Inf)
    x = torch.ones(2, 16)
    loss = model(x).sum()
    scaling.scale(loss).backward()
    want = [p.grad.clone() for p in model.parameters()]
    scaling.unscale_()  # (e.g. to clip the gradient norm)
    for p, w in zip(model.parameters(), want):
        np.testing.assert_array_equal(p.grad.numpy(), (w * np.float32(2.0 ** -16)).numpy())
    with pytest.raises(RuntimeError, match="already called this step"):
        scaling.unscale_()
    assert scaling.step() and scaling.last_scale == 2.0 ** 16
    with pytest.raises(RuntimeError, match="step.. was already called for this loss"):
        scaling.step()


def test_loss_scaling_refusals():
    opt = torch.optim.SGD(_mlp().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="adaptive .per-layer. scaling measures"):
        ft.LossScaling("adaptive", opt)  # (no sites: no model to measure)
    with pytest.raises(TypeError, match="must be a torch.optim.Optimizer"):
        ft.LossScaling("dynamic", object())
    with pytest.raises(ValueError, match="unknown loss scaler"):
        ft.LossScaling("dynamc", opt)


def test_adaptive_scaling_on_a_torch_model_steps_skips_and_is_removable():
    """Adaptive scaling on a hooked torch MLP (its bit-for-bit agreement with fpsim's engine is
    in test_torch_engine.py): the scales compose down the network, each gradient rounding rounds
    at its site's scale (its Stats report it), the gradients reach the optimizer at true
    magnitude, a non-finite step is skipped, and remove() takes the hooks off."""
    model = _mlp()
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((8, 16), np.float32))
    y = torch.from_numpy(np.random.default_rng(4).integers(0, 4, 8))
    sites = ft.apply_policy(model, "fp8_e4m3_e5m2")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaling = ft.LossScaling("adaptive", opt, sites=sites)
    assert scaling.scaler.u_max == 57344.0  # (e5m2: the policy's gradient format)
    rec = fpsim.Recorder()
    with fpsim.recording(rec):
        loss = torch.nn.functional.cross_entropy(model(x), y) * 2.0 ** -8
        scaling.scale(loss).backward()
    summary = rec.end_step()
    scales = scaling.scaler.report()
    assert set(scales) == {"loss-cast", "0", "2"}
    a0, s0 = scales["0"]
    a2, s2 = scales["2"]
    assert s2 > 1 and a0 == a2 * s2  # (the scale of layer 2's input gradient reaches layer 0)
    assert summary.scales[("0", "activation-grad", "backward")] == a0
    assert summary.scales[("0.weight", "weight-grad", "backward")] == a0
    # the weight gradient of layer 0: the master gradient rounded into e5m2 at scale a0
    w0 = model[0].parametrizations["weight"]
    g = w0.original.grad.numpy()
    assert np.array_equal(fpsim.quantize(g * a0, "e5m2") / a0, g) and a0 > 1
    before = [p.detach().clone() for p in model.parameters()]
    assert scaling.step() and scaling.steps == 1
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    # a non-finite gradient skips the step
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y) * float("nan")  # (e5m2 saturates Inf)
    scaling.scale(loss).backward()
    before = [p.detach().clone() for p in model.parameters()]
    assert not scaling.step() and scaling.skipped == 1
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    # a backward pass not started by scale() is refused, not rounded at a wrong scale
    opt.zero_grad()
    with pytest.raises(RuntimeError, match="not started by LossScaling.scale"):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    with pytest.raises(ValueError, match="already carry adaptive scaling"):
        ft.LossScaling("dynamic", opt, sites=sites)
    scaling.remove()
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()  # (plain rounding again)
    assert sites.context.gradient_scales is None


def test_adaptive_scaling_refusals_on_torch():
    model = _mlp()
    sites = ft.apply_policy(model, "mixed_fp16")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="exact only for power-of-two scales"):
        ft.LossScaling({"name": "adaptive", "power_of_two": False}, opt, sites=sites)
    with pytest.raises(ValueError, match="the one list apply_policy returned"):
        ft.LossScaling("adaptive", opt, sites=ft.Cast("fp16", "fp16"))


# ----------------------------------------------------------------------------- run records
def test_run_record_of_a_torch_run_is_read_by_fpsim_report(tmp_path):
    from fpsim import cli
    from fpsim.training.records import RunDB
    db = str(tmp_path / "torch.sqlite")
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((32, 16), np.float32))
    y = torch.from_numpy(np.random.default_rng(3).integers(0, 4, 32))
    summaries = []
    for scaler in ("none", "dynamic"):
        model = _mlp()
        sites = ft.apply_policy(model, "mixed_fp16")
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        scaling = ft.LossScaling(scaler, opt, sites=sites)
        with ft.RunRecord(db, policy="mixed_fp16", scaler=scaler, dataset="random",
                          model="mlp", hist_every=2, study="bridge", epochs=2,
                          batch_size=32, optimizer="SGD", lr=0.05) as record:
            for epoch in range(2):
                for i in range(4):
                    rec = fpsim.Recorder()
                    with fpsim.recording(rec):
                        opt.zero_grad()
                        loss = torch.nn.functional.cross_entropy(model(x), y)
                        scaling.scale(loss).backward()
                    summary = rec.end_step()
                    summaries.append(summary)
                    applied = scaling.step()
                    record.step(summary, loss=loss.item(), lr=0.05,
                                loss_scale=scaling.last_scale, skipped=not applied)
                with torch.no_grad():
                    acc = float((model(x).argmax(1) == y).float().mean())
                record.epoch(test_loss=loss.item(), test_accuracy=acc)
    with RunDB(db) as r:
        runs = r.runs("bridge")
        assert [x_["status"] for x_ in runs] == ["finished", "finished"]
        assert runs[0]["config"]["framework"] == "torch"
        events = r.site_events(runs[1]["id"])
        assert len(r.histograms(runs[1]["id"])) == 4 * len(summaries[8].sites)  # steps 0,2,4,6
    # the recorded events are the recorder's Stats, step by step
    got = {(e["step"], e["site"], e["role"], e["direction"]): e for e in events}
    for step, summary in enumerate(summaries[8:]):
        for (site, role, d), st in summary.sites.items():
            e = got[step, site, role, d]
            assert (e["total"], e["underflow"], e["overflow"], e["inexact"]) == (
                st.total, st.underflow, st.overflow, st.inexact)
            # backward roundings carry the loss scale (2^16 while dynamic scaling has not
            # changed it), forward ones none
            assert e["scale"] == (2.0 ** 16 if d == "backward" else None)
    out = tmp_path / "report"
    assert cli.main(["report", db, "--study", "bridge", "--out", str(out), "--images",
                     "png"]) == 0
    text = (out / "report.md").read_text()
    assert "mixed_fp16 / dynamic" in text and "mixed_fp16 / none" in text


def test_run_record_statuses(tmp_path):
    from fpsim.training.records import RunDB
    db = str(tmp_path / "s.sqlite")
    with pytest.raises(ZeroDivisionError):
        with ft.RunRecord(db, policy="mixed_fp16") as record:
            record.step(None, loss=1.0)
            record.epoch(test_loss=torch.tensor(0.5), test_accuracy=np.float32(0.75))
            1 / 0
    with pytest.raises(KeyboardInterrupt):
        with ft.RunRecord(db, policy="mixed_fp16") as record:
            raise KeyboardInterrupt
    with ft.RunRecord(db, policy="fp32") as record:
        record.close()  # (closing twice is harmless)
    with RunDB(db) as r:
        runs = r.runs()
        assert [x["status"] for x in runs] == ["failed", "interrupted", "finished"]
        assert "ZeroDivisionError" in runs[0]["summary"]["error"]
        assert runs[0]["summary"]["test_accuracy"] == 0.75 and len(r.steps(runs[0]["id"])[
            "loss"]) == 1
    with pytest.raises(ValueError, match="unknown precision policy"):
        ft.RunRecord(db, policy="fp99")


def test_import_fpsim_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, fpsim; fpsim.quantize; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr
