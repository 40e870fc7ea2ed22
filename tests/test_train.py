"""The training loop: convergence on digits, determinism, run records, interruption and
resume, bad input."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from fpsim import cli
from fpsim.training import data
from fpsim.training.records import RecordError, RunDB
from fpsim.training.loop import Session, TrainConfig, train


def _final_state(db, run_id):
    with RunDB(db) as r:
        step, state = r.load_checkpoint(run_id)
    return step, state


def _assert_states_equal(a, b):
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(np.atleast_1d(a[k]).view(np.uint8), np.atleast_1d(b[k]).view(np.uint8)), k


def test_mlp_digits_fp32_and_mixed_fp16(tmp_path):
    """Issue targets: fp32 >= 95% test accuracy; mixed_fp16 within 1 point on the same seed."""
    db = tmp_path / "runs.sqlite"
    fp32 = train({"model": "mlp", "policy": "fp32"}, db=db)
    fp16 = train({"model": "mlp", "policy": "mixed_fp16"}, db=db)
    assert fp32["test_accuracy"] >= 0.95
    assert abs(fp16["test_accuracy"] - fp32["test_accuracy"]) <= 0.01
    assert fp32["grad_underflow_rate"] == 0.0  # no cast sites at all
    assert 0 < fp16["grad_underflow_rate"] < 0.5  # fp16 gradients without loss scaling


def test_cnn_digits_fp32_reaches_97_percent(tmp_path):
    r = train({"model": "cnn", "policy": "fp32", "instrument": False}, db=tmp_path / "r.sqlite")
    assert r["test_accuracy"] >= 0.97


def test_same_seed_and_config_give_bit_identical_runs(tmp_path):
    cfg = {"model": "mlp", "epochs": 2, "seed": 5,
           "policy": {"preset": "mixed_fp16", "weight_grads": "float16:sr"}}
    db = tmp_path / "r.sqlite"
    a, b = train(cfg, db=db), train(cfg, db=db)
    _assert_states_equal(_final_state(db, a["run_id"])[1], _final_state(db, b["run_id"])[1])
    with RunDB(db) as r:
        sa, sb = r.steps(a["run_id"]), r.steps(b["run_id"])
        assert np.array_equal(sa["loss"], sb["loss"])
        ea, eb = r.site_events(a["run_id"]), r.site_events(b["run_id"])
        assert [{**e, "run_id": 0} for e in ea] == [{**e, "run_id": 0} for e in eb]
    other = train({**cfg, "seed": 6}, db=db)
    assert not np.array_equal(_final_state(db, other["run_id"])[1]["model/net.1.weight"],
                              _final_state(db, a["run_id"])[1]["model/net.1.weight"])


def test_run_record_contents(tmp_path):
    db = tmp_path / "r.sqlite"
    s = train({"model": "mlp", "policy": "mixed_fp16", "epochs": 2, "hist_every": 5}, db=db)
    steps = s["steps"]
    assert steps == 2 * -(-1438 // 128)
    with RunDB(db) as r:
        run = r.run(s["run_id"])
        assert run["status"] == "finished" and run["summary"]["steps"] == steps
        assert run["config"]["policy"] == "mixed_fp16" and run["versions"]["fpsim"]
        st = r.steps(s["run_id"])
        assert list(st["step"]) == list(range(steps))
        ev = r.site_events(s["run_id"])
        sites = Session(TrainConfig(model="mlp", policy="mixed_fp16").resolved()).sites
        per_step = sum((x.forward is not None) + (x.backward is not None) for x in sites)
        assert len(ev) == steps * per_step
        hist = r.histograms(s["run_id"])
        assert sorted({h["step"] for h in hist}) == list(range(0, steps, 5))
        # a histogram's counts add up with zeros/infs/nans to the site's total
        one = hist[0]
        match = [e for e in ev if (e["step"], e["site"], e["role"]) ==
                 (one["step"], one["site"], one["role"])][0]
        assert one["counts"].sum() + one["zeros"] + one["infs"] + one["nans"] == match["total"]
        epochs = r.epochs(s["run_id"])
        assert [e["epoch"] for e in epochs] == [0, 1]
        assert epochs[-1]["test_accuracy"] == s["test_accuracy"]
        # evaluation at the epoch end reports into no step: every step's input site rounded
        # exactly its batch (the last batch of an epoch is partial)
        inputs = {e["step"]: e["total"] for e in ev if e["site"] == "input"}
        batch = [64 * (1438 - 128 * (k % 12) if k % 12 == 11 else 128) for k in range(steps)]
        assert [inputs[k] for k in range(steps)] == batch
        # the step's underflow rate is the sum over gradient sites of the recorded counts
        ev0 = [e for e in ev if e["step"] == 3 and e["role"].endswith("-grad")]
        under = sum(e["underflow"] for e in ev0)
        assert under == 0 or st["grad_underflow_rate"][3] > 0


def _cli_train(db, *extra):
    return [sys.executable, "-m", "fpsim", "train", "--model", "mlp", "--policy",
            "mixed_fp16", "--epochs", "60", "--checkpoint-every", "7", "--db", str(db),
            "--no-progress", "--json", *extra]


def _wait_for_checkpoint(db, proc, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        if os.path.exists(db):
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                n = con.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
                con.close()
                if n:
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_resumes_bit_identically(tmp_path, sig):
    """Kill `fpsim train` mid-run (SIGTERM: it checkpoints and stops; SIGKILL: it dies at
    once), resume it, and compare the final weights with an uninterrupted run."""
    db = tmp_path / "killed.sqlite"
    proc = subprocess.Popen(_cli_train(db), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for_checkpoint(str(db), proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    with RunDB(db) as r:
        run = r.run(1)
        step, _ = r.load_checkpoint(1)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130, err
        assert json.loads(out)["status"] == "interrupted" and run["status"] == "interrupted"
    else:
        assert run["status"] == "running"
    total = 60 * -(-1438 // 128)
    assert 0 < step < total
    resumed = subprocess.run(_cli_train(db, "--resume", "1"), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["steps"] == total and summary["status"] == "finished"
    ref_db = tmp_path / "ref.sqlite"
    ref = train({"model": "mlp", "policy": "mixed_fp16", "epochs": 60, "checkpoint_every": 7},
                db=ref_db)
    _assert_states_equal(_final_state(db, 1)[1], _final_state(ref_db, ref["run_id"])[1])
    with RunDB(db) as r, RunDB(ref_db) as q:
        assert np.array_equal(r.steps(1)["loss"], q.steps(ref["run_id"])["loss"])
        assert len(r.site_events(1)) == len(q.site_events(ref["run_id"]))
        assert [e["test_accuracy"] for e in r.epochs(1)] == \
            [e["test_accuracy"] for e in q.epochs(ref["run_id"])]
    assert summary["test_accuracy"] == ref["test_accuracy"]


def _snapshot(path):
    return path.read_bytes(), os.stat(path).st_mtime_ns


@pytest.mark.parametrize("kind", ["random bytes", "other application", "truncated fpsim db"])
def test_corrupt_or_foreign_database_is_refused_and_untouched(tmp_path, kind):
    path = tmp_path / "x.sqlite"
    if kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
        message = "not an SQLite database"
    elif kind == "other application":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE songs (title TEXT)")
        con.commit()
        con.close()
        message = "another application"
    else:
        train({"model": "mlp", "epochs": 1}, db=path)
        os.remove(str(path) + "-wal") if os.path.exists(str(path) + "-wal") else None
        raw = path.read_bytes()
        path.write_bytes(raw[:len(raw) // 2] + b"\x00" * 64)
        message = "damaged|malformed|not an SQLite"
    before = _snapshot(path)
    with pytest.raises(RecordError, match=message):
        train({"model": "mlp", "epochs": 1}, db=path)
    assert _snapshot(path) == before
    assert cli.main(["train", "--db", str(path), "--epochs", "1"]) == 2
    assert _snapshot(path) == before
    if kind != "truncated fpsim db":  # (read through SQLite: no journal file beside it)
        assert os.listdir(tmp_path) == ["x.sqlite"]


@pytest.mark.parametrize("cfg, message", [
    ({"model": "vgg"}, "unknown model 'vgg'"),
    ({"dataset": "imagenet"}, "unknown dataset"),
    ({"policy": "fp7"}, "unknown precision policy"),
    ({"policy": {"activations": "e9m99"}}, "e9m99|exp_bits|man_bits"),
    ({"policy": {"activation": "fp16"}}, "unknown policy field"),
    ({"optimizer": "lion"}, "unknown optimizer"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"lr": -1.0}, "lr must be a positive number"),
    ({"model": "cnn", "dataset": "mnist1d"}, "LeNet needs"),
    ({"modle": "mlp"}, "unknown training config key"),
])
def test_bad_configuration_is_named(tmp_path, cfg, message):
    with pytest.raises((ValueError, TypeError), match=message):
        train(cfg, db=tmp_path / "r.sqlite")


def test_nan_in_data_is_named(tmp_path, monkeypatch):
    real = data.load

    def poisoned(name, **kw):
        d = real(name, **kw)
        x = d.x_train.copy()
        x[3, 0, 2, 2] = np.nan
        return data.Dataset(d.name, x, d.y_train, d.x_test, d.y_test, d.task, d.num_classes,
                            d.input_shape, d.attribution)
    with pytest.raises(ValueError, match="NaN"):
        monkeypatch.setattr(data, "load", poisoned)
        train({"model": "mlp", "epochs": 1}, db=tmp_path / "r.sqlite")


def test_wrong_input_shape_is_named():
    s = Session(TrainConfig(model="mlp").resolved())
    from fpsim.engine import Tensor
    with pytest.raises(ValueError, match="Linear"):
        s.model(Tensor(np.zeros((2, 1, 8, 9), np.float32)))


def test_cli_train_json_and_toml_config(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('model = "mlp"\nepochs = 1\n[policy]\npreset = "mixed_bf16"\n'
                   'weight_grads = "float16"\n')
    db = tmp_path / "r.sqlite"
    assert cli.main(["train", "--config", str(cfg), "--db", str(db), "--json", "--seed", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"test_accuracy", "final_loss", "steps", "skipped_steps",
                        "grad_underflow_rate", "run_id", "db"}
    with RunDB(db) as r:
        config = r.run(out["run_id"])["config"]
    assert config["seed"] == 3 and config["policy"]["weight_grads"] == "float16"
    assert cli.main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    cfg.write_text("model = [")
    assert cli.main(["train", "--config", str(cfg)]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_resume_needs_an_unfinished_run(tmp_path):
    db = tmp_path / "r.sqlite"
    s = train({"model": "mlp", "epochs": 1}, db=db)
    with pytest.raises(RecordError, match="already finished"):
        train(db=db, resume=s["run_id"])
    with pytest.raises(RecordError, match="no unfinished run"):
        train(db=db, resume=True)
    with pytest.raises(RecordError, match="no run 99"):
        train(db=db, resume=99)


def test_cli_train_with_a_scaler_and_shadow_measurement(tmp_path, capsys):
    db = tmp_path / "r.sqlite"
    assert cli.main(["train", "--epochs", "1", "--policy", "mixed_fp16", "--scaler",
                     "static:128", "--shadow-every", "4", "--db", str(db), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    with RunDB(db) as r:
        cfg = r.run(out["run_id"])["config"]
        steps = r.steps(out["run_id"])
        ev = r.site_events(out["run_id"])
    assert cfg["scaler"] == "static:128" and cfg["shadow_every"] == 4
    assert set(steps["loss_scale"]) == {128.0}
    shadow_steps = sorted({e["step"] for e in ev if e["shadow_total"] is not None})
    assert shadow_steps == list(range(0, out["steps"], 4))
    assert cli.main(["train", "--scaler", "static", "--db", str(db)]) == 2
    assert "needs a scale" in capsys.readouterr().err


def test_an_empty_database_name_is_refused(tmp_path, capsys):
    # SQLite opens a temporary database for '': every record would be thrown away
    with pytest.raises(RecordError, match="'' is not a database file name"):
        RunDB("")
    from fpsim import cli
    assert cli.main(["train", "--db", "", "--epochs", "1"]) == 2
    assert "not a database file name" in capsys.readouterr().err


def test_recorded_blas_does_not_depend_on_what_else_is_loaded():
    """The recorded BLAS is numpy's: loading scipy.stats (whose wheel brings its own OpenBLAS)
    between two runs must not make a resumed run look as if its BLAS changed."""
    import subprocess
    import sys

    code = ("import json; from fpsim.training import determinism as d; a = d.blas_info(); "
            "import scipy.stats; b = d.blas_info(); print(json.dumps([a, b]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    before, after = json.loads(out)
    assert before and before == after
    from fpsim.training import determinism
    assert determinism.setting_differences({"blas": before}, {"blas": after}) == []
