"""``fpsim warmup [--all] [--jobs N]``: compile the kernels ahead of use, with progress."""

from __future__ import annotations

import os
import sys

from fpsim.cli.common import _UsageError


def register(subparsers) -> None:
    """Add the ``warmup`` parser to the ``fpsim`` sub-parsers ``subparsers``."""
    p = subparsers.add_parser(
        "warmup", help="compile the kernels ahead of use",
        description="Compile fpsim's Numba kernels now (on a fresh install the first command "
                    "otherwise compiles them as it goes) and cache them on disk; a second "
                    "warm-up only loads them. One progress line per task on stderr.",
    )
    p.add_argument("--all", action="store_true",
                   help="every kernel (float64 carrier, general formats, matmul and "
                        "tensor-core models, scaled and fixed-point formats), not just those "
                        "of training and fpsim compare")
    p.add_argument("--jobs", "-j", type=int, default=None, metavar="N",
                   help="compile in N processes (default: 1 for the main set, whose tasks "
                        "share their kernels; with --all the number of CPUs, at most 4)")


def run(args) -> int:
    """Run a parsed ``fpsim warmup`` command line; return the exit status."""
    from fpsim.warmup import warmup

    which = "all" if args.all else "main"
    jobs = args.jobs if args.jobs is not None else (
        1 if which == "main" else min(4, os.cpu_count() or 1))
    if jobs < 1:
        raise _UsageError(f"error: --jobs must be at least 1, got {jobs}")
    warmup(which, jobs=jobs, progress=sys.stderr)
    return 0
