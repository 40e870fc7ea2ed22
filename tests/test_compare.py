"""fpsim compare / report: one study, every plot, the summary table; the shadow underflow
measurement against a hand computation."""

import json

import numpy as np
import pytest

import fpsim
from fpsim import cli
from fpsim.training.study import compare
from fpsim.training.records import RecordError, RunDB
from fpsim.training.loop import Session, TrainConfig

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    cfg = {"model": "mlp", "dataset": "digits", "policy": "mixed_fp16", "epochs": 2,
           "hist_every": 5}
    summary = compare(cfg, ("fp32", "none", "static:256", "adaptive"), (0, 1),
                      db=str(d / "s.sqlite"), out=str(d / "report"), name="t", shadow_every=3)
    return d, summary


def test_compare_writes_every_plot_and_the_table(study):
    d, summary = study
    files = set(summary["files"])
    for name in ("curves", "underflow", "hist_none", "hist_static_256", "hist_adaptive"):
        assert {f"{name}.png", f"{name}.svg"} <= files, name
    assert "report.md" in files
    md = (d / "report" / "report.md").read_text()
    # the loss scales are drawn, or the report says why not (here: constant in every run)
    assert "loss_scale.png" in files or "Per-site scales constant over the whole run" in md
    for f in files - {"report.md"}:
        data = (d / "report" / f).read_bytes()
        if f.endswith(".png"):
            assert data[:8] == PNG and len(data) > 5000, f
        else:
            assert b"<svg" in data[:2000], f
    md = (d / "report" / "report.md").read_text()
    assert "| static 256 | 2 |" in md and "![" in md and "(curves.png)" in md
    rows = {r["label"]: r for r in summary["rows"]}
    assert list(rows) == ["fp32", "none", "static 256", "adaptive"]
    assert all(r["seeds"] == [0, 1] for r in rows.values())
    assert rows["fp32"]["flushed"] is None  # no cast sites at all
    assert rows["fp32"]["underflow"] is None
    assert rows["none"]["flushed"] > rows["static 256"]["flushed"]
    assert rows["none"]["underflow"] > rows["static 256"]["underflow"] > 0
    # the table's interval is the t interval of the two seeds' values
    accs = [r["test_accuracy"] for r in summary["rows"] if r["label"] == "none"]
    assert rows["none"]["test_accuracy_ci"] is not None and accs


def test_same_seed_same_initialization_and_data_order_under_every_scaler(study):
    d, summary = study
    with RunDB(str(d / "s.sqlite")) as db:
        runs = db.runs(summary["study"])
        first = {(r["name"], r["seed"]): db.steps(r["id"])["loss"][0] for r in runs}
    # step 0's loss is computed before any update: it depends on init, data and the forward
    # format only (fp16 forward for every scaler but fp32)
    for seed in (0, 1):
        vals = {first[(n, seed)] for n in ("none", "static 256", "adaptive")}
        assert len(vals) == 1
    assert first[("none", 0)] != first[("none", 1)]


def test_report_command_redraws_and_lists(study, tmp_path, capsys):
    d, summary = study
    out = tmp_path / "again"
    assert cli.main(["report", str(d / "s.sqlite"), "--out", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["study"] == summary["study"] and len(got["rows"]) == 4
    assert (out / "hist_adaptive.png").read_bytes()[:8] == PNG
    assert (out / "hist_adaptive.svg").exists()
    assert cli.main(["report", str(d / "s.sqlite"), "--list"]) == 0
    assert capsys.readouterr().out.strip() == summary["study"]
    assert cli.main(["report", str(d / "s.sqlite"), "--study", "nope"]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


def test_compare_errors(tmp_path, capsys):
    assert cli.main(["compare", "--config", "no-such-config", "--db", str(tmp_path / "x")]) == 2
    assert "unknown experiment config" in capsys.readouterr().err
    assert cli.main(["compare", "--scalers", "none,static", "--db", str(tmp_path / "x")]) == 2
    assert "needs a scale" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must not set 'scaler'"):
        compare({"model": "mlp", "scaler": "none"})
    db = tmp_path / "plain.sqlite"
    RunDB(str(db)).close()
    with pytest.raises(RecordError, match="holds no run"):
        from fpsim.analysis.report import write_report
        write_report(str(db), str(tmp_path / "r"))


def test_shadow_underflow_equals_a_hand_computation():
    """One Linear layer, fp16 forward and E4M3 gradients: the site's shadow count is the
    number of elements of dL/dlogits non-zero in float32 but zero once the step is emulated
    (fp16 forward, loss gradient rounded to E4M3), recomputed with numpy and fpsim.quantize."""
    policy = {"activations": "float16", "weights": "float16",
              "activation_grads": "float8_e4m3fn", "weight_grads": "float8_e4m3fn"}
    cfg = TrainConfig(model="mlp", policy=policy, shadow_every=1, batch_size=128,
                      model_config={"hidden": []}).resolved()
    s = Session(cfg)
    idx = np.arange(128)
    lin = s.model.net.layers[1]
    W, b = lin.weight.data.copy(), lin.bias.data.copy()
    m = s.train_step(idx, None)
    x = s.data.x_train[idx].reshape(128, -1)
    y = s.data.y_train[idx]
    q = lambda a: fpsim.quantize(a.astype(np.float32), "float16")  # noqa: E731

    def dlogits(z):
        z = z.astype(np.float32)
        e = np.exp(z - z.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
        p[np.arange(128), y] -= 1
        return p * np.float32(1 / 128)
    ref = dlogits(x @ W.T + b)
    emu = fpsim.quantize(dlogits(q(q(x) @ q(W).T + q(b))), "float8_e4m3fn")
    want = int(((ref != 0) & (emu == 0)).sum())
    assert m["shadow"] == {"net.1": (want, int((ref != 0).sum()))}
    assert want > 0
