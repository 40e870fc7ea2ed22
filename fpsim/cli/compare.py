"""``fpsim compare`` (one setting trained under several loss scalers, then the report) and
``fpsim report DB`` (redraw a study's report).

The study itself is :mod:`fpsim.training.study`; it and the report writer are imported only when
a command runs, so building the parser stays cheap.
"""

from __future__ import annotations

import json
import os
import sys

from fpsim.cli.train import RUN_FLAGS, add_run_arguments


def register(subparsers) -> None:
    """Add the ``compare`` and ``report`` parsers to the ``fpsim`` sub-parsers ``subparsers``."""
    # The help lists the default scalers; study.py imports only the standard library at module
    # level (training and plotting load inside compare()), so this import costs next to nothing.
    from fpsim.training.study import DEFAULT_SCALERS

    p = subparsers.add_parser(
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
    p = subparsers.add_parser("report", help="redraw the plots and report.md of a study",
                              description="Write the plots and report.md of a study (default: the "
                                          "newest in the database).")
    p.add_argument("db", help="run-record database")
    p.add_argument("--study", help="study name (see report.md or --list)")
    p.add_argument("--out", default="fpsim-report", help="report directory")
    p.add_argument("--list", action="store_true", help="list the studies and exit")
    p.add_argument("--json", action="store_true", help="print the summary table as JSON")


def run(args) -> int:
    """Run ``fpsim compare`` or ``fpsim report``, whichever ``args.command`` names."""
    return run_report(args) if args.command == "report" else run_compare(args)


def _print_summary(summary: dict, as_json: bool) -> None:
    """Print a report summary: JSON, or the markdown table and where the report went."""
    if as_json:
        print(json.dumps(summary))
        return
    from fpsim.analysis.report import table_markdown
    print(table_markdown(summary["rows"]))
    print(f"\nreport: {os.path.join(summary['out'], 'report.md')} (study {summary['study']} "
          f"in {summary['db']})")


def run_compare(args) -> int:
    """``fpsim compare``: 0 when every run finished and the report is written, 2 for bad input
    (one line on stderr)."""
    from fpsim.training.records import RecordError
    from fpsim.training.study import DEFAULT_SCALERS, compare, load_config
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
    """``fpsim report``: redraw a study's report (or ``--list`` the studies); 2 for bad input."""
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
