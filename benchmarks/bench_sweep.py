"""A 12-run sweep of the default config (``digits-mlp-fp16``, seeds 0..11) on a LocalCluster of
2 worker processes, against the same 12 runs trained one after another in this process; the
target is a ratio <= 0.6. Also reported: the share of the sweep's wall time the client spent
writing the study database (target < 5%), the database size per run, and runs per
worker-hour.

Run: ``python benchmarks/bench_sweep.py [--runs 12] [--workers 2] [--epochs E]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TARGET_RATIO = 0.6
TARGET_WRITE = 0.05


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=12)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--epochs", type=int, default=None, help="default: the config's (30)")
    args = p.parse_args(argv)
    from bench_quantize import machine_line
    from fpsim.training import sweep
    from fpsim.training.loop import train

    base = {"config": "digits-mlp-fp16", **({"epochs": args.epochs} if args.epochs else {})}
    spec = sweep.load_spec({"name": "bench", "base": base,
                            "axes": {"seed": list(range(args.runs))}})
    plan = sweep.expand(spec)
    with tempfile.TemporaryDirectory() as tmp:
        train(plan[0].fields, db=os.path.join(tmp, "warm.sqlite"))  # compile the kernels once
        t0 = time.perf_counter()
        for r in plan:
            train(r.fields, db=os.path.join(tmp, "serial.sqlite"))
        serial = time.perf_counter() - t0
        import numba
        threads = numba.get_num_threads()
        numba.set_num_threads(1)  # the workers' setting, for the decomposition
        t0 = time.perf_counter()
        for r in plan:
            train(r.fields, db=os.path.join(tmp, "serial1.sqlite"))
        serial1 = time.perf_counter() - t0
        numba.set_num_threads(threads)
        db = os.path.join(tmp, "sweep.sqlite")
        t0 = time.perf_counter()
        out = sweep.run_sweep(spec, db, workers=args.workers)
        swept = time.perf_counter() - t0
        size = os.path.getsize(db)
    assert out["finished"] == args.runs, out
    ratio, write = swept / serial, out["write_seconds"] / swept
    per_hour = args.runs / (swept * args.workers / 3600)
    print(machine_line(0, 1).split("; n =")[0] + ".")
    print()
    print("| task | seconds | ratio | target |")
    print("|---|---|---|---|")
    print(f"| {args.runs} runs one after another, one process | {serial:.1f} | 1 | |")
    print(f"| the same, Numba held to 1 thread (a worker's setting) | {serial1:.1f} | "
          f"{serial1 / serial:.2f} | |")
    print(f"| the same {args.runs} as a sweep on {args.workers} LocalCluster workers "
          f"(cluster start included) | {swept:.1f} | {ratio:.2f} | <= {TARGET_RATIO}: "
          f"{'met' if ratio <= TARGET_RATIO else 'missed'} |")
    print(f"| client writing the study database | {out['write_seconds']:.3f} | "
          f"{100 * write:.2f}% of the sweep | < {100 * TARGET_WRITE:.0f}%: "
          f"{'met' if write < TARGET_WRITE else 'missed'} |")
    print()
    print(f"Database: {size / args.runs / 1e6:.2f} MB per run; {per_hour:.0f} runs per "
          f"worker-hour; the sweep against the 1-thread baseline: {swept / serial1:.2f}.")
    return 0 if ratio <= TARGET_RATIO and write < TARGET_WRITE else 1


if __name__ == "__main__":
    sys.exit(main())
