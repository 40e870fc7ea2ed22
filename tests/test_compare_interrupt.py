"""``fpsim compare`` stopped by SIGINT / SIGTERM (real subprocesses), ``--resume`` finishing the
study bit-identically to an uninterrupted one, and report directories that would lose data."""

import contextlib
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
from fpsim.training.records import RunDB
from fpsim.training.study import PENDING, compare

from test_train import _assert_states_equal

#: A small MLP with enough steps (6 epochs of 180: a second or more even on an idle machine,
#: where 2 epochs once ended within the half second the test waits) that a signal lands
#: inside the second run.
TOML = 'model = "mlp"\ndataset = "digits"\npolicy = "mixed_fp16"\nepochs = 6\nbatch_size = 8\n' \
       'hist_every = 40\n[model_config]\nhidden = [16]\n'
SCALERS = "fp32,none,static:256"
#: Columns holding wall time or the moment a row was written: not part of a run's results.
TIMES = {"seconds", "created", "finished", "run_id"}
#: A tiny in-process study (one epoch of two steps per run).
TINY = {"model": "mlp", "dataset": "digits", "epochs": 1, "batch_size": 1024,
        "model_config": {"hidden": [8]}}


def _compare_cmd(tmp_path, *extra):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TOML)
    return [sys.executable, "-m", "fpsim", "compare", "--config", str(cfg), "--scalers", SCALERS,
            "--shadow-every", "7", "--db", str(tmp_path / "s.sqlite"), "--out",
            str(tmp_path / "report"), "--images", "png", "--json", *extra]


def _wait_for_run(db, proc, run_id, timeout=180):
    """Wait until run ``run_id`` of the study is training: its status is ``running`` and the
    run before it finished (every run is recorded, pending, before the first trains)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        if os.path.exists(db):
            # (closed on every path: a connection dropped unclosed lives until the cyclic GC)
            try:
                with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
                    rows = con.execute("SELECT status FROM runs WHERE id IN (?, ?) ORDER BY id",
                                       (run_id - 1, run_id)).fetchall()
                if [r[0] for r in rows] == ["finished", "running"]:
                    return
            except sqlite3.OperationalError:  # the database is being created
                pass
        time.sleep(0.01)
    raise AssertionError(f"run {run_id} did not start")


def _rows(rdb, table, run_id):
    cur = rdb.con.execute(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY rowid", (run_id,))
    keep = [i for i, d in enumerate(cur.description) if d[0] not in TIMES]
    return [tuple(r[i] for i in keep) for r in cur.fetchall()]


def _by_cell(rdb):
    return {(r["name"], r["seed"]): r for r in rdb.runs()}


def _assert_same_study(db_a, db_b):
    """Every run of two studies recorded the same steps, events, histograms and epochs bit
    for bit (wall times aside), and ended in the same state."""
    with RunDB(db_a) as a, RunDB(db_b) as b:
        runs_a, runs_b = _by_cell(a), _by_cell(b)
        assert set(runs_a) == set(runs_b)
        for cell, ra in runs_a.items():
            rb = runs_b[cell]
            assert ra["status"] == rb["status"] == "finished", cell
            assert ra["config"] == rb["config"], cell
            for table in ("steps", "site_events", "histograms", "epochs", "notes"):
                assert _rows(a, table, ra["id"]) == _rows(b, table, rb["id"]), (cell, table)
            loss_a, loss_b = a.steps(ra["id"])["loss"], b.steps(rb["id"])["loss"]
            assert np.array_equal(loss_a.view(np.uint64), loss_b.view(np.uint64)), cell
            _assert_states_equal(a.load_checkpoint(ra["id"])[1], b.load_checkpoint(rb["id"])[1])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The study of :func:`_compare_cmd` run to the end without a signal."""
    d = tmp_path_factory.mktemp("whole")
    done = subprocess.run(_compare_cmd(d), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return str(d / "s.sqlite")


@pytest.mark.parametrize("sig, count", [(signal.SIGINT, 2), (signal.SIGTERM, 1)],
                         ids=["two-sigints", "sigterm"])
def test_signal_stops_the_study_and_resume_finishes_it_bit_identically(
        tmp_path, uninterrupted, sig, count):
    """A signal while the second run trains: that run is recorded as interrupted (its steps
    kept), the third never starts, the report lists both, exit 130; a second SIGINT gives no
    traceback. ``--resume`` then gives the records of the uninterrupted study bit for bit."""
    db = str(tmp_path / "s.sqlite")
    proc = subprocess.Popen(_compare_cmd(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_run(db, proc, 2)
    time.sleep(0.5)  # (inside the loop, not while the run is set up)
    for _ in range(count):
        proc.send_signal(sig)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "NoneType" not in err, err
    summary = json.loads(out)
    assert summary["interrupted"] is True
    assert [(u["label"], u["status"]) for u in summary["unfinished"]] == [
        ("none", "interrupted"), ("static 256", PENDING)]
    with RunDB(db) as r:
        runs = _by_cell(r)
        assert [runs[(c, 0)]["status"] for c in ("fp32", "none", "static 256")] == [
            "finished", "interrupted", PENDING]
        kept = len(r.steps(runs[("none", 0)]["id"])["loss"])
        assert 0 < kept < 6 * 180  # (some steps, not all: TOML's 6 epochs of 180)
        assert len(r.steps(runs[("static 256", 0)]["id"])["loss"]) == 0
    md = (tmp_path / "report" / "report.md").read_text()
    assert "(1 interrupted)" in md and "interrupted notes" in md
    assert f"static 256 (seed 0, run 3): {PENDING}: not trained" in md

    resumed = subprocess.run(_compare_cmd(tmp_path, "--resume"), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(resumed.stdout)
    assert final["interrupted"] is False and final["unfinished"] == []
    assert final["study"] == summary["study"]
    with RunDB(db) as r:
        assert [x["id"] for x in r.runs()] == [1, 2, 3]  # resumed in place, nothing added
    _assert_same_study(db, uninterrupted)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "interrupted" not in md and PENDING not in md


def test_resume_refuses_other_arguments_and_skips_finished_runs(tmp_path):
    db, out = str(tmp_path / "r.sqlite"), str(tmp_path / "rep")
    with pytest.raises(ValueError, match="holds no study to resume"):
        compare(TINY, ("fp32",), db=db, out=out, resume=True)
    first = compare(TINY, ("fp32", "none"), db=db, out=out, images=("png",))
    with pytest.raises(ValueError, match=r"run 1 \(fp32, seed 0\) has epochs = 1, these "
                                         r"arguments give 2"):
        compare(dict(TINY, epochs=2), ("fp32", "none"), db=db, out=out, resume=True)
    with pytest.raises(ValueError, match=r"do not plan \('none' seed 0, run 2\)"):
        compare(TINY, ("fp32",), db=db, out=out, resume=True)
    with pytest.raises(ValueError, match="no study 'nope'"):
        compare(TINY, ("fp32", "none"), db=db, out=out, resume="nope")
    lines = []
    again = compare(TINY, ("fp32", "none", "static:8"), db=db, out=out, resume=first["study"],
                    images=("png",), log=lines.append)
    assert again["study"] == first["study"] and again["unfinished"] == []
    assert lines[:2] == ["[1/3] fp32 seed 0: finished before (run 1)",
                         "[2/3] none seed 0: finished before (run 2)"]
    with RunDB(db) as r:
        assert [x["name"] for x in r.runs(first["study"])] == ["fp32", "none", "static 8"]


# -- report directories ------------------------------------------------------------------------

#: ``fpsim compare`` arguments of a study of one two-step run (should a refusal fail).
QUICK = ["compare", "--scalers", "fp32", "--epochs", "1", "--batch-size", "1024", "--images",
         "png"]


def test_compare_never_writes_its_report_over_the_database(tmp_path, capsys):
    rep = tmp_path / "rep"
    assert cli.main([*QUICK, "--db", str(rep / "report.md"), "--out", str(rep)]) == 2
    err = capsys.readouterr().err
    assert f"would overwrite the database {rep / 'report.md'}" in err and str(rep) in err
    assert not rep.exists()  # refused before training: nothing written at all
    assert cli.main([*QUICK, "--db", str(tmp_path / "curves.png"), "--out", str(tmp_path)]) == 2
    assert "would overwrite the database" in capsys.readouterr().err


@pytest.mark.parametrize("own", ["report.md", "curves.png"])
def test_compare_keeps_a_users_own_files(tmp_path, capsys, own):
    (tmp_path / own).write_text("my own notes\n")
    assert cli.main([*QUICK, "--db", str(tmp_path / "s.sqlite"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert own in err and "not written by fpsim" in err and err.count("\n") == 1
    assert (tmp_path / own).read_text() == "my own notes\n"
    assert not (tmp_path / "s.sqlite").exists()  # before training


@pytest.fixture(scope="module")
def study_db(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    compare(dict(TINY, policy="mixed_fp16", hist_every=1), ("fp32", "none"),
            db=str(d / "s.sqlite"), out=str(d / "first"), images=("png",))
    return d, str(d / "s.sqlite")


def test_report_replaces_its_own_report_and_keeps_a_users(study_db, tmp_path, capsys):
    d, db = study_db
    out = tmp_path / "rep"
    assert cli.main(["report", db, "--out", str(out)]) == 0
    first = sorted(os.listdir(out))
    assert {"report.md", "hist_none.png", "hist_none.svg"} <= set(first)
    # fpsim's own report: replaced; the images the new one does not have are removed with it
    assert cli.main(["report", db, "--out", str(out), "--images", "png"]) == 0
    assert sorted(os.listdir(out)) == [f for f in first if not f.endswith(".svg")]
    assert cli.main(["report", db, "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == first
    capsys.readouterr()
    # a user's report.md or image: refused, untouched
    for own in ("report.md", "diagram.svg"):
        mine = tmp_path / own
        mine.write_text("mine\n")
        assert cli.main(["report", db, "--out", str(tmp_path)]) == 2
        assert own in capsys.readouterr().err and mine.read_text() == "mine\n"
        mine.unlink()


def test_report_never_writes_over_its_database(study_db, tmp_path, capsys):
    d, db = study_db
    rep = tmp_path / "rep"
    rep.mkdir()
    copy = rep / "report.md"
    copy.write_bytes(open(db, "rb").read())
    assert cli.main(["report", str(copy), "--out", str(rep)]) == 2
    err = capsys.readouterr().err
    assert f"would overwrite the database {copy}" in err
    assert copy.read_bytes() == open(db, "rb").read()
    with RunDB(str(copy)) as r:
        assert len(r.runs()) == 2


def test_nested_interrupt_scopes_share_the_signal():
    """The study's scope and a run's loop scope: a signal caught by either stops both (one
    before the run's loop starts, or in a run's last step, stops the study too)."""
    from fpsim.training.loop import _Interrupt
    with _Interrupt() as study:
        with _Interrupt() as run:
            os.kill(os.getpid(), signal.SIGTERM)
        assert run.signal == study.signal == signal.SIGTERM
    with _Interrupt() as study:
        os.kill(os.getpid(), signal.SIGINT)
        with _Interrupt() as run:
            assert run.signal == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
