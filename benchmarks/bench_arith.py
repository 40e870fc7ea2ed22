"""Throughput of the correctly rounded elementwise ops (fpsim.add/mul/fma/div) on float16 operands,
next to numpy's float32 add-and-round-to-float16 (the "compute in float32 and round" that peers
do, which is not exact for fma or directed modes) measured in the same process.

Run: ``python benchmarks/bench_arith.py [--n 16777216] [--repeat 3] [--write docs/performance.md]``
"""

from __future__ import annotations

import argparse
import sys

import numba
import numpy as np

import fpsim
from bench_quantize import best_time as best, replace_section  # same folder: one helper each


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1 << 24)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", default=None, help="replace the arithmetic section of this file")
    args = parser.parse_args(argv)
    n = args.n
    rng = np.random.default_rng(0)
    a, b, c = (fpsim.quantize(rng.standard_normal(n), "fp16") for _ in range(3))
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    base = n / best(lambda: (a32 + b32).astype(np.float16), args.repeat)
    rows = [f"n = {n} float16 operands, best of {args.repeat}, {numba.get_num_threads()} threads; "
            f"numpy float32 add + cast to float16 in the same run: {base / 1e6:.0f} M/s.", "",
            "| op | mode | fpsim M results/s |", "|---|---|---|"]
    cases = [("add", "rne", lambda: fpsim.add(a, b, "fp16")),
             ("mul", "rne", lambda: fpsim.mul(a, b, "fp16")),
             ("fma", "rne", lambda: fpsim.fma(a, b, c, "fp16")),
             ("div", "rne", lambda: fpsim.div(a, b, "fp16")),
             ("sqrt", "rne", lambda: fpsim.sqrt(np.abs(a), "fp16")),
             ("add", "sr", lambda: fpsim.add(a, b, "fp16", "sr")),
             ("add", "rtz (run-time mode driver)", lambda: fpsim.add(a, b, "fp16", "rtz")),
             ("add", "rne, flags=True, stats=True",
              lambda: fpsim.add(a, b, "fp16", flags=True, stats=True))]
    for name, mode, fn in cases:
        rows.append(f"| {name} | {mode} | {n / best(fn, args.repeat) / 1e6:.0f} |")
    text = "\n".join(rows)
    print(text)
    if args.write:
        replace_section(args.write, "bench_arith", "Elementwise arithmetic", text,
                        " ".join(["python benchmarks/bench_arith.py"] + (argv or sys.argv[1:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
