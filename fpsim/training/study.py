"""Precision studies: one model / dataset trained under several loss scalers and precision
policies (the cells) with the same seeds and data order, all runs in one SQLite study, and a report directory. The command
line of ``fpsim compare`` / ``fpsim report`` is :mod:`fpsim.cli.compare`."""

from __future__ import annotations

import datetime
import os
import re
import time
import tomllib

#: Scalers of the default comparison: float32 reference, none, a static sweep, dynamic
#: (GradScaler), adaptive loss scaling as published and fpsim's version.
DEFAULT_SCALERS = ("fp32", "none", "static:256", "static:4096", "static:65536", "dynamic",
                   "adaptive-paper", "adaptive")


def _every(cast: str) -> dict:
    return {"activations": cast, "weights": cast, "activation_grads": cast, "weight_grads": cast}


def _fwd_bwd(fwd: str, bwd: str | None) -> dict:
    return {"activations": fwd, "weights": fwd, "activation_grads": bwd, "weight_grads": bwd}


#: Named recipes (a precision policy and a loss scaler), for ``fpsim compare --recipes``.
#: ``fp8`` is the FP8 of the S2FP8 paper (E5M2 everywhere, RNE, no scaling); ``fp8-hybrid``
#: Transformer Engine's formats (E4M3 forward, E5M2 backward) without per-tensor scales;
#: ``fp8-current`` / ``fp8-delayed`` the same formats with Transformer Engine's per-tensor
#: scaling; ``mxfp8`` OCP MX blocks; ``s2fp8`` the shifted and squeezed E5M2 of Cambier et
#: al.; ``nvfp4-fwd`` NVFP4 forward values and weights with float32 gradients.
RECIPES = {
    "fp32": ("fp32", "none"),
    "fp8": ({"name": "fp8", **_every("float8_e5m2")}, "none"),
    "fp8+static": ({"name": "fp8", **_every("float8_e5m2")}, "static:65536"),
    "fp8+dynamic": ({"name": "fp8", **_every("float8_e5m2")}, "dynamic"),
    "fp8-hybrid": ({"name": "fp8-hybrid", **_fwd_bwd("float8_e4m3fn", "float8_e5m2")}, "none"),
    "fp8-hybrid+dynamic": ({"name": "fp8-hybrid", **_fwd_bwd("float8_e4m3fn", "float8_e5m2")},
                           "dynamic"),
    "fp8-current": ({"name": "fp8-current", **_fwd_bwd("fp8_current", "fp8_current_e5m2")},
                    "none"),
    "fp8-delayed": ({"name": "fp8-delayed", **_fwd_bwd("fp8_delayed", "fp8_delayed_e5m2")},
                    "none"),
    "mxfp8": ({"name": "mxfp8", **_fwd_bwd("mxfp8_e4m3", "mxfp8_e5m2")}, "none"),
    "s2fp8": ({"name": "s2fp8", **_every("s2fp8")}, "none"),
    "nvfp4-fwd": ({"name": "nvfp4-fwd", **_fwd_bwd("nvfp4", None)}, "none"),
}
#: The recipes of ``--recipes default``.
DEFAULT_RECIPES = ("fp32", "fp8", "fp8+static", "fp8+dynamic", "fp8-current", "fp8-delayed",
                   "mxfp8", "s2fp8", "nvfp4-fwd")


def recipe(text: str) -> tuple[str, object, str]:
    """``(label, policy spec, scaler spec)`` of a recipe word: a :data:`RECIPES` name, or
    ``POLICY@SCALER`` (a policy word of :func:`~fpsim.training.precision.policy_from_text`
    and a scaler spec).

    Raises:
        ValueError: an unknown name or a malformed word.
    """
    from fpsim.training.precision import policy_from_text
    text = text.strip()
    if text in RECIPES:
        pol, sc = RECIPES[text]
        return text, pol, sc
    pol, at, sc = text.rpartition("@")
    if not at or not pol or not sc:
        raise ValueError(f"unknown recipe {text!r}: use a name ({', '.join(RECIPES)}) or "
                         "POLICY@SCALER (e.g. fwd=mxfp8_e4m3+grads=mxfp8_e5m2@none)")
    return text, policy_from_text(pol), sc


def _label(spec: str) -> str:
    """The run name of a scaler spec (``static:256`` -> ``static 256``)."""
    return spec.replace(":", " ")


def load_config(name_or_path: str | None) -> tuple[str, dict]:
    """``(name, TrainConfig fields)`` from a name of :data:`fpsim.models.configs.CONFIGS` or a
    TOML file of TrainConfig fields."""
    from fpsim.models import configs
    if name_or_path is None:
        name_or_path = configs.DEFAULT
    if name_or_path.endswith(".toml") or os.path.sep in name_or_path:
        try:
            with open(name_or_path, "rb") as f:
                return os.path.splitext(os.path.basename(name_or_path))[0], tomllib.load(f)
        except FileNotFoundError:
            raise ValueError(f"config file {name_or_path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config file {name_or_path} is not valid TOML: {e}") from None
    return name_or_path, configs.get(name_or_path)["train"]


def cells(config: dict, scalers, policies=None, recipes=None) -> list[tuple[str, dict]]:
    """The runs of one seed of a study, as ``(label, TrainConfig fields)``: every policy of
    ``policies`` (default: the config's own) under every scaler; ``fp32`` is one run with the
    float32 policy, whatever the policies. Labels are the scaler's (``static 256``) with one
    policy, ``policy / scaler`` with several. With ``recipes`` (words of :func:`recipe`) the
    cells are exactly those recipes, labelled by their words."""
    from fpsim.training.precision import policy_label
    if recipes:
        out = []
        for word in recipes:
            label, pol, sc = recipe(word)
            if label in {lab for lab, _ in out}:
                raise ValueError(f"recipe {label!r} is given twice")
            out.append((label, dict(config, policy=pol, scaler=sc)))
        return out
    policies = [config.get("policy", "fp32")] if not policies else list(policies)
    out, seen = [], set()
    for pol in policies:
        for spec in scalers:
            if spec == "fp32":
                label, run = "fp32", dict(config, policy="fp32", scaler="none")
            else:
                label = _label(spec) if len(policies) == 1 else f"{policy_label(pol)} / {_label(spec)}"
                run = dict(config, policy=pol, scaler=spec)
            if label not in seen:
                seen.add(label)
                out.append((label, run))
    return out


#: The status of a run of a study that has not started yet (``compare`` records every run of
#: its plan before training the first, so an interrupted study knows what it still lacks).
PENDING = "pending"
_PENDING_WHY = ("not trained: the study stopped before this run started "
                "(`fpsim compare ... --resume` trains it)")


def compare(config: dict, scalers=DEFAULT_SCALERS, seeds=(0,), *, db: str = "runs.sqlite",
            out: str = "fpsim-report", name: str = "custom", shadow_every: int = 10,
            log=None, command: str = "", policies=None, progress: bool = False,
            images=("png", "svg"), recipes=None, resume: bool | str | None = None,
            before_runs=None) -> dict:
    """Train ``config`` once per cell (policy x scaler) and seed, then write the report.

    Every run of the plan is recorded (status ``pending``) before the first trains. SIGINT or
    SIGTERM stops the study: the current run is checkpointed and marked ``interrupted`` after
    its current step, no further run starts, and the report covers the runs so far (the
    pending ones listed under "What went wrong"). ``resume`` finishes such a study.

    Args:
        config: TrainConfig fields (the policy is used for every scaler but ``fp32``, which
            trains the same model with the float32 policy).
        scalers: scaler specs (see :func:`fpsim.training.scaling.scaler`) plus ``fp32``.
        seeds: one run per seed and cell; the same seed gives the same initialization and
            data order in every cell.
        policies: policy specs to compare (preset names, cast words such as ``e3m4:sr``, role
            lists, dicts; see :func:`fpsim.training.precision.policy_from_text`); default the
            config's policy.
        db, out: the run-record database and the report directory (see
            :func:`write_study_report` for what it refuses).
        shadow_every: measure the float32-shadow underflow every K steps (0: never).
        log: a callable for progress lines (e.g. ``print`` to stderr), or None.
        progress: show a progress bar inside each run.
        images: the image kinds of the plots (``png`` and/or ``svg``).
        recipes: recipe words (:func:`recipe`): the cells are these (policy, scaler) pairs
            instead of policies x scalers.
        before_runs: a callable run once the plan and the report folder are checked, before
            the first run (``fpsim compare`` warms up the kernels there: :mod:`fpsim.warmup`).
        resume: True (the newest study in ``db``) or a study name: continue that study, made
            with the same arguments: finished runs are kept, an interrupted run continues from
            its checkpoint (bit-identically), the others train.
    Returns:
        The report summary: ``study``, ``db``, ``out``, ``rows`` (one per cell, averaged over
        seeds), ``files`` (empty when no run had trained a step: no report), plus
        ``interrupted`` (a signal stopped the study) and ``unfinished`` (``label``, ``seed``,
        ``run_id``, ``status`` of each run not finished).
    Raises:
        ValueError: bad arguments, a report directory that would destroy files, or a study
            to resume that these arguments do not describe.
    """
    from fpsim.training.loop import TrainConfig, _Interrupt, train
    from fpsim.training.records import RunDB
    if "scaler" in config:
        raise ValueError("the config of a comparison must not set 'scaler' (compare varies it)")
    if not scalers and not recipes:
        raise ValueError("a comparison needs at least one scaler")
    planned = []
    for seed in seeds:
        for label, run in cells(config, scalers, policies, recipes):
            cfg = TrainConfig.from_dict(dict(run, seed=seed, name=label,
                                             shadow_every=shadow_every)).resolved()
            planned.append((label, seed, _recorded_config(cfg)))  # (fails before any run)
    check_report_out(db, out)
    if before_runs is not None:
        before_runs()
    total = len(planned)
    with _Interrupt() as stop:  # (from here on a signal stops the study, never a traceback)
        with RunDB(db) as rdb:
            if resume:
                study, ids = _resumed_study(rdb, resume, planned)
            else:
                study = f"{name}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%S}"
                ids = [None] * total
            ids = [rid if rid is not None else _record_pending(rdb, study, label, seed, cfg)
                   for rid, (label, seed, cfg) in zip(ids, planned)]
        for k, ((label, seed, _), run_id) in enumerate(zip(planned, ids), 1):
            if stop.signal is not None:
                break
            status = _prepare(db, run_id)
            if status == "finished":
                if log:
                    log(f"[{k}/{total}] {label} seed {seed}: finished before (run {run_id})")
                continue
            t0 = time.perf_counter()
            s = train(None, db=db, resume=run_id, progress=progress)
            if s["status"] == "interrupted":
                _note_interrupted(db, run_id, s["steps"], stop.signal)
            if log:
                log(f"[{k}/{total}] {label} seed {seed}: " + _run_line(db, run_id)
                    + f" ({time.perf_counter() - t0:.1f} s)")
        unfinished = _unfinished(db, planned, ids)
        untrained = len(unfinished) == total and all(u["steps"] == 0 for u in unfinished)
        if stop.signal is not None and log:
            again = command + ("" if "--resume" in command.split() else f" --resume {study}") \
                if command else f"fpsim compare (the same arguments) --resume {study}"
            log(f"interrupted: {len(unfinished)} of {total} runs of study {study} unfinished; "
                f"`{again}` finishes it" + ("; no run has trained a step: no report"
                                           if untrained else ""))
        if untrained:
            summary = {"study": study, "db": db, "out": None, "rows": [], "files": []}
        else:
            summary = write_study_report(db, out, study, command, images=images)
    summary["interrupted"] = stop.signal is not None
    summary["unfinished"] = [{k: u[k] for k in ("label", "seed", "run_id", "status")}
                             for u in unfinished]
    return summary


def _recorded_config(cfg) -> dict:
    """A resolved TrainConfig as its run record holds it (JSON data); Python objects refused,
    since a study's runs must be rebuildable from their records to resume."""
    import dataclasses
    import json

    from fpsim.training.records import PYTHON_OBJECT, has_python_objects
    fields = json.loads(json.dumps(dataclasses.asdict(cfg), sort_keys=True,
                                   default=lambda obj: {PYTHON_OBJECT: repr(obj)}))
    if has_python_objects(fields):
        raise ValueError(f"run {cfg.name!r} of the comparison is configured with Python "
                         "objects (a policy or cast instance): give names, words or dicts, "
                         "so the study's runs can be rebuilt from their records")
    return fields


def _record_pending(rdb, study: str, label: str, seed: int, fields: dict) -> int:
    """Record a planned run of ``study`` that has not started; returns its id."""
    from fpsim.training.loop import versions
    run_id = rdb.new_run(label, fields, seed, versions(), study)
    rdb.set_status(run_id, PENDING, {"error": _PENDING_WHY})
    return run_id


def _prepare(db: str, run_id: int) -> str:
    """The run's status; a pending run's recorded versions become this process's (those it
    trains under: the BLAS libraries loaded change while a study runs, and a run resumed
    under settings other than its recorded ones is flagged)."""
    import json

    from fpsim.training.loop import versions
    from fpsim.training.records import RunDB
    with RunDB(db) as rdb:
        status = rdb.run(run_id)["status"]
        if status == PENDING:
            with rdb.con:  # (RunDB has no method for this one-column update)
                rdb.con.execute("UPDATE runs SET versions = ? WHERE id = ?",
                                (json.dumps(versions()), run_id))
    return status


def _resumed_study(rdb, resume, planned) -> tuple[str, list]:
    """``(study, run id or None for each planned run)`` of the study ``resume`` names (True:
    the newest in ``rdb``), checked against the plan.

    Raises:
        ValueError: no such study, or one whose runs other arguments made (the message names
            the first run and setting that differ).
    """
    studies = rdb.studies()
    if not studies:
        raise ValueError(f"--resume: {rdb.path} holds no study to resume")
    study = studies[-1] if resume is True else resume
    if study not in studies:
        raise ValueError(f"--resume: no study {study!r} in {rdb.path}; studies: "
                         + ", ".join(studies))
    recorded: dict[tuple, dict] = {}
    for r in rdb.runs(study):  # (a finished run wins over another row of the same cell)
        key = (r["name"], r["seed"])
        if key not in recorded or recorded[key]["status"] != "finished":
            recorded[key] = r
    extra = sorted(set(recorded) - {(label, seed) for label, seed, _ in planned})
    if extra:
        label, seed = extra[0]
        raise ValueError(f"--resume: study {study} holds a run these arguments do not plan "
                         f"({label!r} seed {seed}, run {recorded[(label, seed)]['id']}); give "
                         "the arguments the study was started with")
    ids = []
    for label, seed, fields in planned:
        r = recorded.get((label, seed))
        if r is not None and r["config"] != fields:
            diff = sorted(k for k in set(fields) | set(r["config"])
                          if fields.get(k) != r["config"].get(k))
            k = diff[0]
            raise ValueError(f"--resume: study {study} was started with other arguments: run "
                             f"{r['id']} ({label}, seed {seed}) has {k} = "
                             f"{r['config'].get(k)!r}, these arguments give {fields.get(k)!r}"
                             + (f" (and {len(diff) - 1} more setting(s) differ)"
                                if len(diff) > 1 else ""))
        ids.append(None if r is None else r["id"])
    return study, ids


def _note_interrupted(db: str, run_id: int, steps: int, signum) -> None:
    """Note on the run's record that the study's stop interrupted it (the report's events
    list it; the note goes when the resumed run writes that step again)."""
    import signal

    from fpsim.training.records import RunDB
    with RunDB(db) as rdb:
        rdb.add_note(run_id, steps, "interrupted", f"the study was stopped by "
                     f"{signal.Signals(signum).name if signum else 'a signal'} after {steps} "
                     "steps of this run; `fpsim compare ... --resume` continues it from its "
                     "checkpoint")
        rdb.commit()


def _run_line(db: str, run_id: int) -> str:
    """One trained run's result for the progress log (see :func:`progress_line`)."""
    from fpsim.analysis.runs import RunData
    from fpsim.training.records import RunDB
    with RunDB(db) as rdb:
        info = rdb.run(run_id)
        line = progress_line(RunData(rdb, info).summary())
    return line + ("" if info["status"] == "finished" else f"; {info['status']}")


def _unfinished(db: str, planned, ids) -> list[dict]:
    """The planned runs not finished: label, seed, run id, status and steps recorded."""
    from fpsim.training.records import RunDB
    out = []
    with RunDB(db) as rdb:
        for (label, seed, _), run_id in zip(planned, ids):
            status = rdb.run(run_id)["status"]
            if status != "finished":
                out.append({"label": label, "seed": seed, "run_id": run_id, "status": status,
                            "steps": len(rdb.steps(run_id).get("step", ()))})
    return out


def progress_line(m: dict) -> str:
    """One run's result in words, with the metrics and names of the report's table."""
    acc, loss = m["test_accuracy"], m["test_loss"]
    parts = [f"test accuracy {100 * acc:.2f}%" if acc is not None
             else f"test loss {loss:.4g}" if loss is not None else "no test result",
             f"skipped {m['skipped_steps']}"]
    if m.get("underflow") is not None:
        parts.append(f"underflow {100 * m['underflow']:.2f}%")
    if m.get("flushed") is not None:
        parts.append(f"flushed (kernel) {100 * m['flushed']:.2f}%")
    if m.get("overflow"):
        parts.append(f"overflow {100 * m['overflow']:.3g}%")
    return ", ".join(parts)


# -- the report directory ------------------------------------------------------------------------
#: The start of the last line of every report.md fpsim writes (``Regenerate: `fpsim report
#: ...```): how a report.md found in a report directory is known to be fpsim's own.
REPORT_MARKER = "Regenerate: `fpsim report "
#: The images a report.md links (``![title](curves.png)``, ``([SVG](curves.svg))``): the files
#: of the directory that report wrote.
_IMAGE_LINK = re.compile(r"\]\(([^()/\\\s]+\.(?:png|svg))\)")
_IMAGE = (".png", ".svg")


def check_report_out(db: str, out: str) -> set[str]:
    """Check that writing a report of ``db`` into ``out`` destroys nothing; returns the names
    of the files in ``out`` that an earlier fpsim report wrote (report.md and the images it
    links), which the new report may replace.

    A report writes report.md and PNG/SVG images into ``out``. It never writes over the
    database, nor over a report.md or an image that fpsim did not write: a report.md is
    fpsim's when it holds :data:`REPORT_MARKER`, and an image when that report.md links it.

    Raises:
        ValueError: ``out`` is a file; the database is one of the report's files; ``out``
            holds a report.md or images of someone else (the message names them).
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"report directory {out} is a file, not a directory")
    db_real, out_real = os.path.realpath(db), os.path.realpath(out)
    if os.path.dirname(db_real) == out_real and (
            os.path.basename(db_real) == "report.md" or db_real.endswith(_IMAGE)):
        raise ValueError(f"the report in {out} would overwrite the database {db} (it writes "
                         "report.md and .png/.svg files there): choose another report "
                         "directory or database name")
    if not os.path.isdir(out):
        return set()
    owned, md = set(), os.path.join(out, "report.md")
    if os.path.exists(md):
        with open(md, "rb") as f:
            text = f.read().decode("utf-8", "replace")
        if not any(line.startswith(REPORT_MARKER) for line in text.splitlines()):
            raise ValueError(f"{md} exists and was not written by fpsim; the report would "
                             "replace it: choose another (or a new) report directory")
        owned = {"report.md", *_IMAGE_LINK.findall(text)}
    foreign = sorted(f for f in os.listdir(out) if f.endswith(_IMAGE) and f not in owned)
    if foreign:
        raise ValueError(f"{out} holds images not written by fpsim ("
                         + ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
                         + "); the report's plots could replace them: choose another (or a "
                         "new) report directory")
    return owned


def write_study_report(db: str, out: str, study: str | None = None, command: str = "",
                       **options) -> dict:
    """:func:`fpsim.analysis.report.write_report` after :func:`check_report_out`, then remove
    the images of the earlier fpsim report in ``out`` that the new one does not have (its
    report.md no longer links them). ``options`` go to ``write_report``; returns its summary.
    """
    from fpsim.analysis.report import write_report
    earlier = check_report_out(db, out)
    summary = write_report(db, out, study, command, **options)
    for name in earlier - set(summary["files"]):
        try:
            os.remove(os.path.join(out, name))
        except FileNotFoundError:
            pass
    return summary
