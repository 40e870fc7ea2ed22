"""Scaled formats at cast sites: straight-through backward, delayed-scaling state in checkpoints
(resume is bit-identical), evaluation leaving the state alone, scale records, and the
block-scaled GEMM model against an exact reference."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import fpsim
from fpsim import engine as E
from fpsim.numerics.block_gemm import block_matmul
from fpsim.numerics.scaled import PRESETS
from fpsim.reference import scaled as ref
from fpsim.training import data as datasets
from fpsim.training import nn
from fpsim.training.casts import Cast
from fpsim.training.loop import Session, TrainConfig, train
from fpsim.training.precision import Policy
from fpsim.training.records import RunDB
from fpsim.training.scaled_cast import ScaledCast

F = np.float32
EVERY_SITE = {"name": "scaled", "activations": "mxfp8_e4m3", "weights": "fp8_delayed",
              "activation_grads": "mxfp8_e5m2:sr", "weight_grads": "fp8_delayed_e5m2"}


def test_cast_parse_gives_scaled_casts():
    c = Cast.parse("fp8_delayed:sr")
    assert isinstance(c, ScaledCast) and c.rounding == "sr"
    assert c.format == fpsim.format("float8_e4m3fn")
    with pytest.raises(ValueError, match="FORMAT\\[:ROUNDING\\]"):
        Cast.parse("mxfp8_e4m3:rne:saturate")


def test_straight_through_backward_of_every_site():
    """With scaled casts on inputs, weights and outputs (forward only), the engine's gradients
    equal the float32 gradients of the same network evaluated at the rounded values: the cast
    passes the cotangent unchanged. Values are small dyadic numbers, so every product and sum
    here is exact and the comparison is bit for bit."""
    rng = np.random.default_rng(0)
    lin = nn.Linear(32, 8, rng=1)
    x = (rng.integers(-8, 9, (4, 32)) / 8).astype(F)
    g = rng.integers(-3, 4, (4, 8)).astype(F)
    policy = Policy("p", activations="mxfp8_e4m3", weights="nvfp4")
    policy.apply(lin)
    out = lin(E.Tensor(x))
    (out * E.Tensor(g)).sum().backward()
    xq = fpsim.quantize(x, "mxfp8_e4m3")
    wq = fpsim.quantize(lin.weight.data, "nvfp4")
    bq = fpsim.quantize(lin.bias.data, "nvfp4")
    y = xq @ wq.T + bq
    assert np.array_equal(out.data, fpsim.quantize(y.astype(F), "mxfp8_e4m3"))
    assert np.array_equal(lin.weight.grad, g.T @ xq)  # dL/dW at the rounded input
    assert np.array_equal(lin.bias.grad, g.sum(0))


def _steps(session, n):
    for _ in range(n):
        epoch, within = divmod(session.step, session.steps_per_epoch)
        order = datasets.batches(len(session.data.x_train), session.cfg.batch_size,
                                 session.cfg.seed, epoch)
        session.train_step(order[within], None)


def test_resume_with_delayed_scaling_is_bit_identical():
    cfg = TrainConfig(model="mlp", policy=EVERY_SITE, epochs=2).resolved()
    whole = Session(cfg)
    _steps(whole, 12)
    first = Session(cfg)
    _steps(first, 5)
    state = first.state()
    assert "casts" in state
    resumed = Session(cfg)
    resumed.load(state)
    _steps(resumed, 7)
    for (n, p), (_, q) in zip(whole.model.named_parameters(), resumed.model.named_parameters()):
        assert np.array_equal(p.data.view(np.uint32), q.data.view(np.uint32)), n
    assert whole.policy.state_dict() == resumed.policy.state_dict()
    weights = whole.policy.casts["weights"]
    scales = [st.scale for st in weights._states.values()]
    assert len(scales) == 6 and all(s != 1.0 for s in scales)  # 3 layers x (weight, bias)


def test_evaluation_leaves_delayed_state_alone():
    lin = nn.Linear(16, 4, rng=0)
    policy = Policy("p", activations="fp8_delayed")
    policy.apply(lin)
    x = E.Tensor(np.random.default_rng(1).standard_normal((2, 16)).astype(F))
    lin(x)
    before = policy.state_dict()
    lin.eval()
    with E.no_grad():
        lin(x)
    assert policy.state_dict() == before
    lin.train()
    lin(x)
    assert policy.state_dict() != before


def test_scale_records_reach_the_run_record(tmp_path):
    db = tmp_path / "r.sqlite"
    pol = {"name": "s2", "activations": "s2fp8", "weights": "fp8_delayed",
           "activation_grads": "mxfp8_e5m2", "weight_grads": "s2fp8"}
    s = train({"model": "mlp", "policy": pol, "epochs": 1}, db=db)
    with RunDB(db) as r:
        rows = r.tensor_scales(s["run_id"])
    steps = {row["step"] for row in rows}
    assert steps == set(range(s["steps"]))
    s2 = [row for row in rows if row["role"] == "weight-grad"]
    assert s2 and all(row["alpha"] > 0 and row["beta"] is not None for row in s2)
    delayed = [row for row in rows if row["role"] == "weight"]
    assert delayed and all(row["scale"] > 0 and row["amax"] > 0 for row in delayed)
    mx = [row for row in rows if row["role"] == "activation-grad"]
    assert mx and all(row["tiles"] > 0 for row in mx)


def test_block_scaled_gemm_in_a_policy_trains():
    s = train({"model": "mlp", "policy": {"name": "mxgemm", "matmul": "mxfp8_e4m3"},
               "epochs": 1}, db=":memory:")
    assert s["status"] == "finished" and math.isfinite(s["final_loss"])
    with pytest.raises(ValueError, match="1 x k blocks"):
        Policy("p", matmul="fp8_current")


def _block_reference(a, b, name):
    """Exact block dot products of the reference's element values and scales, accumulated in
    float32 (one rounding of the exact sum per block)."""
    sf = PRESETS[name]
    k = sf.tile[1]
    ra, rb = ref.quantize(a, sf), ref.quantize(np.ascontiguousarray(b.T), sf)
    ea = [[Fraction(fpsim.decode(int(c), sf.element)) for c in row] for row in ra["codes"]]
    eb = [[Fraction(fpsim.decode(int(c), sf.element)) for c in row] for row in rb["codes"]]
    xa = fpsim.decode(ra["scales"], sf.scale)
    xb = fpsim.decode(rb["scales"], sf.scale)
    M, K = a.shape
    N = b.shape[1]
    out = np.zeros((M, N), F)
    for i in range(M):
        for j in range(N):
            acc = 0.0
            for blk in range(K // k):
                dot = sum(ea[i][t] * eb[j][t] for t in range(blk * k, (blk + 1) * k))
                exact = Fraction(acc) + dot * Fraction(xa[i, blk]) * Fraction(xb[j, blk])
                acc = ref.f32(exact) if exact != 0 else 0.0
            out[i, j] = acc
    return out


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxfp4_e2m1", "mxint8"])
def test_block_scaled_gemm_matches_exact_reference(name):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((3, 64)) * np.exp(rng.uniform(-4, 4, (3, 64)))).astype(F)
    b = (rng.standard_normal((64, 4)) * np.exp(rng.uniform(-4, 4, (64, 4)))).astype(F)
    got = block_matmul(a, b, name)
    want = _block_reference(a, b, name)
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_block_gemm_errors():
    with pytest.raises(ValueError, match="multiplies"):
        block_matmul(np.ones((2, 32), F), np.ones((16, 2), F))
    with pytest.raises(ValueError, match="1 x k"):
        block_matmul(np.ones((2, 32), F), np.ones((32, 2), F), "fp8_current")
