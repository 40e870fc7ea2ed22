"""Throughput of quantizing float32 arrays onto integer grids (int8 with a float step δ, the
Q-format int8 with a power-of-two step), as ratios to ``np.copyto`` of the same array measured
in the same process.

Run: ``python benchmarks/bench_fixed.py [--n 16777216] [--repeat 7] [--threads 2]
[--write docs/performance.md]``

Each timing is the best of ``--repeat`` runs after one warm-up call (which also compiles the
kernels on first use), into a preallocated float32 result (``out=``) and allocating. The input
is N(0, 1) float32 data; the step of ``IntGrid(8, δ)`` is ``δ = 4 / 127`` (not a power of two:
the rounding decides on the exact ratio ``x/δ``, most elements through the certified float
estimate); ``Fixed(8, 5)`` has ``δ = 2^-5`` (shifts only). Numba runs ``--threads`` threads;
threadpoolctl holds BLAS and OpenMP pools to the same count.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import numba
import numpy as np
from threadpoolctl import threadpool_limits

import fpsim
from bench_quantize import best_time, data, replace_section  # same folder: one timing helper

#: (label, format, rounding, target ratio to np.copyto) -- the targets from the issue.
CASES = (("int8, δ = 4/127", fpsim.IntGrid(8, 4 / 127), "rne", 0.6),
         ("int8, δ = 4/127", fpsim.IntGrid(8, 4 / 127), "sr", 0.3),
         ("Fixed(8, 5)", fpsim.Fixed(8, 5), "rne", None),
         ("Fixed(8, 5)", fpsim.Fixed(8, 5), "sr", None))


def run(n: int, repeat: int) -> tuple[list[str], list[str]]:
    rows, misses = [], []
    x = data("normal", n)
    out = np.empty_like(x)
    t_copy = best_time(lambda: np.copyto(out, x), repeat)
    copy_rate = n / t_copy
    rows.append(f"| np.copyto (baseline) | | | {copy_rate / 1e9:.2f} | 1.00 | |")
    for label, fmt, mode, target in CASES:
        for how, call in (("out=", lambda: fpsim.quantize(x, fmt, mode, out=out)),
                          ("allocating", lambda: fpsim.quantize(x, fmt, mode))):
            t = best_time(call, repeat)
            ratio = n / t / copy_rate
            met = "" if target is None or how != "out=" else ("yes" if ratio >= target else "no")
            tgt = f">= {target} ({met})" if met else ""
            rows.append(f"| {label} | {mode} | {how} | {n / t / 1e9:.2f} | {ratio:.2f} | {tgt} |")
            if met == "no":
                misses.append(f"{label} {mode} ({ratio:.2f} < {target})")
    return rows, misses


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1 << 24)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", default=None, help="replace the fixed-point section of this file")
    args = parser.parse_args(argv)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    with threadpool_limits(args.threads):
        rows, misses = run(args.n, args.repeat)
    header = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"numba {numba.__version__} ({numba.get_num_threads()} threads), numpy {np.__version__}, "
        f"Python {platform.python_version()}; n = {args.n} float32 inputs, best of {args.repeat}.",
        "",
        "| format | rounding | result | G elem/s | / np.copyto | target (out=) |",
        "|---|---|---|---|---|---|",
    ]
    footer = ["", "Targets missed: " + (", ".join(misses) if misses else "none") + "."]
    text = "\n".join(header + rows + footer)
    print(text)
    if args.write:
        replace_section(args.write, "bench_fixed", "Fixed-point and integer grids", text,
                        " ".join(["python benchmarks/bench_fixed.py"] + (argv or sys.argv[1:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
