"""Precision studies: one model / dataset trained under several loss scalers and precision
policies (the cells) with the same seeds and data order, all runs in one SQLite study, and a report directory. The command
line of ``fpsim compare`` / ``fpsim report`` is :mod:`fpsim.cli.compare`."""

from __future__ import annotations

import datetime
import os
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


def compare(config: dict, scalers=DEFAULT_SCALERS, seeds=(0,), *, db: str = "runs.sqlite",
            out: str = "fpsim-report", name: str = "custom", shadow_every: int = 10,
            log=None, command: str = "", policies=None, progress: bool = False,
            images=("png", "svg"), recipes=None) -> dict:
    """Train ``config`` once per cell (policy x scaler) and seed, then write the report.

    Args:
        config: TrainConfig fields (the policy is used for every scaler but ``fp32``, which
            trains the same model with the float32 policy).
        scalers: scaler specs (see :func:`fpsim.training.scaling.scaler`) plus ``fp32``.
        seeds: one run per seed and cell; the same seed gives the same initialization and
            data order in every cell.
        policies: policy specs to compare (preset names, cast words such as ``e3m4:sr``, role
            lists, dicts; see :func:`fpsim.training.precision.policy_from_text`); default the
            config's policy.
        db, out: the run-record database and the report directory.
        shadow_every: measure the float32-shadow underflow every K steps (0: never).
        log: a callable for progress lines (e.g. ``print`` to stderr), or None.
        progress: show a progress bar inside each run.
        images: the image kinds of the plots (``png`` and/or ``svg``).
        recipes: recipe words (:func:`recipe`): the cells are these (policy, scaler) pairs
            instead of policies x scalers.
    Returns:
        The report summary: ``study``, ``db``, ``out``, ``rows`` (one per cell, averaged over
        seeds), ``files``.
    """
    from fpsim.analysis.report import write_report
    from fpsim.analysis.runs import RunData
    from fpsim.training.loop import TrainConfig, train
    from fpsim.training.records import RunDB
    if "scaler" in config:
        raise ValueError("the config of a comparison must not set 'scaler' (compare varies it)")
    if not scalers and not recipes:
        raise ValueError("a comparison needs at least one scaler")
    plan = cells(config, scalers, policies, recipes)
    for label, run in plan:  # fail before any run
        TrainConfig.from_dict(run).resolved()
    study = f"{name}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%S}"
    total, k = len(plan) * len(seeds), 0
    for seed in seeds:
        for label, run in plan:
            k += 1
            t0 = time.perf_counter()
            s = train(dict(run, seed=seed, name=label, shadow_every=shadow_every), db=db,
                      study=study, progress=progress)
            if log:
                with RunDB(db) as rdb:
                    m = RunData(rdb, rdb.run(s["run_id"])).summary()
                log(f"[{k}/{total}] {label} seed {seed}: " + progress_line(m)
                    + f" ({time.perf_counter() - t0:.1f} s)")
            if s["status"] == "interrupted":  # Ctrl-C / SIGTERM: stop the study, report it
                if log:
                    log(f"interrupted: run {s['run_id']} can be resumed with `fpsim train "
                        f"--db {db} --resume {s['run_id']}`; the report covers the runs so far")
                return write_report(db, out, study, command, images=images)
    return write_report(db, out, study, command, images=images)


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
