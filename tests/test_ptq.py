"""Post-training quantization of models (fpsim.training.ptq, ``fpsim ptq``): weights exactly on
their integer grids, calibration rows equal to the layers' real inputs, the budget kept, the
greedy refit optimal, clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest

import fpsim
from fpsim import engine as E
from fpsim.cli import main
from fpsim.numerics import multipoint as mp
from fpsim.training import nn, ptq
from fpsim.training.loop import train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A LeNet trained 2 epochs on digits (conv and linear layers), recorded."""
    db = str(tmp_path_factory.mktemp("ptq") / "runs.sqlite")
    s = train(dict(model="lenet", dataset="digits", epochs=2, instrument=False, hist_every=0),
              db=db)
    tm = ptq.load_run(db, s["run_id"])
    return db, s["run_id"], tm, ptq.calibration_batch(tm.data, 64)


@pytest.mark.parametrize("method,kw", [("uniform", {}), ("uniform", {"clip_search": True}),
                                       ("greedy", {"points": 2}), ("adaptive", {}),
                                       ("random", {}), ("mixed", {})])
def test_weights_lie_exactly_on_their_grids(run, method, kw):
    """Every point a·q round-trips through IntGrid(b, a, symmetric) encode/decode bit for bit,
    the integers lie in -m..m, and the layer's float32 weight is the float64 sum rounded once."""
    _, _, tm, calib = run
    res = ptq.quantize_model(tm.model, calib, ptq.PTQConfig(bits=3, method=method, **kw))
    qmods = dict(ptq.quantizable(res.model))
    for layer in res.layers:
        m = (1 << (layer.bits - 1)) - 1
        total = np.zeros(int(np.prod(layer.shape[1:])) * layer.shape[0]).reshape(layer.shape[0], -1)
        for j, p in enumerate(layer.points):
            for a, q in zip(p.scales, p.ints):
                assert np.abs(q).max() <= m
                if a == 0:
                    continue
                grid = fpsim.IntGrid(layer.bits, a, symmetric=True)
                v = a * q.astype(np.float64)
                back = fpsim.decode(fpsim.encode(v, grid), grid)
                assert np.array_equal(back.view(np.uint64), v.view(np.uint64))
                total[j] += v
        w = qmods[layer.name].weight.data
        assert np.array_equal(w.reshape(layer.shape[0], -1).view(np.uint32),
                              total.astype(np.float32).view(np.uint32))


def test_greedy_points_are_least_squares_optimal_for_their_pattern(run):
    """Each fitted scale equals the direct least-squares solve for its integer vector."""
    _, _, tm, calib = run
    res = ptq.quantize_model(tm.model, calib, ptq.PTQConfig(bits=2, method="greedy", points=3))
    W = ptq.weight_rows(dict(ptq.quantizable(tm.model))[res.layers[0].name])
    for w, p in zip(W, res.layers[0].points):
        r = w.copy()
        for a, q in zip(p.scales, p.ints):
            direct = np.linalg.lstsq(q[:, None].astype(float), r, rcond=None)[0][0]
            assert a == pytest.approx(direct, rel=1e-12, abs=1e-300)
            r = r - a * q


def test_calibration_rows_are_the_layer_inputs(run):
    """A layer's calibration rows times its weight rows give its pre-bias output exactly as the
    model computes it (conv through im2col), checked against a hand-written convolution."""
    _, _, tm, calib = run
    x = calib[:3]
    rows = ptq.calibration_inputs(tm.model, x, max_rows=10 ** 9)
    conv = ptq.quantizable(tm.model)[0][1]
    X, amax = rows[ptq.quantizable(tm.model)[0][0]]
    w = conv.weight.data.astype(np.float64)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, c, h, ww = x.shape
    ref = np.zeros((n, w.shape[0], h, ww))
    for i in range(h):
        for j in range(ww):
            ref[:, :, i, j] = np.einsum("nckl,ockl->no", xp[:, :, i:i + 3, j:j + 3], w)
    got = (X @ ptq.weight_rows(conv).T).reshape(n, h, ww, -1).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    assert amax == float(np.abs(x).max())


@pytest.mark.parametrize("method", ["adaptive", "random"])
def test_allocation_keeps_the_budget(run, method):
    """round((budget - 1)·rows) extra points per layer, at most n_max per row, at least one."""
    _, _, tm, calib = run
    res = ptq.quantize_model(tm.model, calib, ptq.PTQConfig(bits=2, method=method,
                                                              budget=1.25, n_max=3))
    for layer in res.layers:
        rows = layer.shape[0]
        assert layer.counts.sum() == rows + round(0.25 * rows)
        assert layer.counts.min() >= 1 and layer.counts.max() <= 3


def test_adaptive_lowers_output_error_more_than_random(run):
    """Extra points to the worst rows cut the layers' summed output error more than the same
    number of points at random (measured on the calibration inputs the rule sees)."""
    _, _, tm, calib = run
    err = {m: sum(l.output_error for l in ptq.quantize_model(
        tm.model, calib, ptq.PTQConfig(bits=2, method=m, budget=1.5)).layers)
        for m in ("greedy", "adaptive", "random")}
    assert err["adaptive"] < err["random"] < err["greedy"]


def test_mixed_widths_keep_the_bit_budget(run):
    """Per-layer widths within b..8 whose integer bits stay within budget·b per weight."""
    _, _, tm, calib = run
    res = ptq.quantize_model(tm.model, calib, ptq.PTQConfig(bits=2, method="mixed", budget=2))
    n = sum(np.prod(l.shape) for l in res.layers)
    used = sum(l.bits * np.prod(l.shape) for l in res.layers)
    assert all(2 <= l.bits <= 8 for l in res.layers)
    assert used <= 2 * 2 * n and any(l.bits > 2 for l in res.layers)


def test_eight_bits_keep_the_accuracy_and_activation_casts_apply(run):
    """At 8 bits the test predictions barely change; 8-bit activations round each layer input
    onto its grid (the hook's output is on IntGrid(8, amax/127))."""
    _, _, tm, calib = run
    x, y = tm.data.x_test, tm.data.y_test
    _, acc0 = ptq.evaluate(tm.model, x, y)
    res = ptq.ptq(tm.model, calib, x, y, bits=8, method="greedy", act_bits=8)
    assert abs(res.accuracy - acc0) <= 0.01
    name, mod = ptq.quantizable(res.model)[0]
    seen = {}
    mod.register_hook("input", lambda m, t: seen.setdefault("x", t.data) is None or t,
                      owner="t", order=10 ** 9)
    with E.no_grad():
        res.model.eval()(E.Tensor(calib[:4]))
    amax = ptq.calibration_inputs(tm.model, calib)[name][1]
    k = seen["x"] / (amax / 127)
    np.testing.assert_allclose(k, np.rint(k), atol=1e-3)


def test_the_original_model_is_unchanged(run):
    _, _, tm, calib = run
    before = {k: v.copy() for k, v in tm.model.state_dict().items()}
    ptq.quantize_model(tm.model, calib, ptq.PTQConfig(bits=2))
    after = tm.model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_bad_input_names_the_problem(run, tmp_path):
    db, rid, tm, calib = run
    with pytest.raises(ValueError, match="out of range"):
        ptq.PTQConfig(bits=9)
    with pytest.raises(ValueError, match="out of range"):
        ptq.PTQConfig(bits=1)
    with pytest.raises(ValueError, match="below one point per channel"):
        ptq.PTQConfig(bits=4, budget=0.9)
    with pytest.raises(ValueError, match="unknown"):
        ptq.PTQConfig(bits=4, method="best")
    with pytest.raises(ValueError, match="calibration set is empty"):
        ptq.quantize_model(tm.model, calib[:0], ptq.PTQConfig(bits=4))
    with pytest.raises(ValueError, match="at least one example"):
        ptq.calibration_batch(tm.data, 0)
    from fpsim.models import build
    mlp = build("mlp", {"input_shape": (1, 8, 8), "num_classes": 10})
    with pytest.raises(ValueError, match="checkpoint of another model"):
        ptq.load_weights(mlp, {f"model/{k}": v for k, v in tm.model.state_dict().items()})
    assert main(["ptq", "--db", db, "--run", str(rid + 99)]) == 2
    assert main(["ptq", "--db", db, "--run", str(rid), "--bits", "9"]) == 2
    assert main(["ptq", "--db", db, "--run", str(rid), "--budget", "0.5"]) == 2
    assert main(["ptq", "--db", db, "--run", str(rid), "--calib", "0"]) == 2
    assert main(["ptq", "--bits", "4"]) == 2


def test_cli_quantizes_a_run(run, capsys):
    db, rid, _, _ = run
    assert main(["ptq", "--db", db, "--run", str(rid), "--bits", "4", "--json"]) == 0
    import json
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["bits"] == 4 and len(out["layers"]) == 4
    assert out["accuracy"] >= out["float32_accuracy"] - 0.05 and out["effective_bits"] > 4
