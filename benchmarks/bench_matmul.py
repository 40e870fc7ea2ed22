"""Throughput of fpsim.matmul under accumulation models, next to float32 BLAS (numpy's matmul)
measured in the same process.

Run: ``python benchmarks/bench_matmul.py [--n 256] [--repeat 5] [--write docs/performance.md]``
"""

from __future__ import annotations

import argparse
import sys

import numba
import numpy as np

import fpsim
import fpsim.numerics.accumulation as acc
from bench_quantize import best_time, replace_section  # same folder: one timing helper


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", default=None, help="replace the matmul section of this file")
    args = parser.parse_args(argv)
    n = args.n
    rng = np.random.default_rng(0)
    # Random normal float16 matrices: no fast path applies (sums are not exact in float32).
    A = fpsim.quantize(rng.standard_normal((n, n)), "float16")
    B = fpsim.quantize(rng.standard_normal((n, n)), "float16")
    # Small multiples of 1/8 (e.g. 4-bit quantized data): every float32 partial sum is exact,
    # so the BLAS fast path provably equals the fp32-accumulate model.
    Ai = rng.integers(-8, 8, (n, n)) / 8.0
    Bi = rng.integers(-8, 8, (n, n)) / 8.0
    A32, B32 = A.astype(np.float32), B.astype(np.float32)
    t_blas = best_time(lambda: A32 @ B32, args.repeat)
    macs = n ** 3
    m = acc._model(None, None, None, "rne", "sequential", None, False,
                   "fp16 inputs, fp32 accumulate", None, "ieee", 0, 0, None)
    assert acc.blas_exact(Ai, Bi, m) is not None and acc.blas_exact(A, B, m) is None
    cases = [
        ("fp16 inputs, fp32 accumulate: BLAS fast path (exact data)",
         lambda: fpsim.matmul(Ai, Bi, preset="fp16 inputs, fp32 accumulate")),
        ("fp16 inputs, fp32 accumulate: each addition rounded (random data)",
         lambda: fpsim.matmul(A, B, preset="fp16 inputs, fp32 accumulate")),
        ("fp16 accumulate: each addition rounded",
         lambda: fpsim.matmul(A, B, preset="fp16 accumulate")),
        ("fp16 accumulate, stochastic rounding",
         lambda: fpsim.matmul(A, B, preset="fp16 accumulate", rounding="sr")),
        ("fp16 accumulate, pairwise (general model kernel)",
         lambda: fpsim.matmul(A, B, preset="fp16 accumulate", order="pairwise")),
        ("fp16 accumulate, Kahan (general model kernel)",
         lambda: fpsim.matmul(A, B, preset="fp16 accumulate", compensated=True)),
        ("exact accumulation (general model kernel)",
         lambda: fpsim.matmul(A, B, "float16", accum=None, fast=False)),
    ]
    rows = [f"| float32 BLAS (numpy `@`, baseline) | {macs / t_blas / 1e9:.2f} | 1.0 |"]
    for label, fn in cases:
        t = best_time(fn, args.repeat)
        rows.append(f"| {label} | {macs / t / 1e9:.3f} | {t / t_blas:.1f} |")
    text = "\n".join([f"{n}x{n}x{n}, float16 inputs, best of {args.repeat}, "
                      f"{numba.get_num_threads()} threads.", "",
                      "| path | G multiply-adds/s | time / float32 BLAS |", "|---|---|---|", *rows])
    print(text)
    if args.write:
        replace_section(args.write, "bench_matmul", "Matrix products (matmul)", text,
                        " ".join(["python benchmarks/bench_matmul.py"] + (argv or sys.argv[1:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
