"""``fpsim train``: the training loop from the command line (TOML config and/or flags)."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import tomllib

#: Flags that map one to one onto TrainConfig fields (flag name with - for _).
_FIELDS = ("model", "dataset", "policy", "optimizer", "lr", "momentum", "weight_decay", "loss_weight",
           "schedule", "epochs", "batch_size", "seed", "hist_every", "checkpoint_every", "name",
           "scaler", "shadow_every", "lca_max_bytes")


#: Flags shared by ``fpsim train`` and ``fpsim compare``.
RUN_FLAGS = ("model", "dataset", "policy", "optimizer", "lr", "epochs", "batch_size")


def add_run_arguments(p, policy_help: str | None = None) -> None:
    """The flags of :data:`RUN_FLAGS` (what to train) on parser ``p``; ``policy_help`` replaces
    the help of ``--policy`` (whose default depends on the command)."""
    p.add_argument("--model", help="mlp (default), cnn, resnet, transformer")
    p.add_argument("--dataset", help="digits (default), mnist1d, synthetic-classification, "
                   "synthetic-regression, mnist, cifar10")
    p.add_argument("--policy", help=policy_help or (
        "a preset (fp32 (default), mixed_fp16, mixed_bf16, fp8_hybrid, fp8_e4m3_e5m2, "
        "e5m2-grads, e4m3-grads), a cast FORMAT[:ROUNDING[:OVERFLOW]] for activations, "
        "weights and gradients (e3m4:sr), or ROLE=CAST items joined by + "
        "(fwd=e4m3+grads=e5m2)"))
    p.add_argument("--optimizer", help="sgd, adam or adamw")
    p.add_argument("--lr", type=float, help="base learning rate")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)


def register(subparsers) -> None:
    """Add the ``train`` parser to the ``fpsim`` sub-parsers ``subparsers``."""
    p = subparsers.add_parser(
        "train", help="train a model under a precision policy, recording the run in SQLite",
        description="Train a model from the zoo on a dataset under a precision policy. Every step "
                    "(metrics, per-site event counts, histograms every K steps) and a checkpoint "
                    "are committed to the SQLite database --db; an interrupted run (Ctrl-C, "
                    "SIGTERM, or a crash) resumes bit-identically with --resume. Flags override "
                    "the --config file. Fields left unset take the defaults of the model/dataset "
                    "pair (see docs/training.md).")
    p.add_argument("--config", metavar="TOML", help="TOML file of TrainConfig fields "
                   "(tables: policy, model_config, dataset_options)")
    add_run_arguments(p)
    p.add_argument("--data-path", help="directory of the files of the mnist / cifar10 loaders")
    p.add_argument("--scaler", help="loss scaler: none (default), static:S, dynamic[:variant], "
                   "adaptive")
    p.add_argument("--momentum", type=float, help="SGD momentum in [0, 1) (default 0.9)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--loss-weight", type=float, help="train on loss_weight x the loss "
                   "(small values give small gradients; default 1)")
    p.add_argument("--schedule", help="constant or cosine")
    p.add_argument("--seed", type=int, help="an integer in [0, 2^63) (default 0)")
    p.add_argument("--shadow-every", type=int, help="float32-shadow underflow measurement every "
                   "K steps (default 0: off)")
    p.add_argument("--hist-every", type=int, help="histograms every K steps (default 50, 0: never)")
    p.add_argument("--checkpoint-every", type=int, help="checkpoint every K steps (default 100)")
    p.add_argument("--name", help="label of the run")
    p.add_argument("--no-instrument", action="store_true", help="no per-site event counts")
    p.add_argument("--lca", action="store_true", help="save the parameters after every step "
                   "for loss-change allocation (`fpsim lca`)")
    p.add_argument("--lca-max-bytes", type=int, help="the most bytes --lca may save "
                   "(default 1 GiB)")
    p.add_argument("--db", default="runs.sqlite", help="run-record database (default runs.sqlite)")
    p.add_argument("--resume", nargs="?", const=True, type=int, metavar="RUN_ID",
                   help="continue run RUN_ID (default: the newest unfinished run) from its "
                        "checkpoint, under its recorded config: flags and --config fields may "
                        "repeat the recorded values; one that would change a setting is "
                        "refused (start a new run to change it)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args) -> dict:
    """TrainConfig fields from the --config file overlaid with the given flags, checked
    (TrainConfig's checks; an error in a field the file sets names the file).

    Raises:
        ValueError / TypeError: unreadable file, invalid TOML, or a field of the wrong type or
            range (named).
    """
    from fpsim.training.loop import TrainConfig
    flags = _flag_fields(args)
    cfg = {}
    if args.config:
        cfg = _read_toml(args.config)
        # The file's own fields first (with the model and dataset the flags choose, which
        # decide what model_config and dataset_options may hold), so their errors name it.
        own = {k: v for k, v in cfg.items() if k not in flags}
        own.update({k: flags[k] for k in ("model", "dataset") if k in flags})
        try:
            TrainConfig.from_dict(own)
        except (ValueError, TypeError) as e:
            raise type(e)(f"config file {args.config}: {e}") from None
    cfg.update(flags)
    if args.data_path:
        options = cfg.get("dataset_options")
        cfg["dataset_options"] = {**(options if isinstance(options, dict) else {}),
                                  "path": args.data_path}
    TrainConfig.from_dict(cfg)
    return cfg


def _flag_fields(args) -> dict:
    """The TrainConfig fields set by flags (``--lr 0.1`` -> ``{"lr": 0.1}``)."""
    fields = {f: getattr(args, f) for f in _FIELDS if getattr(args, f) is not None}
    if args.no_instrument:
        fields["instrument"] = False
    if args.lca:
        fields["lca"] = True
    return fields


def _read_toml(path: str) -> dict:
    """The parsed TOML file ``path``; a missing, unreadable or invalid file is a ValueError."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"config file {path} is a directory, not a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config file {path} is not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"config file {path} cannot be read: {e}") from None


def _refuse_changes_on_resume(args) -> None:
    """A resumed run continues under its recorded config, bit-identically. Flags and
    --config fields that repeat the recorded values are accepted (the command line that
    started the run, with --resume added, resumes it); one that would change a setting is
    refused by name rather than ignored."""
    from fpsim.training.loop import TrainConfig
    from fpsim.training.records import RunDB, has_python_objects
    given = config_from_args(args)
    if not given:
        return
    if not os.path.exists(args.db):  # (opening it would create an empty database)
        raise ValueError(f"the database {args.db} does not exist: there is no run to resume")
    with RunDB(args.db) as rdb:
        run_id = rdb.latest_unfinished() if args.resume is True else args.resume
        recorded = rdb.run(run_id)["config"]
    if has_python_objects(recorded):
        return  # (train refuses such a run with its own message)
    old, new = TrainConfig.from_dict(recorded), TrainConfig.from_dict({**recorded, **given})
    changed = [f"{_option(args, field)} ({field} {getattr(new, field)!r}, recorded "
               f"{getattr(old, field)!r})" for field in given
               if getattr(new, field) != getattr(old, field)]
    if changed:
        raise ValueError(f"--resume continues run {run_id} under its recorded config; "
                         f"{'; '.join(changed)} would change it (start a new run to change a "
                         "setting)")


def _option(args, field: str) -> str:
    """The command-line option that set TrainConfig field ``field``."""
    flags = {"instrument": "--no-instrument", "lca": "--lca", "dataset_options": "--data-path"}
    if field in _FIELDS and getattr(args, field) is not None:
        return f"--{field.replace('_', '-')}"
    if field in flags and (field != "dataset_options" or args.data_path):
        return flags[field]
    return f"--config field {field}"


def run(args) -> int:
    """Run ``fpsim train``: 0 when the run finished, 130 when it was interrupted, 2 for
    bad input (one line on stderr)."""
    from fpsim.training.records import RecordError
    from fpsim.training.loop import train
    try:
        resuming = args.resume is not None  # (--resume 0 names run 0)
        if resuming:
            _refuse_changes_on_resume(args)
        cfg = None if resuming else config_from_args(args)
        from fpsim import warmup
        warmup.auto()
        summary = train(cfg, db=args.db, resume=args.resume,
                        progress=not (args.no_progress or args.json) and sys.stderr.isatty())
    except (ValueError, TypeError, OSError, RecordError) as e:
        print(f"fpsim train: error: {e}", file=sys.stderr)
        return 2
    except sqlite3.Error as e:  # (RunDB names its own failures; this is the backstop)
        print(f"fpsim train: error: the database {args.db}: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary))
    else:
        acc, under = summary["test_accuracy"], summary["grad_underflow_rate"]
        final = summary["final_loss"]
        print(f"run {summary['run_id']} {summary['status']} in {summary['seconds']:.1f} s: "
              f"{summary['steps']} steps, test accuracy "
              f"{'n/a' if acc is None else f'{100 * acc:.2f}%'}, final train loss "
              f"{'n/a' if final is None else f'{final:.4g}'}, skipped steps "
              f"{summary['skipped_steps']}, gradient values flushed to zero (kernel count, "
              f"all gradient casts) {'n/a' if under is None else f'{100 * under:.3g}%'} "
              f"(db {summary['db']}; `fpsim report {summary['db']}` draws it)")
    return 0 if summary["status"] == "finished" else 130
