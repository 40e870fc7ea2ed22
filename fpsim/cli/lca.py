"""``fpsim lca``: loss-change allocation of a recorded run, per parameter tensor, neuron and step.

    fpsim lca --db DB --run ID [--first-order] [--tol T] [--max-splits N] [--split train|test]
              [--chunk N] [--start S] [--stop T] [--out DIR] [--json]
    fpsim lca --study [--models L,...] [--policies L,...] [--seeds N] [--epochs E]
              [--db DB] [--out DIR] [--quick]

The first form allocates the training-set loss change of every step of a run trained with
``fpsim train --lca`` and prints each parameter tensor's total, the helping fraction and how
well the allocation adds up; ``--out`` also writes the allocation (``lca.npz``) and its figures.
The second runs the study of ``docs/lca.md`` (float32 against emulated low-precision training).
"""

from __future__ import annotations

import json
import os

import numpy as np

from fpsim.cli.common import _UsageError, run_one_or_study


def register(subparsers) -> None:
    """Add the ``lca`` parser to the ``fpsim`` sub-parsers ``subparsers``."""
    p = subparsers.add_parser(
        "lca", help="loss-change allocation: which layers help or hurt training, per step",
        description="Allocate every training step's change of the full training-set loss to "
                    "the parameters (a path integral along the step, by adaptive Simpson or "
                    "first order) for a run trained with `fpsim train --lca`; or, with --study, "
                    "compare the allocation of float32 and emulated low-precision training.")
    p.add_argument("--db", help="run-record database (--study: where its runs go; default "
                                "OUT/runs.sqlite)")
    p.add_argument("--run", type=int, help="the run id to allocate")
    p.add_argument("--first-order", action="store_true",
                   help="the first-order (Euler) allocation instead of adaptive Simpson")
    p.add_argument("--tol", type=float, default=1e-3,
                   help="per-step tolerance on |ΔL − ΣA| before Simpson refines (default 1e-3)")
    p.add_argument("--max-splits", type=int, default=32,
                   help="most Simpson intervals per step, a power of two (default 32)")
    p.add_argument("--split", default="train", help="train (default) or test: whose loss")
    p.add_argument("--chunk", type=int, default=None,
                   help="examples per forward/backward pass (default: the whole split)")
    p.add_argument("--start", type=int, default=0, help="first step to allocate (default 0)")
    p.add_argument("--stop", type=int, default=None,
                   help="allocate the steps before this one (default: every saved step)")
    p.add_argument("--out", default=None, help="write lca.npz, lca.json and the figures here "
                                               "(--study: the output folder, default lca-out)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--study", action="store_true", help="run the precision study")
    p.add_argument("--models", default=None, help="--study: comma-separated model labels")
    p.add_argument("--policies", default=None, help="--study: comma-separated policy labels")
    p.add_argument("--seeds", type=int, default=None, help="--study: seeds per cell (default 5)")
    p.add_argument("--epochs", type=int, default=None, help="--study: epochs (default: each "
                                                            "model's)")
    p.add_argument("--quick", action="store_true", help="--study: a small smoke-test study")


def _fail(message: str):
    raise _UsageError(f"fpsim lca: error: {message}")


def run(args) -> int:
    """Run the parsed ``args``; returns 0 (usage and input errors raise _UsageError)."""
    return run_one_or_study("lca", args, _one, _study)


def _one(args) -> int:
    from fpsim.training import lca
    if args.db is None or args.run is None:
        _fail("give --db and --run (a run trained with `fpsim train --lca`), or --study")
    if not os.path.exists(args.db):
        _fail(f"--db {args.db} does not exist")
    res = lca.allocate(args.db, args.run, method="first_order" if args.first_order else "simpson",
                       tol=args.tol, max_splits=args.max_splits, split=args.split,
                       chunk=args.chunk, start=args.start, stop=args.stop,
                       progress=not args.json)
    summary = dict(res.summary(), run=args.run)
    if args.out:
        from fpsim.analysis import lca as study
        os.makedirs(args.out, exist_ok=True)
        res.save(os.path.join(args.out, "lca.npz"))
        with open(os.path.join(args.out, "lca.json"), "w") as f:
            json.dump(summary, f, indent=1)
        summary["figures"] = study.plot_run(res, args.out, f"run {args.run}")
    if args.json:
        print(json.dumps(summary))
        return 0
    s = summary
    print(f"run {args.run}: steps {res.steps[0]}..{res.steps[-1]}, {res.method}, {args.split} "
          f"loss {s['loss_start']:.5f} -> {s['loss_end']:.5f}")
    print(f"{'parameter':<28} {'entries':>8} {'Σ A':>11} {'share of ΔL':>11} "
          f"{'entries helping overall':>23}")
    sl = res._slices()
    for name, shape in zip(res.names, res.shapes):
        tot = res.total[sl[name]]
        share = tot.sum() / s["delta_loss"] if s["delta_loss"] else float("nan")
        print(f"{name:<28} {int(np.prod(shape)):>8} {tot.sum():>+11.4e} {100 * share:>10.1f}% "
              f"{100 * (tot < 0).mean():>22.1f}%")
    print(f"ΔL = {s['delta_loss']:+.6f}, Σ A = {s['allocated']:+.6f}; per step |ΔL − ΣA| max "
          f"{s['max_abs_error']:.2e} ({s['steps_within_tol']}/{s['steps']} steps within "
          f"{res.tol:g}); mean Simpson intervals {s['splits_mean']:.2f}")
    print(f"parameters helping per step: mean {100 * s['helped_mean']:.1f}% (range "
          f"{100 * s['helped_min']:.1f}..{100 * s['helped_max']:.1f}%); {s['evaluations']} "
          f"full-set gradients in {s['seconds']:.1f} s")
    if args.out:
        print(f"wrote lca.npz, lca.json, {', '.join(s['figures'])} (PNG and SVG) to {args.out}")
    return 0


def _labels(text, known, what):
    labels = tuple(v for v in (text or "").split(",") if v)
    bad = [v for v in labels if v not in known]
    if bad:
        _fail(f"unknown {what} label(s) {bad}; choose from {', '.join(known)}")
    return labels or None


def _study(args) -> int:
    from fpsim.analysis import lca as study
    kw = dict(models=_labels(args.models, study.MODELS, "model"),
              policies=_labels(args.policies, study.POLICIES, "policy"),
              seeds=args.seeds, epochs=args.epochs, tol=args.tol, max_splits=args.max_splits)
    if args.seeds is not None and args.seeds < 1:
        _fail(f"--seeds {args.seeds} is invalid: must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        _fail(f"--epochs {args.epochs} is invalid: must be >= 1")
    if args.quick:
        cfg = study.StudyConfig.quick_config(**kw)
    else:
        cfg = study.StudyConfig(**{k: v for k, v in kw.items() if v is not None})
    out = args.out or "lca-out"
    summary = study.run_study(cfg, out, db=args.db)
    print(study.table_markdown(summary))
    print(f"wrote {', '.join(summary['figures'])} (PNG and SVG), table.md, runs.csv and "
          f"results.json to {out}")
    return 0
