"""Throughput of fpsim.matmul under accumulation models, next to float32 BLAS (numpy's matmul)
measured in the same process.

Run: ``python benchmarks/bench_matmul.py [--n 256] [--sizes 64 256 1024] [--repeat 5]
[--write docs/performance.md]``. The first table times the BLAS fast path at each of ``--sizes``
with BLAS on one thread (as the training loop runs it) and at the library's default thread
count, each against float32 BLAS under the same setting; the second every model at ``--n``.
"""

from __future__ import annotations

import argparse
import sys

import os

import numba
import numpy as np
from threadpoolctl import threadpool_limits

import fpsim
import fpsim.numerics.accumulation as acc
from bench_quantize import best_time, replace_section  # same folder: one timing helper


def fast_path_rows(sizes, repeat: int) -> list[str]:
    """Table rows: the fp32-accumulate BLAS fast path on exact float16 data against float32 BLAS,
    per size and BLAS thread setting (``1``: pinned, as the training loop runs; ``default``)."""
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        # Small multiples of 1/8 (e.g. 4-bit quantized data): every float32 partial sum is exact,
        # so the BLAS fast path provably equals the fp32-accumulate model.
        Ai = rng.integers(-8, 8, (n, n)) / 8.0
        Bi = rng.integers(-8, 8, (n, n)) / 8.0
        A32, B32 = Ai.astype(np.float32), Bi.astype(np.float32)
        m = acc._model(None, None, None, "rne", "sequential", None, False,
                       "fp16 inputs, fp32 accumulate", None, "ieee", 0, 0, None)
        assert acc.blas_exact(Ai, Bi, m) is not None
        # Many calls at small sizes: on a shared machine the best of a few is rarely a quiet one.
        reps = max(3, repeat * 100 if n <= 64 else repeat * 40 if n <= 256 else repeat)
        for threads in (1, None):
            with threadpool_limits(threads, user_api="blas"):
                t_blas = best_time(lambda: A32 @ B32, reps)
                t_fast = best_time(lambda: fpsim.matmul(
                    Ai, Bi, preset="fp16 inputs, fp32 accumulate"), reps)
            rows.append(f"| {n}^3 | {threads or 'default'} | {t_blas * 1e3:.3f} | "
                        f"{t_fast * 1e3:.3f} | {t_fast / t_blas:.2f} |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", default=None, help="replace the matmul section of this file")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    fast_rows = fast_path_rows(args.sizes, args.repeat)
    n = args.n
    rng = np.random.default_rng(0)
    # Random normal float16 matrices: no fast path applies (sums are not exact in float32).
    A = fpsim.quantize(rng.standard_normal((n, n)), "float16")
    B = fpsim.quantize(rng.standard_normal((n, n)), "float16")
    Ai = rng.integers(-8, 8, (n, n)) / 8.0  # exact data: the BLAS fast path applies
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
    text = "\n".join([
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the start, numba "
        f"{numba.get_num_threads()} threads; times are the best of several calls.", "",
        "fp16 inputs, fp32 accumulate, BLAS fast path on exact float16 data (multiples of 1/8), "
        "against float32 BLAS (numpy `@` of float32 copies) under the same BLAS threads:", "",
        "| n | BLAS threads | float32 BLAS ms | fast path ms | fast path / BLAS |",
        "|---|---|---|---|---|", *fast_rows, "",
        f"Every model at {n}x{n}x{n}, float16 inputs, best of {args.repeat}, BLAS at its "
        f"default threads.", "",
        "| path | G multiply-adds/s | time / float32 BLAS |", "|---|---|---|", *rows])
    print(text)
    if args.write:
        replace_section(args.write, "bench_matmul", "Matrix products (matmul)", text,
                        " ".join(["python benchmarks/bench_matmul.py"] + (argv or sys.argv[1:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
