"""Throughput of the tensor-core GEMM model, against the per-addition-rounded accumulation model
in the same process, and the cost of ``validate_gemm`` against computing the model once.

Usage: ``python benchmarks/bench_tensor_core.py [--n 256] [--preset H100-fp16] [--repeat 5]
[--validate-n 1024]``. Prints multiply-adds per second (M*N*K / median wall time) of
``fpsim.matmul(a, b, preset=...)`` and of ``fpsim.matmul(a, b, fmt="float32",
accum="float32")`` (fp16 operands, every addition rounded to binary32: the sequential model's
vectorized kernel), then the wall time of ``fpsim.validate_gemm`` on a model-computed D of size
``--validate-n`` cubed next to one model computation of the same size.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import fpsim


def _median_time(f, repeat):
    f()  # compile / warm up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--preset", default="H100-fp16")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--validate-n", type=int, default=1024)
    args = p.parse_args()
    import numba
    tc = fpsim.tensor_core(args.preset)
    rng = np.random.default_rng(0)
    n = args.n
    a = fpsim.quantize(rng.standard_normal((n, n)), tc.input_format)
    b = fpsim.quantize(rng.standard_normal((n, n)), tc.input_format)
    macs = n ** 3
    t_tc = _median_time(lambda: fpsim.matmul(a, b, preset=args.preset), args.repeat)
    t_seq = _median_time(lambda: fpsim.matmul(a, b, fmt="float32", accum="float32",
                                              inputs=tc.input_format), args.repeat)
    print(f"numba threads: {numba.get_num_threads()}")
    print(f"{n}x{n}x{n} {args.preset}: {t_tc * 1e3:.1f} ms, {macs / t_tc / 1e9:.2f} G MAC/s")
    print(f"{n}x{n}x{n} per-addition fp32 model: {t_seq * 1e3:.1f} ms, "
          f"{macs / t_seq / 1e9:.2f} G MAC/s (tensor-core / per-addition time: "
          f"{t_tc / t_seq:.2f})")
    v = args.validate_n
    A = fpsim.quantize(rng.standard_normal((v, v)), tc.input_format)
    B = fpsim.quantize(rng.standard_normal((v, v)), tc.input_format)
    t0 = time.perf_counter()
    D = fpsim.matmul(A, B, preset=args.preset)
    t_model = time.perf_counter() - t0
    D[0, 0] = np.nextafter(np.float32(D[0, 0]), np.float32(np.inf))  # one mismatch to report
    fpsim.validate_gemm(A[:8, :8], B[:8, :8], D[:8, :8].astype(np.float32) * 0,
                        preset=args.preset)  # compile the checks' kernels outside the timing
    t0 = time.perf_counter()
    res = fpsim.validate_gemm(A, B, D.astype(np.float32), preset=args.preset)
    t_val = time.perf_counter() - t0
    print(f"{v}x{v}x{v}: model {t_model:.2f} s; validate_gemm {t_val:.2f} s "
          f"(ratio {t_val / t_model:.2f}; {res.matches} / {res.total} match)")


if __name__ == "__main__":
    main()
