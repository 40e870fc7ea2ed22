"""Sweeps on Dask distributed: spec parsing and its errors, stable config hashes, a real
LocalCluster of 2 worker processes on the loopback interface whose records equal in-process
``train`` bit for bit, resume after SIGINT / SIGKILL of the client with no duplicate and no lost
run, a failing run recorded with its traceback while the others finish, and the seed-aggregated
report against numpy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("distributed", reason="fpsim sweep needs dask[distributed] (test extra)")

from fpsim import cli  # noqa: E402
from fpsim.training import sweep  # noqa: E402
from fpsim.training.loop import train  # noqa: E402
from fpsim.training.records import RunDB  # noqa: E402

BASE = {"config": "digits-mlp-fp16", "epochs": 1, "shadow_every": 4, "hist_every": 5,
        "lca": True}
SPEC = {"name": "grid", "base": BASE, "axes": {"seed": [0, 1], "scaler": ["none", "dynamic"]}}
#: Columns holding wall time or the moment a row was written: not part of a run's results.
TIMES = {"seconds", "created", "finished"}


# ----------------------------------------------------------------------------- the spec
def test_spec_errors_name_the_problem(tmp_path):
    cases = [
        ({"base": {}, "axes": {}, "extra": 1}, r"unknown sweep spec key\(s\) \['extra'\]"),
        ({"base": {"epoch": 1}}, r"unknown training config key\(s\) \['epoch'\] in \[base\]"),
        ({"axes": {"scalers": ["none"]}}, r"\['scalers'\] in \[axes\]"),
        ({"axes": {"seed": []}}, "axis 'seed' is empty"),
        ({"axes": {"seed": 3}}, "axis 'seed' must be a list"),
        ({"base": {"config": "nope"}}, "unknown named config 'nope'"),
        ({"axes": {"name": ["a"]}}, "name cannot be an axis"),
    ]
    for spec, msg in cases:
        with pytest.raises(ValueError, match=msg):
            sweep.load_spec(spec)
    with pytest.raises(ValueError, match=r"sweep run optimizer=foo \(seed 0\): unknown optimizer"):
        sweep.expand(sweep.load_spec({"axes": {"optimizer": ["sgd", "foo"]}}))
    with pytest.raises(ValueError, match="twice"):
        sweep.expand(sweep.load_spec({"axes": {"seed": [1, 1]}}))
    with pytest.raises(ValueError, match="twice"):  # 1 and 1.0 are one value of a float field
        sweep.expand(sweep.load_spec({"axes": {"loss_weight": [1, 1.0]}}))
    with pytest.raises(ValueError, match="base must be a table"):
        sweep.load_spec({"base": "abc"})
    path = tmp_path / "bad.toml"
    path.write_text("[axes]\nseed = [\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        sweep.load_spec(str(path))
    assert cli.main(["sweep", str(path), "--db", str(tmp_path / "x.sqlite")]) == 2


def test_expansion_labels_and_hashes(tmp_path):
    path = tmp_path / "scalers.toml"
    path.write_text('[base]\nconfig = "digits-mlp-fp16"\nepochs = 1\n'
                    '[axes]\nseed = [0, 1]\nscaler = ["none", "dynamic"]\n')
    spec = sweep.load_spec(str(path))
    assert spec.name == "scalers" and spec.base["policy"] == "mixed_fp16"
    runs = sweep.expand(spec)
    assert [(r.label, r.seed) for r in runs] == [
        ("scaler=none", 0), ("scaler=dynamic", 0), ("scaler=none", 1), ("scaler=dynamic", 1)]
    assert len({r.hash for r in runs}) == 4
    assert sweep.expand(sweep.load_spec(str(path)))[0].hash == runs[0].hash
    # the hash is a function of the resolved config alone: the same in another process
    code = ("from fpsim.training import sweep; import sys; "
            f"print(sweep.expand(sweep.load_spec({str(path)!r}))[3].hash)")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120)
    assert other.stdout.strip() == runs[3].hash, other.stderr
    # a default left implicit and the same value written out are one config
    a = sweep.expand(sweep.load_spec({"base": {"model": "mlp"}}))[0].hash
    b = sweep.expand(sweep.load_spec({"base": {"model": "mlp", "lr": 0.1, "epochs": 30}}))[0].hash
    assert a == b


def test_scratch_of_dead_processes_is_cleared(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=60)
    stale = tmp_path / f"fpsim-sweep-{int(dead.stdout)}-abc_1"
    live = tmp_path / f"fpsim-sweep-{os.getpid()}-abc_2"
    other = tmp_path / "fpsim-sweep-notapid"
    for d in (stale, live, other):
        d.mkdir()
        (d / "run.sqlite").write_bytes(b"x")
    sweep._clear_stale_scratch(str(tmp_path))
    assert not stale.exists() and live.exists() and other.exists()


# ----------------------------------------------------------------------------- on a cluster
def _rows(rdb, table, run_id):
    cur = rdb.con.execute(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY rowid", (run_id,))
    cols = [d[0] for d in cur.description]
    keep = [i for i, c in enumerate(cols) if c not in TIMES | {"run_id"}]
    return [tuple(r[i] for i in keep) for r in cur.fetchall()]


def _same_records(db_a, id_a, db_b, id_b):
    with RunDB(db_a) as a, RunDB(db_b) as b:
        for table in ("steps", "site_events", "histograms", "scales", "epochs", "notes",
                      "tensor_scales", "params"):
            assert _rows(a, table, id_a) == _rows(b, table, id_b), table
        ca, cb = a.load_checkpoint(id_a), b.load_checkpoint(id_b)
        assert ca[0] == cb[0] and sorted(ca[1]) == sorted(cb[1])
        for k in ca[1]:
            assert ca[1][k].tobytes() == cb[1][k].tobytes(), k
        ra, rb = a.run(id_a), b.run(id_b)
        assert ra["config"] == rb["config"] and ra["status"] == rb["status"] == "finished"
        for k in ("test_accuracy", "test_loss", "final_loss", "steps", "skipped_steps",
                  "grad_underflow_rate"):
            assert ra["summary"][k] == rb["summary"][k], k


def test_copy_run_moves_every_row_and_refuses_what_it_cannot_copy(tmp_path):
    import sqlite3

    from fpsim.training.records import RecordError
    src, dst = str(tmp_path / "src.sqlite"), str(tmp_path / "dst.sqlite")
    fields = sweep.expand(sweep.load_spec({"base": BASE}))[0].fields
    first = train(fields, db=src)["run_id"]
    second = train(dict(fields, seed=1), db=src)["run_id"]
    with RunDB(dst) as d:
        with pytest.raises(RecordError, match="holds 2 runs"):
            d.copy_run(src)
        with pytest.raises(RecordError, match="no run 7"):
            d.copy_run(src, run_id=7)
        with pytest.raises(RecordError, match="into itself"):
            d.copy_run(dst)
        new = d.copy_run(src, run_id=second, study="merged", sweep_hash="h")
        assert d.run(new)["study"] == "merged" and d.sweep_runs("merged") == {
            "h": (new, "finished")}
        # a second copy of a finished sweep run is not stored twice
        assert d.copy_run(src, run_id=second, study="merged", sweep_hash="h") == new
        assert len(d.runs()) == 1
    _same_records(src, second, dst, new)
    foreign = str(tmp_path / "foreign.sqlite")
    sqlite3.connect(foreign).execute("CREATE TABLE t (x)").connection.commit()
    newer = str(tmp_path / "newer.sqlite")
    with RunDB(newer) as r:  # a run whose database has a column this fpsim lacks
        r.copy_run(src, run_id=first)
        r.con.execute("ALTER TABLE steps ADD COLUMN gpu_temp REAL")
        r.con.commit()
    with RunDB(dst) as d:
        with pytest.raises(RecordError, match="another application"):
            d.copy_run(foreign)
        with pytest.raises(RecordError, match="steps table has columns this fpsim does not "
                                               "know: gpu_temp"):
            d.copy_run(newer)
        assert len(d.runs()) == 1  # (nothing of the refused copy is left behind)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("sweep") / "study.sqlite")
    out = sweep.run_sweep(SPEC, db, workers=2)
    return db, out


def test_cluster_records_equal_in_process_training(swept, tmp_path):
    db, out = swept
    assert (out["runs"], out["finished"], out["skipped"], out["failed"]) == (4, 4, 0, 0)
    plan = sweep.expand(sweep.load_spec(SPEC))
    with RunDB(db) as r:
        done = r.sweep_runs("grid")
        assert {r_["study"] for r_ in r.runs()} == {"grid"}
    ref = str(tmp_path / "ref.sqlite")
    for run in plan[:2] + plan[3:]:  # (three of the four: each costs a training run here)
        s = train(run.fields, db=ref)
        _same_records(db, done[run.hash][0], ref, s["run_id"])
    # run again: nothing to do, nothing recomputed
    again = sweep.run_sweep(SPEC, db, workers=2)
    assert (again["finished"], again["skipped"]) == (0, 4)
    with RunDB(db) as r:
        assert len(r.runs()) == 4


def test_report_aggregates_seeds_like_numpy(swept, tmp_path):
    from scipy import stats

    from fpsim.analysis.report import write_report
    db, _ = swept
    rep = write_report(db, str(tmp_path / "rep"), "grid", images=("png",))
    with RunDB(db) as r:
        runs = r.runs("grid")
    by_cell = {}
    for run in runs:
        by_cell.setdefault(run["config"]["scaler"], []).append(run["summary"]["test_accuracy"])
    assert len(rep["rows"]) == 2
    for row in rep["rows"]:
        cell = "none" if "none" in row["label"] else "dynamic"
        v = np.array(by_cell[cell])
        assert row["test_accuracy_n"] == len(v) == 2
        assert row["test_accuracy"] == pytest.approx(v.mean(), abs=1e-15)
        half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
        assert row["test_accuracy_ci"] == pytest.approx(half, rel=1e-12, abs=1e-15)


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path):
    db = str(tmp_path / "fail.sqlite")
    # mnist without its files: the config resolves, the run raises in the worker before its
    # run row exists; weights in q2.5 with overflow=error at lr 3: it raises a few steps in
    error_policy = "weights=q2.5:rne:error"
    spec = {"name": "fails", "base": {"model": "mlp", "epochs": 1, "lr": 3.0,
                                      "instrument": False},
            "axes": {"dataset": ["digits", "mnist"], "policy": ["fp32", error_policy]}}
    out = sweep.run_sweep(spec, db, workers=2)
    assert (out["finished"], out["failed"]) == (1, 3)
    with RunDB(db) as r:
        runs = {(x["config"]["dataset"], x["config"]["policy"]): x for x in r.runs()}
        partway = runs["digits", error_policy]
        steps = len(r.steps(partway["id"])["loss"])
    assert runs["digits", "fp32"]["status"] == "finished"
    for policy in ("fp32", error_policy):
        failed = runs["mnist", policy]
        assert failed["status"] == "failed" and "mnist" in failed["summary"]["error"].lower()
        assert "Traceback" in failed["summary"]["traceback"]
    # the run that failed partway keeps the steps it did, its error and where it ran
    assert partway["status"] == "failed" and steps > 0
    assert "outside the range" in partway["summary"]["error"]
    assert "Traceback" in partway["summary"]["traceback"] and partway["summary"]["host"]
    assert partway["summary"]["run_id"] == partway["id"]
    # the failed runs are retried by the next call, the finished one is not
    again = sweep.run_sweep(spec, db, workers=2)
    assert (again["skipped"], again["failed"]) == (1, 3)


def _spec_file(tmp_path, seeds):
    path = tmp_path / "long.toml"
    path.write_text('name = "long"\n[base]\nmodel = "mlp"\nepochs = 2\ninstrument = false\n'
                    f'[axes]\nseed = {list(seeds)}\n')
    return path


@pytest.mark.parametrize("sig, group", [(signal.SIGINT, False), (signal.SIGINT, True),
                                        (signal.SIGKILL, False)],
                         ids=["sigint-client", "ctrl-c-group", "sigkill-client"])
def test_killed_client_resumes_with_no_duplicate_and_no_loss(tmp_path, sig, group):
    """SIGINT to the client, SIGINT to its whole process group (a terminal's Ctrl-C reaches
    the workers too) and SIGKILL; then the same command finishes the grid."""
    path, db = _spec_file(tmp_path, range(8)), str(tmp_path / "killed.sqlite")
    cmd = [sys.executable, "-m", "fpsim", "sweep", str(path), "--db", db, "--workers", "2",
           "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:  # wait for the first finished run in the study
        time.sleep(0.2)
        if os.path.exists(db):
            try:
                with RunDB(db) as r:
                    if r.sweep_runs():
                        break
            except Exception:  # the database is being created
                pass
        assert proc.poll() is None, proc.communicate()
    else:
        proc.kill()
        pytest.fail("no run finished within 180 s")
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    if sig == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)  # the orphaned worker processes
    else:
        assert proc.returncode == 130, stderr
        assert json.loads(stdout)["interrupted"] is True
    with RunDB(db) as r:
        before = len([x for x in r.runs() if x["status"] == "finished"])
    assert 1 <= before < 8
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    out = json.loads(again.stdout)
    assert out["runs"] == 8 and out["skipped"] >= before
    assert out["skipped"] + out["finished"] == 8 and out["failed"] == 0
    with RunDB(db) as r:
        finished = [x for x in r.runs() if x["status"] == "finished"]
        done = r.sweep_runs()
    assert sorted(x["seed"] for x in finished) == list(range(8))  # no loss, no duplicate
    assert len(done) == 8 and all(status == "finished" for _, status in done.values())


def test_cli_json_and_bad_options(tmp_path, capsys):
    path = _spec_file(tmp_path, [0])
    db = str(tmp_path / "cli.sqlite")
    assert cli.main(["sweep", str(path), "--db", db, "--workers", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {k: out[k] for k in ("runs", "finished", "skipped", "failed")} == dict(
        runs=1, finished=1, skipped=0, failed=0)
    assert cli.main(["sweep", str(path), "--db", db, "--workers", "0"]) == 2
    assert "workers must be a positive integer" in capsys.readouterr().err
    assert cli.main(["sweep", str(path), "--db", db, "--workers", "1", "--scheduler",
                     "tcp://127.0.0.1:1"]) == 2
    assert "not both" in capsys.readouterr().err
    assert cli.main(["sweep", str(tmp_path / "none.toml"), "--db", db]) == 2
    assert "does not exist" in capsys.readouterr().err
