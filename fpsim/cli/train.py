"""``fpsim train``: the training loop from the command line (TOML config and/or flags)."""

from __future__ import annotations

import json
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
    p.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--loss-weight", type=float, help="train on loss_weight x the loss "
                   "(small values give small gradients; default 1)")
    p.add_argument("--schedule", help="constant or cosine")
    p.add_argument("--seed", type=int)
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
                   help="continue run RUN_ID (default: the newest unfinished run) from its checkpoint")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args) -> dict:
    """TrainConfig fields from the --config file overlaid with the given flags."""
    cfg = {}
    if args.config:
        try:
            with open(args.config, "rb") as f:
                cfg = tomllib.load(f)
        except FileNotFoundError:
            raise ValueError(f"config file {args.config} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"config file {args.config} is not valid TOML: {e}") from None
    for field in _FIELDS:
        v = getattr(args, field)
        if v is not None:
            cfg[field] = v
    if args.data_path:
        cfg.setdefault("dataset_options", {})["path"] = args.data_path
    if args.no_instrument:
        cfg["instrument"] = False
    if args.lca:
        cfg["lca"] = True
    return cfg


def run(args) -> int:
    """Run ``fpsim train``: 0 when the run finished, 130 when it was interrupted, 2 for
    bad input (one line on stderr)."""
    from fpsim.training.records import RecordError
    from fpsim.training.loop import train
    try:
        cfg = config_from_args(args)
        summary = train(None if args.resume else cfg, db=args.db, resume=args.resume,
                        progress=not (args.no_progress or args.json) and sys.stderr.isatty())
    except (ValueError, TypeError, OSError, RecordError) as e:
        print(f"fpsim train: error: {e}", file=sys.stderr)
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
