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


import numpy as np

import fpsim
from bench_quantize import best_time, data, ratio_main  # same folder: one timing helper

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
    return ratio_main(argv, __doc__, run, "bench_fixed", "Fixed-point and integer grids",
                      "| format | rounding | result | G elem/s | / np.copyto | target (out=) |", "bench_fixed.py")


if __name__ == "__main__":
    raise SystemExit(main())
