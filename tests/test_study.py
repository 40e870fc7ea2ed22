"""Studies: the command-line policy syntax, the loss weight, seed statistics, the metrics'
definitions on crafted records, reports of ``fpsim train`` databases and of collapsed runs."""

import json
import math

import numpy as np
import pytest
from scipy import stats as sstats

from fpsim import cli
from fpsim.analysis import diagnose
from fpsim.analysis.runs import RunData, mean_ci, summary_table
from fpsim.cli.compare import parse_policies
from fpsim.training.loop import Session, TrainConfig, train
from fpsim.training.precision import policy, policy_from_text
from fpsim.training.records import RunDB
from fpsim.training.study import cells

PNG = b"\x89PNG\r\n\x1a\n"
TINY = {"model": "mlp", "dataset": "digits", "epochs": 1, "batch_size": 256,
        "model_config": {"hidden": [16]}}


# -- policies on the command line ----------------------------------------------------------------

def test_policy_words():
    assert policy_from_text("mixed_bf16") == "mixed_bf16"
    p = policy("e3m4:sr")
    for role in ("activations", "weights", "activation_grads", "weight_grads"):
        c = p.casts[role]
        assert (c.format.exp_bits, c.format.man_bits, c.rounding) == (4 - 1, 4, "sr")
    assert p.casts["optimizer_state"] is None
    p = policy("fwd=e4m3+grads=e5m2:rtz:saturate")
    assert str(p.casts["activations"]) == "float8_e4m3fn:rne:ieee"
    assert str(p.casts["weight_grads"]) == "float8_e5m2:rtz:saturate"
    p = policy("activation-grads=fp16,weights=bf16")
    assert str(p.casts["activation_grads"]) == "float16:rne:ieee"
    assert str(p.casts["weights"]) == "bfloat16:rne:ieee" and p.casts["activations"] is None
    assert policy_from_text("fp32") == "fp32"


@pytest.mark.parametrize("text, message", [
    ("fp7", "unknown precision policy 'fp7'"),
    ("bogus=e5m2", "unknown role 'bogus'"),
    ("grads=", "is not ROLE=FORMAT"),
    ("grads=e5m2:xx", "rounding"),
])
def test_policy_word_errors(text, message):
    with pytest.raises(ValueError, match=message):
        policy(text)


def test_policies_flag_groups_role_items():
    got = parse_policies(["mixed_fp16,fwd=e4m3,grads=e5m2,mixed_bf16", "e3m4:sr;grads=e5m2"])
    assert got[0] == "mixed_fp16" and got[2] == "mixed_bf16"
    assert got[1]["activations"] == "e4m3" and got[1]["weight_grads"] == "e5m2"
    assert got[3]["name"] == "e3m4:sr" and got[4] == {"name": "grads=e5m2",
                                                       "activation_grads": "e5m2",
                                                       "weight_grads": "e5m2"}
    assert parse_policies(None) is None
    with pytest.raises(ValueError, match="unknown role"):
        parse_policies(["mixed_fp16,foo=e5m2"])


def test_cells_cross_policies_and_scalers():
    plan = cells({"model": "mlp"}, ("fp32", "none", "dynamic"), ["mixed_fp16", "mixed_bf16"])
    assert [label for label, _ in plan] == ["fp32", "mixed_fp16 / none", "mixed_fp16 / dynamic",
                                            "mixed_bf16 / none", "mixed_bf16 / dynamic"]
    assert plan[0][1]["policy"] == "fp32" and plan[4][1] == {"model": "mlp",
                                                              "policy": "mixed_bf16",
                                                              "scaler": "dynamic"}
    single = cells({"model": "mlp", "policy": "mixed_fp16"}, ("none", "static:8"))
    assert [label for label, _ in single] == ["none", "static 8"]


# -- the loss weight ----------------------------------------------------------------------------

def test_loss_weight_with_scaled_lr_is_bit_identical_in_float32():
    """SGD on 2^-12 x the loss at 2^12 x the learning rate: every float32 operation sees
    operands scaled by exact powers of two, so the weights are the same bits."""
    def weights(cfg):
        s = Session(TrainConfig.from_dict({**TINY, "optimizer": "sgd", **cfg}).resolved())
        for k in range(3):
            s.train_step(np.arange(64 * k, 64 * k + 64), None)
        return [p.data.copy() for p in s.params]
    a = weights({"lr": 0.1})
    b = weights({"lr": 0.1 * 2 ** 12, "loss_weight": 2.0 ** -12})
    c = weights({"lr": 0.1 * 3, "loss_weight": 1 / 3})
    assert all(np.array_equal(x.view(np.uint32), y.view(np.uint32)) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))  # not a power of two: differs


def test_loss_weight_validated():
    with pytest.raises(ValueError, match="loss_weight must be a positive number"):
        TrainConfig.from_dict({**TINY, "loss_weight": 0}).resolved()


# -- seed statistics ------------------------------------------------------------------------------

def test_mean_ci_is_students_t_interval():
    v = [0.61, 0.63, 0.6, 0.64, 0.62]
    m, half, n = mean_ci(v)
    lo, hi = sstats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=sstats.sem(v))
    assert n == 5 and m == pytest.approx(np.mean(v)) and half == pytest.approx((hi - lo) / 2)
    assert mean_ci([0.5]) == (0.5, None, 1)
    assert mean_ci([None, float("nan")]) == (None, None, 0)


# -- metrics on crafted records -----------------------------------------------------------------

def _crafted_db(path):
    """One run with two activation-gradient sites over two steps, made by hand."""
    with RunDB(str(path)) as db:
        rid = db.new_run("crafted", {**TINY, "policy": "mixed_fp16", "scaler": "none",
                                     "optimizer": "sgd", "lr": 0.1}, 0, {}, None)
        rows = [
            # step, site, role, total, underflow, overflow, nan, zeros, shadow lost, fp32 nz
            (0, "a", "activation-grad", 100, 10, 0, 0, 20, 30, 90),
            (0, "b", "activation-grad", 50, 5, 1, 0, 0, None, None),
            (1, "a", "activation-grad", 100, 0, 0, 2, 0, None, None),
            (1, "b", "activation-grad", 50, 20, 0, 0, 10, 10, 40),
            (1, "net.1", "activation", 200, 0, 7, 0, 0, None, None),
        ]
        for step in (0, 1):
            db.con.execute("INSERT INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           (rid, step, 0, 1.0, 0.5, 0.1, 1.0, step, 0.0, 0, 0.01))
        db.con.executemany(
            "INSERT INTO site_events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(rid, st, site, role, "backward" if "grad" in role else "forward", tot, und, 0,
              ovf, nan, 0, z, 1.0, sl, snz) for st, site, role, tot, und, ovf, nan, z, sl, snz
             in rows])
        db.con.execute("INSERT INTO epochs VALUES (?,?,?,?,?,?,?,?)",
                       (rid, 0, 2, 1.0, 0.5, 1.1, 0.4, 0.1))
        db.set_status(rid, "finished", {"seconds": 0.5})
        return RunData(db, db.run(rid))


def test_metrics_on_crafted_records(tmp_path):
    r = _crafted_db(tmp_path / "c.sqlite")
    # shadow (paper) rate per site: lost / fp32 non-zero on the shadow steps only
    assert r.shadow_rates() == {"a": 30 / 90, "b": 10 / 40}
    # kernel count: flushed / non-zero inputs, zeros left out of the denominator
    assert r.flushed_rates() == {"a": 10 / 180, "b": 25 / 90}
    assert r.event_rates("overflow") == {"a": 0.0, "b": 1 / 100}
    assert r.event_rates("nan") == {"a": 2 / 200, "b": 0.0}
    s = r.summary(target=0.3)
    assert s["underflow"] == pytest.approx((30 / 90 + 10 / 40) / 2)
    assert s["flushed"] == pytest.approx((10 / 180 + 25 / 90) / 2)
    assert s["overflow"] == pytest.approx(8 / 500) and s["nan"] == pytest.approx(2 / 500)
    assert s["time_to_target"] == 2 and r.summary(target=0.9)["time_to_target"] is None
    assert s["skipped_steps"] == 1
    row = summary_table([r], 0.3)[0]
    assert row["sites"]["a"]["underflow"] == 30 / 90 and row["time_to_target_reached"] == 1
    first = diagnose.first_nonfinite(r)
    assert (first["step"], first["site"], first["overflow"]) == (0, "b", 1)
    # the forward site comes first within a step
    r.events = [e for e in r.events if e["step"] == 1]
    assert diagnose.first_nonfinite(r)["site"] == "net.1"


# -- reports of any database -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def train_db(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    db = str(d / "runs.sqlite")
    train({**TINY, "policy": "mixed_fp16", "scaler": "dynamic", "shadow_every": 2,
           "hist_every": 1}, db=db)
    train({**TINY, "policy": "mixed_fp16", "scaler": "dynamic", "seed": 1, "shadow_every": 2,
           "hist_every": 1}, db=db)
    return d, db


def test_report_of_a_train_database(train_db, capsys):
    d, db = train_db
    out = d / "report"
    assert cli.main(["report", db, "--out", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["study"] is None and len(got["rows"]) == 1 and got["rows"][0]["seeds"] == [0, 1]
    pngs = [f for f in got["files"] if f.endswith(".png")]
    assert pngs and all((out / f).read_bytes()[:8] == PNG for f in pngs)
    assert all((out / f.replace(".png", ".svg")).exists() for f in pngs)
    md = (out / "report.md").read_text()
    assert "## Environment" in md and "numpy" in md and "BLAS" in md
    assert cli.main(["report", db, "--list"]) == 0
    listing = capsys.readouterr().out
    assert "no studies" in listing and "run 1" in listing and "run 2" in listing


@pytest.fixture(scope="module")
def collapsed(tmp_path_factory):
    """A run whose forward pass overflows e3m4 (max 15.5) at once: inputs of magnitude ~100."""
    d = tmp_path_factory.mktemp("collapse")
    db = str(d / "c.sqlite")
    s = train({**TINY, "dataset": "synthetic-classification",
               "dataset_options": {"input_scale": 100.0}, "policy": "e3m4",
               "scaler": "dynamic"}, db=db)
    return d, db, s


def test_collapsed_run_report_names_its_cause(collapsed):
    from fpsim.analysis.report import write_report
    d, db, s = collapsed
    summary = write_report(db, str(d / "r"))
    why = " ".join(summary["problems"][str(s["run_id"])])
    assert "forward overflow at input" in why or "forward overflow at net." in why
    assert "values over e3m4's max 15.5 at step 0" in why
    assert "steps skipped" in why
    md = (d / "r" / "report.md").read_text()
    assert "## What went wrong" in md and "e3m4's max 15.5" in md


def test_numpy_warnings_become_notes_not_output(collapsed, capfd):
    d, db, s = collapsed
    with RunDB(db) as rdb:
        notes = rdb.notes(s["run_id"])
    assert notes and all(n["kind"] == "warning" for n in notes)
    assert any("RuntimeWarning" in n["message"] and "fpsim/" in n["message"] for n in notes)
    # a second run prints none of them
    train({**TINY, "dataset": "synthetic-classification", "seed": 3,
           "dataset_options": {"input_scale": 100.0}, "policy": "e3m4", "scaler": "dynamic"},
          db=db)
    assert "RuntimeWarning" not in capfd.readouterr().err


def test_versions_record_threads_and_command(train_db):
    d, db = train_db
    with RunDB(db) as rdb:
        v = rdb.run(1)["versions"]
    assert v["numba_threads"] >= 1 and v["cpus"] >= 1 and "command" in v
    assert math.isfinite(v["numba_threads"])


def test_report_paths_are_the_ones_typed(train_db, monkeypatch):
    """Run from the database's directory with relative paths: report.md names no absolute
    path of this machine."""
    from fpsim.analysis.report import write_report
    d, db = train_db
    monkeypatch.chdir(d)
    write_report("runs.sqlite", "rel-report")
    md = (d / "rel-report" / "report.md").read_text()
    assert "`fpsim report runs.sqlite --out rel-report`" in md
    assert str(d) not in md


def test_report_image_kinds(train_db, capsys):
    d, db = train_db
    out = d / "png-only"
    assert cli.main(["report", db, "--out", str(out), "--images", "png", "--json"]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert any(f.endswith(".png") for f in files) and not any(f.endswith(".svg") for f in files)
    assert not list(out.glob("*.svg"))
    assert "SVG" not in (out / "report.md").read_text()
    assert cli.main(["report", db, "--out", str(out), "--images", "gif"]) == 2
    assert "--images takes png, svg" in capsys.readouterr().err


def test_report_reference_and_cells(train_db, tmp_path, capsys):
    """Paired differences against another cell: the per-seed differences of the final test
    accuracies, recomputed from the records."""
    import shutil
    d, db = tmp_path, str(tmp_path / "runs.sqlite")
    shutil.copy(train_db[1], db)  # the module's database stays as the other tests expect it
    for seed in (0, 1):
        train({**TINY, "policy": "mixed_fp16", "scaler": "none", "seed": seed}, db=db)
    ref = "mixed_fp16 / dynamic"
    assert cli.main(["report", db, "--out", str(d / "ref"), "--reference", ref, "--json"]) == 0
    rows = {r["label"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    with RunDB(db) as rdb:
        acc = {(r["config"]["scaler"], r["seed"]): rdb.epochs(r["id"])[-1]["test_accuracy"]
               for r in rdb.runs()}
    diffs = [acc[("none", s)] - acc[("dynamic", s)] for s in (0, 1)]
    assert rows["mixed_fp16 / none"]["delta"] == pytest.approx(np.mean(diffs))
    assert rows[ref]["delta"] == 0
    assert cli.main(["report", db, "--out", str(d / "ref2"), "--cells", "*none",
                     "--reference", ref, "--json"]) == 0
    assert [r["label"] for r in json.loads(capsys.readouterr().out)["rows"]] == [
        ref, "mixed_fp16 / none"]
    assert cli.main(["report", db, "--out", str(d / "ref3"), "--reference", "nope"]) == 2
    assert "no cell 'nope'" in capsys.readouterr().err


def test_report_counts_the_recorded_notes(collapsed):
    from fpsim.analysis.report import write_report
    d, db, s = collapsed
    write_report(db, str(d / "notes"))
    md = (d / "notes" / "report.md").read_text()
    section = md.split("## Events recorded")[1].split("##")[0]
    with RunDB(db) as rdb:
        n = sum(x["count"] for r in rdb.runs() for x in rdb.notes(r["id"]))
    assert f"warning notes, {n} in all" in section and "RuntimeWarning" in section


# -- review findings: each a failing input once ------------------------------------------------

def test_a_role_given_twice_is_an_error():
    with pytest.raises(ValueError, match="role activation_grads is given twice"):
        policy("fwd=e4m3+grads=e5m2+grads=e4m3")
    with pytest.raises(ValueError, match="given twice"):
        parse_policies(["fwd=e4m3+grads=e5m2,grads=e4m3"])


def test_report_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "Traceback" not in err and err.count("\n") == 1
    assert cli.main(["train", "--db", str(tmp_path), "--epochs", "1"]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert cli.main(["compare", "--policy", "mixed_fp16", "--policies", "mixed_bf16",
                     "--db", str(tmp_path / "x.sqlite")]) == 2
    assert "not both" in capsys.readouterr().err


def _run_with(tmp_path, name, epochs_acc, events=(), scales=None, seed=0, dataset="digits"):
    """A crafted run: ``epochs_acc`` test accuracies, site ``events`` (step, site, role,
    overflow, nan) in the order given, global ``scales`` per step."""
    path = str(tmp_path / "w.sqlite")
    with RunDB(path) as db:
        rid = db.new_run(name, {**TINY, "dataset": dataset, "policy": "mixed_fp16",
                                "scaler": "dynamic", "optimizer": "sgd", "lr": 0.1}, seed, {},
                         None)
        scales = scales or [1.0] * 4
        for step, sc in enumerate(scales):
            db.con.execute("INSERT INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           (rid, step, 0, 1.0, 0.5, 0.1, sc, 0, 0.0, 0, 0.01))
        db.con.executemany(
            "INSERT INTO site_events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(rid, st, site, role, "forward", 100, 0, 0, ovf, nan, 0, 0, 1.0, None, None)
             for st, site, role, ovf, nan in events])
        for e, acc in enumerate(epochs_acc):
            db.con.execute("INSERT INTO epochs VALUES (?,?,?,?,?,?,?,?)",
                           (rid, e, e + 1, 1.0, acc, 1.0, acc, 0.1))
        db.set_status(rid, "finished" if epochs_acc else "interrupted", {})
        return RunData(db, db.run(rid))


def test_diagnose_blames_the_first_site_the_step_ran(tmp_path):
    # backward casts report from the loss down: "net.3" first, "net.10" after, "net.1" last
    r = _run_with(tmp_path, "x", [0.5], events=[
        (2, "net.3", "activation-grad", 5, 0), (2, "net.10", "activation-grad", 9000, 0),
        (2, "net.1", "activation-grad", 1, 0)], scales=[1.0, 1024.0, 1024.0, 512.0])
    first = diagnose.first_nonfinite(r)
    assert first["site"] == "net.3" and first["sites"] == 3
    # the scale fell after the overflow step, from the scale at that step
    assert diagnose._scale_story(r, 2) == ("the loss scale then fell from 1024 to 512 "
                                           "(step 3)")
    r = _run_with(tmp_path, "y", [0.5], events=[(1, "net.1", "activation", 0, 4)])
    assert diagnose.explain(r, 2.0)[0].startswith("forward NaN at net.1")


def test_a_few_skipped_steps_are_not_a_problem(tmp_path):
    with RunDB(str(tmp_path / "s.sqlite")) as db:
        rid = db.new_run("d", {**TINY, "policy": "mixed_fp16", "scaler": "dynamic"}, 0, {}, None)
        for step in range(200):
            db.con.execute("INSERT INTO steps VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           (rid, step, 0, 1.0, 0.5, 0.1, 1.0, int(step < 6), 0.0, 0, 0.01))
        db.set_status(rid, "finished", {})
        assert diagnose.explain(RunData(db, db.run(rid))) == []


def test_task_comes_from_the_config_when_a_run_has_no_epochs(tmp_path):
    r = _run_with(tmp_path, "unfinished", [])
    assert r.classify and not r.epochs
    r = _run_with(tmp_path, "reg", [], dataset="synthetic-regression")
    assert not r.classify


def test_unnamed_train_runs_of_different_settings_get_different_labels(tmp_path):
    from fpsim.analysis.runs import load
    db = str(tmp_path / "l.sqlite")
    for lr, seed in ((0.1, 0), (0.1, 1), (0.05, 0)):
        train({**TINY, "policy": "mixed_fp16", "scaler": "none", "lr": lr, "seed": seed}, db=db)
    _, runs, _ = load(db)
    labels = [r.label for r in runs]
    assert labels[0] == labels[1] != labels[2] and "lr=0.05" in labels[2]
