"""``fpsim halp [--problem lsq|logistic|digits|all] [--bits 4,8,16] [--seeds N] [--epochs E]
[--out DIR] [--quick]``: the HALP study (bit-centred SVRG against float64 SVRG and fixed-grid
LP-SVRG / LP-SGD), written as PNG figures, ``curves.json``, ``final.csv`` and ``summary.md``.

See ``docs/halp.md`` for the algorithm and the measured results.
"""

from __future__ import annotations

from fpsim.cli.common import _UsageError

PROBLEMS = ("lsq", "logistic", "digits")


def register(subparsers) -> None:
    """Add the ``halp`` parser to the ``fpsim`` sub-parsers ``subparsers``."""
    p = subparsers.add_parser(
        "halp", help="HALP (bit-centred SVRG) vs SVRG, LP-SVRG and LP-SGD on convex problems",
        description="Run the HALP study: distance to the optimum and suboptimality per epoch of "
                    "float64 SVRG, HALP, LP-SVRG and LP-SGD for each bit width, a sweep of "
                    "HALP's mu, stochastic vs nearest rounding, and (with --problem all or "
                    "digits) an MLP with one layer bit-centred. Writes figures and tables to "
                    "--out.")
    p.add_argument("--problem", default="all",
                   help="lsq, logistic, digits or all (default all; all adds the MLP run)")
    p.add_argument("--bits", default=None,
                   help="comma-separated grid widths, each 2..53 (default 4,8,16; --quick: 8)")
    p.add_argument("--seeds", type=int, default=None,
                   help="seeds per method (default 5; --quick: 2)")
    p.add_argument("--epochs", type=int, default=None,
                   help="outer epochs (default 30; --quick: 6)")
    p.add_argument("--out", default="halp-out", help="output folder (default halp-out)")
    p.add_argument("--quick", action="store_true",
                   help="a small run (least squares, 8 bits, 2 seeds, 6 epochs, no MLP) for "
                        "smoke tests")


def _fail(message: str):
    raise _UsageError(f"fpsim halp: error: {message}")


def _parse_bits(text: str) -> tuple:
    try:
        bits = tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        _fail(f"--bits {text!r} is invalid: give comma-separated integers such as 4,8,16")
    if not bits or any(not 2 <= b <= 53 for b in bits):
        _fail(f"--bits {text!r} is invalid: every width must be in 2..53")
    return bits


def run(args) -> int:
    """Run the study of the parsed ``args``; returns 0."""
    from fpsim.analysis import halp as study

    if args.problem == "all":
        problems = PROBLEMS
    elif args.problem in PROBLEMS:
        problems = (args.problem,)
    else:
        _fail(f"--problem {args.problem!r} is invalid: choose lsq, logistic, digits or all")
    for field in ("seeds", "epochs"):
        value = getattr(args, field)
        if value is not None and value < 1:
            _fail(f"--{field} {value} is invalid: must be >= 1")
    bits = _parse_bits(args.bits) if args.bits is not None else None
    kw = dict(bits=bits, seeds=args.seeds, epochs=args.epochs)
    if args.quick:
        cfg = study.StudyConfig.quick_config(
            **kw, problems=problems if args.problem != "all" else ("lsq",))
    else:
        cfg = study.StudyConfig(problems=problems, network=args.problem == "all",
                                **{k: v for k, v in kw.items() if v is not None})
    summary = study.run_study(cfg, args.out)
    print(study.summary_markdown(summary))
    print(f"wrote {len(summary['figures'])} figures, curves.json, final.csv and summary.md to "
          f"{args.out}")
    return 0
