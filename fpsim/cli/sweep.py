"""``fpsim sweep``: a grid of training runs on Dask distributed, into one SQLite study.

    fpsim sweep SPEC.toml --db STUDY.sqlite [--workers N | --scheduler ADDRESS] [--json]

The spec's ``[base]`` table holds a training config (or ``config = "NAME"``) and its ``[axes]``
table maps config keys to lists; see :mod:`fpsim.training.sweep` and ``docs/sweeps.md``. Runs the
database already holds finished are skipped, so the same command resumes a sweep. Exit status:
0 when every run finished, 1 when some failed, 130 when interrupted, 2 for bad input.
"""

from __future__ import annotations

import json
import sys

from fpsim.cli.common import _UsageError


def register(subparsers) -> None:
    """Add the ``sweep`` parser to the ``fpsim`` sub-parsers ``subparsers``."""
    p = subparsers.add_parser(
        "sweep", help="a grid of training runs on Dask (local or a cluster), one study database",
        description="Expand a sweep spec (a base training config crossed with axes) into runs, "
                    "run them on Dask distributed workers (a LocalCluster by default, or the "
                    "scheduler at --scheduler) and record every run in the SQLite study --db, "
                    "written by this process only. Finished runs are skipped: rerun the same "
                    "command to resume. `fpsim report DB --study NAME` draws the study.")
    p.add_argument("spec", metavar="SPEC", help="the sweep spec (TOML: [base] and [axes])")
    p.add_argument("--db", default="runs.sqlite", help="the study database (default runs.sqlite)")
    p.add_argument("--workers", type=int, default=None,
                   help="LocalCluster worker processes, one thread each (default: the CPUs)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="attach to a running Dask scheduler (tcp://host:8786) instead")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    """Run ``fpsim sweep``; returns 0, 1 (some runs failed), 130 (interrupted) or raises
    _UsageError for bad input."""
    from fpsim.training import sweep
    from fpsim.training.records import RecordError
    try:
        spec = sweep.load_spec(args.spec)
        sweep.expand(spec)  # validate every run before a cluster starts
        summary = sweep.run_sweep(
            spec, args.db, workers=args.workers, scheduler=args.scheduler,
            progress=not (args.no_progress or args.json) and sys.stderr.isatty(),
            log=None if args.json else (lambda m: print(m, file=sys.stderr)))
    except (ValueError, TypeError, OSError, RecordError) as err:
        raise _UsageError(f"fpsim sweep: error: {err}") from None
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"sweep {summary['study']}: {summary['runs']} runs, {summary['finished']} finished "
              f"now, {summary['skipped']} already finished, {summary['failed']} failed"
              f"{', interrupted' if summary['interrupted'] else ''} in {summary['seconds']:.1f} s "
              f"(db {summary['db']}; `fpsim report {summary['db']} --study {summary['study']}` "
              "draws it)")
    return 130 if summary["interrupted"] else 1 if summary["failed"] else 0
