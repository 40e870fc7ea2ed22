"""``fpsim warmup``: compiling the kernels ahead of use (fpsim.warmup)."""

from __future__ import annotations

import re

import pytest

from fpsim import warmup
from fpsim.cli import main


def test_sets_and_order():
    main_set, all_set = warmup.task_names("main"), warmup.task_names("all")
    assert main_set and set(main_set) < set(all_set)
    assert all_set == list(warmup.TASKS)  # "all" runs every task, in table order
    from fpsim.training.study import DEFAULT_SCALERS
    assert main_set == [f"training: {scaler}" for scaler in DEFAULT_SCALERS]


@pytest.mark.parametrize("which, jobs, message", [
    ("some", 1, "warm-up set must be 'main' or 'all'"),
    ("main", 0, "jobs must be a positive integer"),
    ("main", True, "jobs must be a positive integer"),
    ("main", 1.5, "jobs must be a positive integer"),
])
def test_bad_arguments(which, jobs, message):
    with pytest.raises(ValueError, match=message):
        warmup.warmup(which, jobs=jobs, progress=None)


def test_every_task_runs_and_reports(capsys):
    """Each task of the full set runs through the public functions without error (a task that
    no longer matches the API fails here, not in a user's first command), with one progress
    line per task and a total."""
    times = warmup.warmup("all", jobs=1)
    err = capsys.readouterr().err.splitlines()
    n = len(warmup.TASKS)
    assert list(times) == list(warmup.TASKS) and all(t > 0 for t in times.values())
    assert [re.sub(r": [0-9.]+ s$", "", line) for line in err[:-1]] == [
        f"[{k + 1:2d}/{n}] {name}" for k, name in enumerate(warmup.TASKS)]
    assert re.fullmatch(r"kernels ready in [0-9.]+ s", err[-1])


def test_cli_parallel_jobs(capsys):
    """`fpsim warmup --jobs 2` runs the main set in two spawned processes."""
    assert main(["warmup", "--jobs", "2"]) == 0
    err = capsys.readouterr().err.splitlines()
    done = sorted(re.sub(r"^\[ ?\d+/\d+\] |: [0-9.]+ s$", "", line) for line in err[:-1])
    assert done == sorted(warmup.task_names("main"))


def test_cli_refuses_zero_jobs(capsys):
    assert main(["warmup", "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_ensure_runs_once_per_kernel_sources(tmp_path, monkeypatch, capsys):
    """ensure() warms up only when no warm-up of these kernel sources is on record; a full
    warm-up counts for the main set; the record is written by a completed warm-up only."""
    monkeypatch.setattr(warmup, "_marker", lambda which: str(tmp_path / f"warmup-{which}.done"))
    calls = []
    real = warmup.warmup

    def fake(which, jobs, progress):
        calls.append((which, jobs))
        if which == "main":
            return real("main", jobs=1, progress=progress)
        raise KeyboardInterrupt  # an interrupted warm-up leaves no record

    monkeypatch.setattr(warmup, "warmup", fake)
    assert not warmup.is_warm("main")
    assert warmup.ensure("main", jobs=3) is True
    assert calls == [("main", 3)]
    assert "compiling fpsim's kernels for first use in 3 process(es)" in capsys.readouterr().err
    assert warmup.is_warm("main") and not warmup.is_warm("all")
    assert warmup.ensure("main") is False and len(calls) == 1
    with pytest.raises(KeyboardInterrupt):
        warmup.ensure("all", progress=None)
    assert not warmup.is_warm("all")
    (tmp_path / "warmup-main.done").unlink()
    (tmp_path / "warmup-all.done").write_text("{}\n")
    assert warmup.is_warm("main") and warmup.ensure("main") is False


def test_commands_warm_up_after_checking_their_arguments(tmp_path, monkeypatch):
    """fpsim train and fpsim compare call warmup.auto once their input is checked (a bad
    argument is reported at once, not after minutes of compiling); FPSIM_WARMUP=0 turns the
    automatic warm-up off."""
    calls = []
    monkeypatch.setattr(warmup, "ensure", lambda which="main": calls.append(which) or False)
    monkeypatch.setenv("FPSIM_WARMUP", "0")
    assert warmup.auto() is False and calls == []
    monkeypatch.delenv("FPSIM_WARMUP")
    assert main(["train", "--epochs", "0", "--db", str(tmp_path / "a.sqlite")]) == 2
    assert main(["compare", "--seeds", "x", "--db", str(tmp_path / "b.sqlite")]) == 2
    assert main(["compare", "--lr", "-1", "--db", str(tmp_path / "b.sqlite")]) == 2
    assert calls == []
    monkeypatch.setattr(warmup, "ensure", lambda which="main": calls.append(which) or
                        (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["train", "--epochs", "1", "--db", str(tmp_path / "c.sqlite"),
                 "--no-progress"]) == 130
    assert main(["compare", "--epochs", "1", "--db", str(tmp_path / "d.sqlite"),
                 "--out", str(tmp_path / "rep")]) == 130
    assert calls == ["main", "main"]
