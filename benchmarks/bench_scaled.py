"""Throughput of quantizing float32 arrays with scaled and block formats (OCP MX, NVFP4,
per-tensor FP8, S2FP8), as ratios to ``np.copyto`` of the same array measured in the same
process.

Run: ``python benchmarks/bench_scaled.py [--n 16777216] [--repeat 7] [--threads 2]
[--write docs/performance.md]``

Each timing is the best of ``--repeat`` runs after one warm-up call (which also compiles the
kernels on first use). The input is a ``(4096, n / 4096)`` float32 array (4096 x 4096 by
default) of N(0, 1) data, and a wide-range variant (``|x| = 2^U(-30, 20)``, random signs).
Scaled formats have no ``out=``: every call allocates its result, as the plain
``fpsim.quantize(x, "float8_e4m3fn")`` row (the same allocation, no scales) shows. Per-tensor
rules include their amax pass (and S2FP8 its statistics passes). Numba runs ``--threads``
threads; threadpoolctl holds BLAS and OpenMP pools to the same count.
"""

from __future__ import annotations


import numpy as np

import fpsim
from bench_quantize import best_time, data, ratio_main  # same folder: one timing helper

#: (format, target ratio to np.copyto) from the issue.
FORMATS = (("mxfp8_e4m3", 0.4), ("mxfp4_e2m1", None), ("nvfp4", 0.4), ("fp8_current", 0.4),
           ("s2fp8", 0.2))


def run(n: int, repeat: int) -> tuple[list[str], list[str]]:
    rows, misses = [], []
    cols = 4096 if n % 4096 == 0 else n
    for kind in ("normal", "wide"):
        x = data(kind, n).reshape(-1, cols)
        out = np.empty_like(x)
        t_copy = best_time(lambda: np.copyto(out, x), repeat)
        copy_rate = n / t_copy
        rows.append(f"| {kind} | np.copyto (baseline) | {copy_rate / 1e9:.2f} | 1.00 | |")
        t = best_time(lambda: fpsim.quantize(x, "float8_e4m3fn"), repeat)
        rows.append(f"| {kind} | float8_e4m3fn, no scale (reference: same allocation) "
                    f"| {n / t / 1e9:.2f} | {n / t / copy_rate:.2f} | |")
        for name, target in FORMATS:
            with np.errstate(all="ignore"):
                t = best_time(lambda: fpsim.quantize(x, name), repeat)
            ratio = n / t / copy_rate
            met = "" if target is None else ("yes" if ratio >= target else "no")
            tgt = "" if target is None else f">= {target} ({met})"
            rows.append(f"| {kind} | {name} | {n / t / 1e9:.2f} | {ratio:.2f} | {tgt} |")
            if met == "no":
                misses.append(f"{name} ({kind}: {ratio:.2f} < {target})")
    return rows, misses


def main(argv=None) -> int:
    return ratio_main(argv, __doc__, run, "bench_scaled", "Scaled and block formats",
                      "| data | path | G elem/s | / np.copyto | target |", "bench_scaled.py")


if __name__ == "__main__":
    raise SystemExit(main())
