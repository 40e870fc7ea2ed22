"""Throughput of the correctly rounded elementwise ops (fpsim.add/mul/fma/div) on float16 operands,
next to numpy's float32 add-and-round-to-float16 (the "compute in float32 and round" that peers
do, which is not exact for fma or directed modes) measured in the same process.

Run: ``python benchmarks/bench_arith.py [--n 16777216] [--repeat 3]``
"""

from __future__ import annotations

import argparse

import numpy as np

import fpsim
from bench_quantize import best_time as best  # same folder: the one timing helper


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1 << 24)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    n = args.n
    rng = np.random.default_rng(0)
    a, b, c = (fpsim.quantize(rng.standard_normal(n), "fp16") for _ in range(3))
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    base = n / best(lambda: (a32 + b32).astype(np.float16), args.repeat)
    print(f"n = {n} float16 operands; M results/s (2 threads)")
    print(f"| op | fpsim M/s | numpy float32 add + cast M/s |")
    print("|---|---|---|")
    for name, fn in [("add", lambda: fpsim.add(a, b, "fp16")), ("mul", lambda: fpsim.mul(a, b, "fp16")),
                     ("fma", lambda: fpsim.fma(a, b, c, "fp16")), ("div", lambda: fpsim.div(a, b, "fp16"))]:
        print(f"| {name} (rne) | {n / best(fn, args.repeat) / 1e6:.0f} | {base / 1e6:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
