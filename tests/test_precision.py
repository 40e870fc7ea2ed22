"""Precision policies: where the cast sites go, what they round, and what they report."""

import contextlib

import numpy as np
import pytest

import fpsim
from fpsim import engine as E
from fpsim.training import instrument, nn
from fpsim import models
from fpsim.training.precision import Cast, Policy, policy


def _mlp():
    return models.build("mlp", {"input_shape": (1, 8, 8), "num_classes": 10, "seed": 0})


def _batch(n=16, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 1, 8, 8)).astype(np.float32) * scale,
            rng.integers(0, 10, n))


def _step(model, x, y, seed=1.0):
    model.zero_grad()
    loss = E.cross_entropy(model(E.Tensor(x)), y)
    loss.backward(seed)
    return loss


def test_mixed_fp16_declares_exactly_these_sites():
    model = _mlp()
    sites = policy("mixed_fp16").apply(model)
    names = [(s.name, s.forward_role, s.backward_role) for s in sites]
    assert names == [
        ("input", "input", None),
        ("net.1", "activation", "activation-grad"),
        ("net.1.weight", "weight", "weight-grad"), ("net.1.bias", "weight", "weight-grad"),
        ("net.3", "activation", "activation-grad"),
        ("net.3.weight", "weight", "weight-grad"), ("net.3.bias", "weight", "weight-grad"),
        ("net.5", "activation", "activation-grad"),
        ("net.5.weight", "weight", "weight-grad"), ("net.5.bias", "weight", "weight-grad"),
    ]  # no site after Flatten or ReLU: they are exact
    assert policy("fp32").apply(_mlp()) == []


def _capture(monkeypatch):
    """Record every rounding a cast site makes: (input copy, output, stats)."""
    calls = []
    real, real_many = Cast.round, Cast.round_many

    def spy(self, x, ctx):
        y, st = real(self, x, ctx)
        calls.append((self, x.copy(), y.copy(), st))
        return y, st

    def spy_many(self, xs, ctxs):  # (the parameters of a forward pass, in one call)
        res = real_many(self, xs, ctxs)
        calls.extend((self, x.copy(), y.copy(), st) for x, (y, st) in zip(xs, res))
        return res
    monkeypatch.setattr(Cast, "round", spy)
    monkeypatch.setattr(Cast, "round_many", spy_many)
    return calls


@pytest.mark.parametrize("preset", ["mixed_fp16", "fp8_e4m3_e5m2"])
def test_recorded_counts_equal_recounts_from_the_tensors(preset, monkeypatch):
    """Every site's recorded Stats equal counts made with numpy from the values that went in
    and came out, and the sites that report are exactly the declared ones."""
    model = _mlp()
    sites = policy(preset).apply(model)
    calls = _capture(monkeypatch)
    rec = instrument.Recorder()
    x, y = _batch(scale=1e-3)  # small inputs: some gradients underflow
    with instrument.recording(rec):
        _step(model, x, y)
    summary = rec.end_step()
    declared = {(s.name, s.forward_role, "forward") for s in sites} | \
               {(s.name, s.backward_role, "backward") for s in sites if s.backward_role}
    assert set(summary.sites) == declared
    assert len(calls) == len(declared)
    by_stats = {id(st): (cast, xin, yout) for cast, xin, yout, st in calls}
    underflows = 0
    for key, st in summary.sites.items():
        cast, xin, yout = by_stats[id(st)]
        fmt = cast.format
        assert np.array_equal(yout.view(np.uint32),
                              fpsim.quantize(xin, fmt, cast.rounding, cast.overflow).view(np.uint32)) \
            or cast.rounding == "sr"
        nonzero = (xin != 0) & ~np.isnan(xin)
        assert st.total == xin.size, key
        assert st.underflow == int((nonzero & (yout == 0)).sum()), key
        assert st.subnormal == int(((yout != 0) & (np.abs(yout) < fmt.min_normal)).sum()), key
        assert st.inexact == int(((yout != xin) & ~np.isnan(xin)).sum()), key
        assert st.hist_zero == int((xin == 0).sum()), key
        assert st.overflow == int((np.isfinite(xin) & (np.abs(xin) > fmt.max)).sum()), key
        underflows += st.underflow if key[1].endswith("grad") else 0
    assert underflows > 0  # the check saw real underflow
    t = summary.total()
    assert summary.grad_underflow_rate() == t.underflow / (t.total - t.hist_zero)


def test_cast_sites_round_forward_values_and_backward_cotangents():
    """A Linear layer under mixed_fp16: output = fp16(fp16(x) @ fp16(W)^T + fp16(b)), the weight
    gradient = fp16(fp16(dy)^T fp16(x)), all computed in float32 like the engine."""
    lin = nn.Linear(5, 3, rng=2)
    model = nn.Sequential(lin)
    policy("mixed_fp16").apply(model)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    g = rng.standard_normal((4, 3)).astype(np.float32) * 1e-3
    out = model(E.Tensor(x))
    out.backward(g)
    q = lambda a: fpsim.quantize(a.astype(np.float32), "float16")  # noqa: E731
    xw, W, b = q(x), q(lin.weight.data), q(lin.bias.data)
    want = q(xw @ W.T + b)
    assert np.array_equal(out.data.view(np.uint32), want.view(np.uint32))
    gq = q(g)
    assert np.array_equal(lin.weight.grad.view(np.uint32), q(gq.T @ xw).view(np.uint32))
    assert np.array_equal(lin.bias.grad.view(np.uint32), q(gq.sum(axis=0)).view(np.uint32))


def test_overrides_by_site_pattern():
    p = Policy("x", activations="float16", activation_grads="float16", weights="float16",
               weight_grads="float16",
               overrides={"net.5*": {"activations": None, "weights": "bfloat16"}})
    sites = {s.name: s for s in p.apply(_mlp())}
    assert sites["net.5"].forward is None and str(sites["net.5"].backward) == "float16:rne:ieee"
    assert str(sites["net.5.weight"].forward) == "bfloat16:rne:ieee"
    assert str(sites["net.3.weight"].forward) == "float16:rne:ieee"


def test_policy_with_accumulation_model_uses_it_in_every_gemm():
    """matmul={"preset": "fp16 accumulate"}: the Linear output is fpsim.matmul's model result."""
    lin = nn.Linear(64, 8, rng=3)
    model = nn.Sequential(lin)
    Policy("acc16", activations="float16", weights="float16",
           matmul={"preset": "fp16 accumulate"}).apply(model)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 64)).astype(np.float32)
    out = model(E.Tensor(x))
    q = lambda a: fpsim.quantize(a.astype(np.float32), "float16")  # noqa: E731
    prod = fpsim.matmul(q(x), q(lin.weight.data).T, preset="fp16 accumulate").astype(np.float32)
    want = q(prod + q(lin.bias.data))
    assert np.array_equal(out.data.view(np.uint32), want.view(np.uint32))
    plain = q(q(x) @ q(lin.weight.data).T + q(lin.bias.data))
    assert not np.array_equal(want, plain)  # the model is visible: fp16 accumulation differs


def test_optimizer_state_is_rounded_by_the_policy():
    model = _mlp()
    opt = fpsim.optim.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    Policy("s", optimizer_state="bfloat16").apply(model, opt)
    x, y = _batch()
    rec = instrument.Recorder()
    with instrument.recording(rec):
        _step(model, x, y)
        opt.step()
    for name, st in opt.state.items():
        b = st["momentum"]
        assert np.array_equal(b.view(np.uint32), fpsim.quantize(b, "bfloat16").view(np.uint32))
    roles = {k[1] for k in rec.end_step().sites}
    assert roles == {"optimizer-state"}


def test_optimizer_state_stats_belong_to_their_step(tmp_path):
    """In training, the optimizer-state roundings of step k are recorded with step k."""
    from fpsim.training.records import RunDB
    from fpsim.training.loop import train
    r = train({"model": "mlp", "epochs": 1, "policy": {"optimizer_state": "bfloat16"}},
              db=tmp_path / "r.sqlite")
    with RunDB(r["db"]) as db:
        ev = db.site_events(r["run_id"])
    steps = {e["step"] for e in ev if e["role"] == "optimizer-state"}
    assert steps == set(range(r["steps"]))  # every step, the first included, none beyond


def test_residual_and_transformer_sites():
    res = models.build("resnet", {"input_shape": (1, 8, 8), "num_classes": 10})
    names = {s.name for s in policy("mixed_fp16").apply(res)}
    assert "stages.0" in names            # the residual sum (cast_output)
    assert "stages.0.body.0" in names      # a convolution
    assert "stages.0.body.2" not in names  # a ReLU: exact
    assert "head.0" in names               # global average pooling
    tr = models.build("transformer", {"input_shape": (1, 8, 8), "num_classes": 10})
    names = {s.name for s in policy("mixed_fp16").apply(tr)}
    assert {"embed", "pos", "blocks.0.mid", "blocks.0", "blocks.0.attn.scores",
            "blocks.0.attn.probs", "blocks.0.attn.context"} <= names
    x = np.random.default_rng(0).random((3, 1, 8, 8)).astype(np.float32)
    rec = instrument.Recorder()
    with instrument.recording(rec):
        _step(tr, x, np.array([1, 2, 3]))
    reported = {k[0] for k in rec.end_step().sites}
    assert reported == names


def test_stochastic_rounding_differs_by_step_and_repeats_by_seed():
    model = _mlp()
    p = policy({"preset": "mixed_fp16", "activations": "float16:sr"})
    ctx = p.apply(model).context
    x, _ = _batch()
    with E.no_grad():
        with ctx.at_step(0):
            a = model(E.Tensor(x)).data
            b = model(E.Tensor(x)).data
        with ctx.at_step(1):
            c = model(E.Tensor(x)).data
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_hand_written_loop_gets_fresh_stochastic_rounding_bits_each_step():
    """The README's loop (apply, then call the model) sets no step: each training-mode forward
    pass starts a new one by itself, so SR bits differ from step to step; evaluation passes do
    not advance it; and the steps drawn are the ones ``at_step`` would give (0, 1, 2, ...)."""
    x, y = _batch()
    spec = {"preset": "mixed_fp16", "activations": "float16:sr", "activation_grads": "float16:sr"}

    def run(explicit):
        model = _mlp()
        ctx = policy(spec).apply(model).context
        outs, grads = [], []
        for step in range(3):
            with ctx.at_step(step) if explicit else contextlib.nullcontext():
                out = model(E.Tensor(x))
                E.cross_entropy(out, y).backward()
            outs.append(out.data.copy())
            grads.append(model.parameters()[0].grad.copy())
            model.zero_grad()
            if not explicit:
                model.eval()
                with E.no_grad():
                    model(E.Tensor(x))  # evaluation: not a step
                model.train()
        return outs, grads, ctx.step
    outs, grads, last = run(explicit=False)
    assert last == 2
    for k in range(1, 3):
        assert not np.array_equal(outs[k], outs[0]) and not np.array_equal(grads[k], grads[0])
    want_outs, want_grads, _ = run(explicit=True)
    for a, b in zip(outs + grads, want_outs + want_grads):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


def test_per_site_matmul_override():
    """An override gives one module its own accumulation model; the others keep the policy's."""
    model = _mlp()
    p = Policy("m", overrides={"net.1": {"matmul": {"preset": "fp16 accumulate"}}})
    p.apply(model)
    modules = dict(model.named_modules())
    gemms = [n for n, m in modules.items() if hasattr(m, "matmul")]
    assert "net.1" in gemms and len(gemms) > 1
    assert modules["net.1"].matmul is not None
    assert all(modules[n].matmul is None for n in gemms if n != "net.1")
    x, _ = _batch()
    x = fpsim.quantize(x, "float16")  # the model's operands are values of the input format
    w = modules["net.1"].weight
    w.data = fpsim.quantize(w.data, "float16")
    xin = E.Tensor(x)
    want = fpsim.matmul(modules["net.0"](xin).data, modules["net.1"].weight.data.T,
                        preset="fp16 accumulate") + modules["net.1"].bias.data
    got = modules["net.1"](modules["net.0"](xin)).data
    assert np.array_equal(got.view(np.uint32), want.astype(np.float32).view(np.uint32))


@pytest.mark.parametrize("spec, message", [
    ("fp7", "unknown precision policy"),
    ({"preset": "mixed_fp16", "weight": "fp16"}, "unknown policy field"),
    ({"activations": "float16:sideways"}, "sideways"),
    ({"activations": "float16:rne:wrap"}, "wrap"),
    ({"activations": {"format": "float16", "mode": "rne"}}, "unknown cast field"),
    ({"overrides": {"net.*": {"activation": "fp16"}}}, "unknown field"),
    ({"matmul": "fp16"}, "not a tensor-core preset; valid presets"),
    ({"matmul": 3}, "matmul must be None, a tensor-core preset name"),
])
def test_bad_policy_is_named(spec, message):
    with pytest.raises((ValueError, TypeError), match=message):
        policy(spec)
