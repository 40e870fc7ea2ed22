"""Loss-scaler studies: one model / dataset / format trained under several loss scalers with the
same seed and data order, all runs in one SQLite study, and a report directory. The command
line of ``fpsim compare`` / ``fpsim report`` is :mod:`fpsim.cli.compare`."""

from __future__ import annotations

import datetime
import os
import time
import tomllib

#: Scalers of the default comparison: float32 reference, none, a static sweep, dynamic
#: (GradScaler), adaptive (ALS).
DEFAULT_SCALERS = ("fp32", "none", "static:256", "static:4096", "static:65536", "dynamic",
                   "adaptive")


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


def compare(config: dict, scalers=DEFAULT_SCALERS, seeds=(0,), *, db: str = "runs.sqlite",
            out: str = "fpsim-report", name: str = "custom", shadow_every: int = 10,
            log=None, command: str = "") -> dict:
    """Train ``config`` once per scaler and seed, then write the report.

    Args:
        config: TrainConfig fields (the policy is used for every scaler but ``fp32``, which
            trains the same model with the float32 policy).
        scalers: scaler specs (see :func:`fpsim.training.scaling.scaler`) plus ``fp32``.
        seeds: one run per seed and scaler; the same seed gives the same initialization and
            data order under every scaler.
        db, out: the run-record database and the report directory.
        shadow_every: measure the float32-shadow underflow every K steps (0: never).
        log: a callable for progress lines (e.g. ``print`` to stderr), or None.
    Returns:
        The report summary: ``study``, ``db``, ``out``, ``rows`` (one per scaler, averaged over
        seeds), ``files``.
    """
    from fpsim.analysis.report import write_report
    from fpsim.training.loop import TrainConfig, train
    if "scaler" in config:
        raise ValueError("the config of a comparison must not set 'scaler' (compare varies it)")
    TrainConfig.from_dict(config).resolved()  # fail before any run
    for spec in scalers:
        if spec != "fp32":
            TrainConfig.from_dict({**config, "scaler": spec}).resolved()
    study = f"{name}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%S}"
    total, k = len(scalers) * len(seeds), 0
    for seed in seeds:
        for spec in scalers:
            k += 1
            run = dict(config, seed=seed, name=_label(spec), shadow_every=shadow_every)
            if spec == "fp32":
                run.update(policy="fp32", scaler="none")
            else:
                run["scaler"] = spec
            t0 = time.perf_counter()
            s = train(run, db=db, study=study)
            if log:
                acc = s["test_accuracy"]
                log(f"[{k}/{total}] {_label(spec)} seed {seed}: "
                    f"{'test accuracy %.2f%%' % (100 * acc) if acc is not None else 'test loss %.4g' % s['test_loss']}, "
                    f"skipped {s['skipped_steps']}, gradient underflow "
                    f"{'n/a' if s['grad_underflow_rate'] is None else '%.4f' % s['grad_underflow_rate']} "
                    f"({time.perf_counter() - t0:.1f} s)")
    return write_report(db, out, study, command)
