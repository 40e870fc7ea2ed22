"""``fpsim compare``: one model / dataset / format trained under several loss scalers with the
same seed and data order, all runs in one SQLite study, and a report directory."""

from __future__ import annotations

import datetime
import os
import sys
import time
import tomllib

from fpsim.cli.train import RUN_FLAGS, add_run_arguments

#: Scalers of the default comparison: float32 reference, none, a static sweep, dynamic
#: (GradScaler), adaptive (ALS).
DEFAULT_SCALERS = ("fp32", "none", "static:256", "static:4096", "static:65536", "dynamic",
                   "adaptive")


def _label(spec: str) -> str:
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
        scalers: scaler specs (see :func:`fpsim.scaling.scaler`) plus ``fp32``.
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


def add_parsers(sub) -> None:
    """Register ``compare`` and ``report`` on the argparse sub-parsers ``sub``."""
    p = sub.add_parser(
        "compare", help="train one setting under several loss scalers and write a report",
        description="Train one model/dataset/format under several loss scalers (default: fp32, "
                    "none, static 256 / 4096 / 65536, dynamic, adaptive) with the same seeds and "
                    "data order; all runs go to one study in --db; plots and report.md go to --out. "
                    "With no arguments: the embedded default (digits, MLP, fp16).")
    p.add_argument("--config", help="a named config (fpsim.models.configs) or a TOML file")
    add_run_arguments(p)
    p.add_argument("--scalers", help="comma-separated: fp32, none, static:S, dynamic[:variant], "
                   "adaptive (default: %s)" % ",".join(DEFAULT_SCALERS))
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--shadow-every", type=int, default=10,
                   help="float32-shadow underflow measurement every K steps (default 10; 0: off)")
    p.add_argument("--db", default="runs.sqlite", help="run-record database (default runs.sqlite)")
    p.add_argument("--out", default="fpsim-report", help="report directory (default ./fpsim-report)")
    p.add_argument("--json", action="store_true", help="print the summary table as JSON")
    p.set_defaults(handler=run_compare)
    p = sub.add_parser("report", help="redraw the plots and report.md of a study",
                       description="Write the plots and report.md of a study (default: the "
                                   "newest in the database).")
    p.add_argument("db", help="run-record database")
    p.add_argument("--study", help="study name (see report.md or --list)")
    p.add_argument("--out", default="fpsim-report", help="report directory")
    p.add_argument("--list", action="store_true", help="list the studies and exit")
    p.add_argument("--json", action="store_true", help="print the summary table as JSON")
    p.set_defaults(handler=run_report)


def _print_summary(summary, as_json):
    import json
    if as_json:
        print(json.dumps(summary))
        return
    from fpsim.analysis.report import table_markdown
    print(table_markdown(summary["rows"]))
    print(f"\nreport: {os.path.join(summary['out'], 'report.md')} (study {summary['study']} "
          f"in {summary['db']})")


def run_compare(args) -> int:
    """Handler of ``fpsim compare``."""
    from fpsim.training.records import RecordError
    try:
        name, cfg = load_config(args.config)
        cfg = dict(cfg)
        for field in RUN_FLAGS:
            v = getattr(args, field)
            if v is not None:
                cfg[field] = v
        scalers = tuple(args.scalers.split(",")) if args.scalers else DEFAULT_SCALERS
        try:
            seeds = tuple(int(s) for s in args.seeds.split(","))
        except ValueError:
            raise ValueError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
        summary = compare(cfg, scalers, seeds, db=args.db, out=args.out, name=name,
                          shadow_every=args.shadow_every,
                          log=None if args.json else (lambda m: print(m, file=sys.stderr)),
                          command="fpsim " + " ".join(sys.argv[1:]))
    except (ValueError, TypeError, FileNotFoundError, RecordError) as e:
        print(f"fpsim compare: error: {e}", file=sys.stderr)
        return 2
    _print_summary(summary, args.json)
    return 0


def run_report(args) -> int:
    """Handler of ``fpsim report``."""
    from fpsim.analysis.report import write_report
    from fpsim.training.records import RecordError, RunDB
    try:
        if not os.path.exists(args.db):
            raise ValueError(f"{args.db} does not exist")
        if args.list:
            with RunDB(args.db) as db:
                print("\n".join(db.studies()))
            return 0
        summary = write_report(args.db, args.out, args.study)
    except (ValueError, RecordError) as e:
        print(f"fpsim report: error: {e}", file=sys.stderr)
        return 2
    _print_summary(summary, args.json)
    return 0
