"""Wall time of ``import fpsim`` in fresh interpreter processes.

Each sample starts a new ``python -c "import fpsim"`` (so nothing is cached in the interpreter;
the OS file cache and ``__pycache__`` are warm after the first run, which is the case a user
sees) and times it from outside with ``time.perf_counter``. The interpreter's own start-up is in
every sample, so the script also times ``python -c "import numpy"`` the same way: the ratio
fpsim / numpy is a machine-independent figure (fpsim itself imports numpy, so the ratio is >= 1).

Usage::

    python benchmarks/bench_import.py [-n 15] [--before DIR]

Prints the median and best of N samples for both commands, in seconds, and their ratio. Also
reports whether ``import fpsim`` pulled in numba, numba.cuda or scipy (read off ``sys.modules``
in the child process). ``--before DIR`` also times ``import fpsim`` from another checkout (e.g.
``git archive HEAD | tar -x -C DIR``; the child runs with DIR as its working directory, so DIR's
``fpsim`` is imported), with samples interleaved with the current tree's so that both see the
same machine load.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import sys
import time


ROOT = pathlib.Path(__file__).resolve().parents[1]


def sample(runs: dict[str, tuple[str, pathlib.Path]], n: int) -> dict[str, list[float]]:
    """Wall times in seconds of ``n`` fresh ``python -c code`` processes per entry of ``runs``
    (label -> (code, working directory)), the entries interleaved; one warm-up run each first."""
    times: dict[str, list[float]] = {label: [] for label in runs}
    for code, cwd in runs.values():  # warm-up: compiles __pycache__, fills the OS file cache
        subprocess.run([sys.executable, "-c", code], check=True, cwd=cwd)
    for _ in range(n):
        for label, (code, cwd) in runs.items():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=cwd)
            times[label].append(time.perf_counter() - t0)
    return times


def loaded_modules(cwd: pathlib.Path) -> list[str]:
    """Which heavy modules a fresh ``import fpsim`` run in ``cwd`` loads (numba, numba.cuda,
    scipy)."""
    code = ("import sys, fpsim; print(' '.join(m for m in ('numba', 'numba.cuda', 'scipy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=cwd)
    return out.stdout.split()


def main() -> None:
    """Print median / best wall time of ``import fpsim`` and ``import numpy`` and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=15, help="samples per command (default 15)")
    parser.add_argument("--before", type=pathlib.Path, default=None,
                        help="root of another checkout to time as 'before'")
    args = parser.parse_args()
    runs = {"import numpy": ("import numpy", ROOT), "import fpsim": ("import fpsim", ROOT)}
    trees = {"import fpsim": ROOT}
    if args.before is not None:
        runs["import fpsim (before)"] = ("import fpsim", args.before.resolve())
        trees["import fpsim (before)"] = args.before.resolve()
    times = sample(runs, args.n)
    med_np = statistics.median(times["import numpy"])
    print(f"python {sys.version.split()[0]}, {args.n} fresh processes each, interleaved")
    for label, ts in times.items():
        med = statistics.median(ts)
        ratio = "" if label == "import numpy" else f"  = {med / med_np:.2f} x numpy"
        print(f"{label:<22}: median {med:.3f} s  best {min(ts):.3f} s{ratio}")
    for label, cwd in trees.items():
        heavy = loaded_modules(cwd)
        print(f"heavy modules loaded by {label}: {', '.join(heavy) if heavy else 'none'}")


if __name__ == "__main__":
    main()
