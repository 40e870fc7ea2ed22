"""Loss-change allocation: the path-integral machinery against closed-form integrals, the
full-set gradient against a hand-written float64 MLP, the paper's invariant ΣA = ΔL on a
recorded run, Simpson against first order, aggregations that add up, chunking, the saved
parameters (bounded, bit-identical on resume), and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpsim import cli
from fpsim.training import lca
from fpsim.training.loop import Session, TrainConfig, run_model, train
from fpsim.training.records import RecordError, RunDB


# ----------------------------------------------------------------------------- the integration
class Power:
    """L(θ) = Σ c_i θ_i^6, the Landscape protocol, with a closed-form path integral:
    Δ_i ∫_0^1 6 c_i (a_i + s Δ_i)^5 ds = c_i ((a_i + Δ_i)^6 − a_i^6). (The integrand is a
    quintic in s: Simpson, exact up to cubics, needs refining.)"""

    def __init__(self, c):
        self.c = np.asarray(c, np.float64)
        self.size = self.c.size
        self.names, self.shapes = ["a", "b"], [(self.size - 2,), (2,)]
        self.offsets = np.array([0, self.size - 2])
        self.chunk, self.evaluations = 0, 0

    def __call__(self, theta):
        self.evaluations += 1
        return float((self.c * theta ** 6).sum()), 6 * self.c * theta ** 5


def test_simpson_weights_integrate_cubics_exactly():
    for n in (2, 4, 8, 32):
        w = lca.simpson_weights(n)
        s = np.linspace(0, 1, n + 1)
        assert w.sum() == pytest.approx(1, abs=1e-15)
        for k in range(4):  # Simpson is exact for polynomials of degree <= 3
            assert (w * s ** k).sum() == pytest.approx(1 / (k + 1), abs=1e-14)
    with pytest.raises(ValueError, match="even number"):
        lca.simpson_weights(3)
    # the allocator's running sums are these weights: one step refined to n = 8
    land = Power([1.0, 2.0, 0.5])
    a, b = np.array([0.3, -0.2, 0.9]), np.array([0.8, 0.4, -0.6])
    res = lca.allocate_path(land, [a, b], tol=1e-300, max_splits=8)
    assert res.splits[0] == 8
    grads = [land(a + (j / 8) * (b - a))[1] for j in range(9)]
    ref = (b - a) * sum(w * g for w, g in zip(lca.simpson_weights(8), grads))
    assert np.allclose(res.total, ref, rtol=1e-13, atol=0)


def test_allocation_matches_the_closed_form_integral_per_parameter():
    rng = np.random.default_rng(0)
    land = Power(rng.uniform(0.5, 2, 6))
    path = list(np.cumsum(0.4 * rng.standard_normal((5, 6)), axis=0) + 0.5)
    res = lca.allocate_path(land, path, tol=1e-8, max_splits=256)
    exact = np.array([land.c * (b ** 6 - a ** 6) for a, b in zip(path, path[1:])])
    # the invariant holds to the tolerance, and every parameter's share is the exact integral
    assert np.all(np.abs(res.error) <= 1e-8)
    assert np.allclose(res.total, exact.sum(0), rtol=0, atol=1e-8)
    assert np.allclose(res.per_param[:, 0], exact[:, :4].sum(1), rtol=0, atol=1e-8)
    assert res.splits.max() > 2  # the refinement was needed (n = 2 is not exact here)
    # evaluations: 1 start + per step 1 end + (n - 1) interior points (each point once)
    assert res.evaluations == 1 + sum(1 + (n - 1) for n in res.splits)
    # first order: exactly the start gradient times the step
    fo = lca.allocate_path(Power(land.c), path, method="first_order")
    g = [6 * land.c * a ** 5 for a in path[:-1]]
    assert np.allclose(fo.total, sum(gi * (b - a) for gi, a, b in zip(g, path, path[1:])),
                       rtol=1e-15, atol=0)
    assert fo.evaluations == len(path)


def test_refinement_stops_at_the_cap_and_a_still_step_costs_nothing():
    land = Power([1.0, 1.0, 1.0])
    a, b = np.array([0.0, 1.0, -2.0]), np.array([3.0, -1.0, 1.0])
    res = lca.allocate_path(land, [a, b, b], tol=1e-300, max_splits=8)
    assert list(res.splits) == [8, 0]  # capped; the repeated point did not move
    assert res.per_param[1].tolist() == [0.0, 0.0] and res.error[1] == 0.0
    assert res.moved[1] == 0 and np.isnan(res.helped[1])
    assert res.evaluations == 1 + (1 + 7)


# ------------------------------------------------------------------------ the loss landscape
def _tiny_run(tmp_path, **kw):
    fields = dict(model="mlp", dataset="digits", model_config={"hidden": [16]}, epochs=2,
                  lr=0.5, batch_size=128, lca=True, instrument=False, hist_every=0)
    fields.update(kw)
    db = str(tmp_path / "lca.sqlite")
    return db, train(fields, db=db)


def _numpy_mlp_loss_grad(theta, x, y, n_in, n_hidden, n_out):
    """Cross-entropy of Flatten -> Linear -> ReLU -> Linear in float64, by hand."""
    o = 0
    W1 = theta[o:o + n_hidden * n_in].reshape(n_hidden, n_in); o += W1.size
    b1 = theta[o:o + n_hidden]; o += n_hidden
    W2 = theta[o:o + n_out * n_hidden].reshape(n_out, n_hidden); o += W2.size
    b2 = theta[o:o + n_out]
    x = x.reshape(len(x), -1).astype(np.float64)
    h = np.maximum(x @ W1.T + b1, 0)
    z = h @ W2.T + b2
    z = z - z.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    n = len(x)
    loss = -np.log(p[np.arange(n), y]).mean()
    dz = p.copy()
    dz[np.arange(n), y] -= 1
    dz /= n
    dh = (dz @ W2) * (h > 0)
    return loss, np.concatenate([(dh.T @ x).ravel(), dh.sum(0), (dz.T @ h).ravel(), dz.sum(0)])


def test_landscape_matches_a_float64_hand_written_mlp(tmp_path):
    db, s = _tiny_run(tmp_path, epochs=1)
    cfg, data, model = run_model(db, s["run_id"])
    land = lca.Landscape(model, data.x_train, data.y_train)
    with RunDB(db) as r:
        theta = r.load_params(s["run_id"], 5).astype(np.float64)
    loss, grad = land(theta)
    ref_loss, ref_grad = _numpy_mlp_loss_grad(theta, data.x_train, data.y_train, 64, 16, 10)
    assert abs(loss - ref_loss) < 1e-5 * abs(ref_loss)
    assert np.abs(grad - ref_grad).max() < 1e-5 * np.abs(ref_grad).max()
    # and a central finite difference along a random direction (float64 reference)
    v = np.random.default_rng(1).standard_normal(theta.size)
    h = 1e-6
    fd = (_numpy_mlp_loss_grad(theta + h * v, data.x_train, data.y_train, 64, 16, 10)[0]
          - _numpy_mlp_loss_grad(theta - h * v, data.x_train, data.y_train, 64, 16, 10)[0]) / (2 * h)
    assert abs(ref_grad @ v - fd) < 1e-6 * abs(fd)  # the reference itself
    assert abs(grad @ v - fd) < 1e-6 * abs(fd)


def test_landscape_keeps_buffers_and_modes_and_uses_batch_statistics():
    from fpsim.models import build
    from fpsim.training import nn
    model = build("resnet", {"input_shape": (1, 8, 8), "num_classes": 10, "seed": 0})
    model.eval()
    x = np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    y = np.arange(32) % 10
    before = model.buffer_values()
    theta = np.concatenate([p.data.ravel() for p in model.parameters()]).astype(np.float64)
    land = lca.Landscape(model, x, y)
    loss, _ = land(theta)
    after = model.buffer_values()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert not any(m.training for _, m in model.named_modules())  # eval mode restored
    # batch statistics: the same loss as the model in training mode (buffers aside)
    from fpsim import engine as E
    model.train()
    ref = float(E.cross_entropy(model(E.Tensor(x)), y).data)
    assert loss == pytest.approx(ref, rel=1e-6)
    bn = [m for _, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn and land.names[0].startswith("stem")


def test_landscape_turns_dropout_off_and_restores_mixed_modes():
    from fpsim.training import nn
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32, rng=0), nn.ReLU(),
                          nn.Dropout(0.5, seed=3), nn.Linear(32, 10, rng=1))
    model.train()
    drop = [m for _, m in model.named_modules() if isinstance(m, nn.Dropout)][0]
    drop.training = False  # a mixed setting, to be restored as it was
    modes = {n: m.training for n, m in model.named_modules()}
    calls = int(drop.calls)
    x = np.random.default_rng(0).standard_normal((50, 64)).astype(np.float32)
    y = np.arange(50) % 10
    theta = np.concatenate([p.data.ravel() for p in model.parameters()]).astype(np.float64)
    land = lca.Landscape(model, x, y)
    a, b = land(theta), land(theta)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])  # no random masks
    assert int(drop.calls) == calls
    assert {n: m.training for n, m in model.named_modules()} == modes
    drop.training = True  # with dropout on, the same model gives another loss
    from fpsim import engine as E
    assert float(E.cross_entropy(model(E.Tensor(x)), y).data) != a[0]


def test_landscape_refuses_a_model_with_a_policy_attached():
    cfg = TrainConfig(model="mlp", policy="mixed_fp16").resolved()
    s = Session(cfg)
    with pytest.raises(ValueError, match="hooks attached"):
        lca.Landscape(s.model, s.data.x_train, s.data.y_train)


# ------------------------------------------------------------------------ a recorded run
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return _tiny_run(tmp_path_factory.mktemp("lca"))


def test_the_allocation_adds_up_to_the_loss_change_on_every_step(run):
    db, s = run
    res = lca.allocate(db, s["run_id"], tol=1e-5)
    assert len(res.steps) == s["steps"] == 24
    assert np.all(np.abs(res.error) <= 1e-5)  # the paper's invariant, per step
    assert np.all(res.splits >= 2) and res.evaluations == 1 + sum(res.splits)
    # the losses are the landscape's at the saved points, evaluated afresh here
    _, data, model = run_model(db, s["run_id"])
    land = lca.Landscape(model, data.x_train, data.y_train)
    with RunDB(db) as r:
        for t in (0, 7, 24):
            assert land(r.load_params(s["run_id"], t))[0] == res.loss[t]
    assert res.loss[-1] < res.loss[0]
    # aggregations: per layer, per module and per neuron add up to the total
    assert np.allclose(res.per_param.sum(1), res.allocated, atol=1e-12)
    assert sum(res.layer_totals().values()) == pytest.approx(res.total.sum(), abs=1e-12)
    assert sum(res.modules().values()) == pytest.approx(res.total.sum(), abs=1e-12)
    lt = res.layer_totals()
    for layer in ("net.1", "net.3"):
        assert res.neurons(f"{layer}.weight").sum() == pytest.approx(
            lt[f"{layer}.weight"] + lt[f"{layer}.bias"], abs=1e-12)
    assert res.neurons("net.1.weight").shape == (16,)
    assert res.reconstructed_loss()[-1] == pytest.approx(res.loss[-1], abs=24e-5)
    helped = (res.total < 0).mean()
    assert 0 < helped < 1 and np.all((0 < res.helped) & (res.helped < 1))
    with pytest.raises(ValueError, match="no parameter 'net.9.weight'"):
        res.neurons("net.9.weight")


def test_simpson_beats_first_order_by_two_orders_of_magnitude(run):
    """The documented margin: on this tiny MLP (lr 0.5) the first-order per-step error is at
    least 100 times Simpson's, in the worst step and on average."""
    db, s = run
    simpson = lca.allocate(db, s["run_id"])
    first = lca.allocate(db, s["run_id"], method="first_order")
    assert first.evaluations == s["steps"] + 1
    assert np.abs(first.error).max() > 100 * np.abs(simpson.error).max()
    assert np.abs(first.error).mean() > 100 * np.abs(simpson.error).mean()
    assert np.array_equal(first.loss, simpson.loss)  # the same landscape at the same points


def test_results_do_not_depend_on_the_chunking(run):
    db, s = run
    whole = lca.allocate(db, s["run_id"], stop=8)
    chunked = lca.allocate(db, s["run_id"], stop=8, chunk=100)
    assert chunked.chunk == 100 and whole.chunk == 1438
    # float32 per chunk, float64 across: equal to float32 rounding of the sums
    assert np.allclose(chunked.loss, whole.loss, rtol=1e-6, atol=0)
    assert np.allclose(chunked.per_param, whole.per_param, rtol=1e-4, atol=1e-7)
    assert np.abs(chunked.total - whole.total).max() < 1e-5 * np.abs(whole.total).max()


def test_a_window_of_steps_and_the_test_split(run):
    db, s = run
    res = lca.allocate(db, s["run_id"], start=10, stop=14)
    assert list(res.steps) == [10, 11, 12, 13]
    full = lca.allocate(db, s["run_id"], stop=14)
    assert np.allclose(res.per_param, full.per_param[10:], rtol=1e-9, atol=1e-15)
    test = lca.allocate(db, s["run_id"], split="test", stop=4)
    assert test.split == "test" and not np.allclose(test.loss, full.loss[:5])


def test_save_and_load_round_trip(run, tmp_path):
    db, s = run
    res = lca.allocate(db, s["run_id"], stop=3)
    res.save(tmp_path / "a.npz")
    back = lca.LCAResult.load(tmp_path / "a.npz")
    for k in lca.LCAResult._ARRAYS:
        assert np.array_equal(getattr(back, k), getattr(res, k))
    assert back.names == res.names and back.shapes == res.shapes
    assert back.summary() == res.summary()


# ------------------------------------------------------------------------ saved parameters
def test_saved_parameters_are_the_trajectory_and_bounded(tmp_path, run):
    db, s = run
    with RunDB(db) as r:
        steps = r.param_steps(s["run_id"])
        last = r.load_params(s["run_id"], steps[-1])
        state = r.load_checkpoint(s["run_id"])[1]
    assert steps == list(range(s["steps"] + 1))
    flat = np.concatenate([state[k].ravel() for k in
                           ("model/net.1.weight", "model/net.1.bias", "model/net.3.weight",
                            "model/net.3.bias")])
    assert np.array_equal(last.view(np.uint32), flat.astype(np.float32).view(np.uint32))
    with RunDB(db) as r:
        n_runs = len(r.runs())
    with pytest.raises(ValueError, match=r"lca=True would save .* over lca_max_bytes = 10000"):
        train(dict(model="mlp", lca=True, lca_max_bytes=10_000), db=db)
    with RunDB(db) as r:
        assert len(r.runs()) == n_runs  # refused before any run row
    with pytest.raises(ValueError, match="lca_max_bytes must be a positive integer"):
        TrainConfig(lca_max_bytes=0).resolved()
    with pytest.raises(TypeError, match="lca must be true or false"):
        TrainConfig(lca="yes").resolved()


def test_resume_after_a_crash_saves_the_same_parameters(tmp_path, monkeypatch):
    fields = dict(model="mlp", model_config={"hidden": [8]}, epochs=2, lca=True,
                  checkpoint_every=5, instrument=False, hist_every=0)
    ref_db = str(tmp_path / "ref.sqlite")
    ref = train(fields, db=ref_db)
    db = str(tmp_path / "crash.sqlite")
    original = Session.train_step

    def crashing(self, idx, recorder):
        if self.step == 17:
            raise RuntimeError("simulated crash")
        return original(self, idx, recorder)

    monkeypatch.setattr(Session, "train_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(fields, db=db)
    with RunDB(db) as r:
        assert r.param_steps(1)[-1] == 17  # rows past the checkpoint (15) were committed
    # resume, crash again at step 16 (before the rows 16, 17 are rewritten): the rows past
    # the checkpoint were dropped on resume, so the record ends at the new stopping point
    stop_at = [16]

    def crashing_again(self, idx, recorder):
        if self.step == stop_at[0]:
            raise RuntimeError("simulated crash")
        return original(self, idx, recorder)

    monkeypatch.setattr(Session, "train_step", crashing_again)
    with pytest.raises(RuntimeError):
        train(db=db, resume=1)
    with RunDB(db) as r:
        assert r.param_steps(1) == list(range(17))
    monkeypatch.setattr(Session, "train_step", original)
    out = train(db=db, resume=1)
    assert out["status"] == "finished"
    with RunDB(db) as a, RunDB(ref_db) as b:
        assert a.param_steps(1) == b.param_steps(ref["run_id"]) == list(range(25))
        for t in range(25):
            assert a.load_params(1, t).tobytes() == b.load_params(ref["run_id"], t).tobytes()


# ------------------------------------------------------------------------ bad input and CLI
def test_bad_input_is_named(tmp_path, run):
    db, s = run
    plain = str(tmp_path / "plain.sqlite")
    p = train(dict(model="mlp", epochs=1, instrument=False), db=plain)
    with pytest.raises(RecordError, match="did not save its parameters.*lca=True"):
        lca.allocate(plain, p["run_id"])
    with pytest.raises(RecordError, match="no run 99"):
        lca.allocate(db, 99)
    for kw, msg in ((dict(method="rk4"), "unknown LCA method"), (dict(tol=0), "tolerance"),
                    (dict(max_splits=6), "power of two"), (dict(split="val"), "split must"),
                    (dict(chunk=0), "chunk must"), (dict(start=30), "no step to allocate"),
                    (dict(stop=40), r"steps 0..39 need the points 0..40, and \[25, 26"),
                    (dict(start=3, stop=3), "at least two points")):
        with pytest.raises(ValueError, match=msg):
            lca.allocate(db, s["run_id"], **kw)
    # parameters of another model: a record whose config names a different network
    with RunDB(db) as r:
        r.con.execute("UPDATE runs SET config = ? WHERE id = ?",
                      (json.dumps(dict(r.run(s["run_id"])["config"], model_config={})),
                       s["run_id"]))
        r.commit()
    try:
        with pytest.raises(ValueError, match="belongs to another model"):
            lca.allocate(db, s["run_id"])
    finally:
        with RunDB(db) as r:
            r.con.execute("UPDATE runs SET config = ? WHERE id = ?",
                          (json.dumps(dict(r.run(s["run_id"])["config"],
                                           model_config={"hidden": [16]})), s["run_id"]))
            r.commit()


def test_cli(tmp_path, run, capsys):
    db, s = run
    out = tmp_path / "out"
    assert cli.main(["lca", "--db", db, "--run", str(s["run_id"]), "--stop", "6",
                     "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["steps"] == 6 and summary["steps_within_tol"] == 6
    assert sorted(p.name for p in out.iterdir()) == [
        "lca.json", "lca.npz", "lca_helped.png", "lca_helped.svg", "lca_trajectory.png",
        "lca_trajectory.svg"]
    assert cli.main(["lca", "--db", db, "--run", str(s["run_id"]), "--stop", "3"]) == 0
    text = capsys.readouterr().out
    assert "net.1.weight" in text and "parameters helping per step" in text
    assert cli.main(["lca", "--db", db]) == 2
    assert "give --db and --run" in capsys.readouterr().err
    assert cli.main(["lca", "--db", db, "--run", str(s["run_id"]), "--max-splits", "5"]) == 2
    assert "power of two" in capsys.readouterr().err
    assert cli.main(["lca", "--study", "--models", "vgg"]) == 2
    assert "unknown model" in capsys.readouterr().err


def test_quick_study(tmp_path):
    from fpsim.analysis import lca as study
    cfg = study.StudyConfig.quick_config(epochs=1)
    summary = study.run_study(cfg, str(tmp_path / "s"), log=lambda *a: None)
    rows = summary["rows"]
    assert {(r["policy"], r["method"]) for r in rows} == {
        ("fp32", "simpson"), ("fp32", "first_order"), ("fp8", "simpson")}
    assert all(r["steps_within_tol"] == r["steps"] for r in rows if r["method"] == "simpson")
    assert sorted(summary["figures"]) == ["lca_helped.png", "lca_layers.png",
                                          "lca_reconstruction.png", "lca_trajectories.png"]
    table = (tmp_path / "s" / "table.md").read_text()
    assert "fp8 − fp32" in table and "first_order" in table
