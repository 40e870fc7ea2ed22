"""A 12-run sweep of the default config (``digits-mlp-fp16``, seeds 0..11) on a LocalCluster of
2 worker processes, against the same 12 runs trained one after another in this process; the
target is a ratio <= 0.6. Also reported: the share of the sweep's wall time the client spent
writing the study database (target < 5%), the database size per run, runs per worker-hour, and
a reference without Dask: the same runs split over 2 plain processes (``multiprocessing``,
spawned, no study database), which shows what the cores allow and so what Dask itself costs.

This machine's speed drifts by tens of percent over minutes (other tenants), so the serial
baseline, the sweep and the reference are measured in turn, ``--rounds`` times (default 3), and
each round's ratio is taken against the serial time of its own round; the verdict uses the
median.

Run: ``python benchmarks/bench_sweep.py [--runs 12] [--workers 2] [--rounds 3] [--epochs E]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TARGET_RATIO = 0.6
TARGET_WRITE = 0.05
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _train_share(fields_list: list[dict]) -> float:
    """Train each config into a scratch database in this (fresh) process; the seconds taken."""
    import numba

    from fpsim.training.loop import train
    numba.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for i, fields in enumerate(fields_list):
            train(fields, db=os.path.join(tmp, f"{i}.sqlite"))
    return time.perf_counter() - t0


def _plain_processes(plan, workers: int) -> float:
    """The runs dealt round-robin to ``workers`` spawned processes (BLAS / OpenMP at one
    thread, as in a sweep's workers); wall seconds including their start."""
    saved = {k: os.environ.get(k) for k in _ONE_THREAD}
    os.environ.update({k: "1" for k in _ONE_THREAD})
    try:
        t0 = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_train_share, [[r.fields for r in plan[i::workers]] for i in range(workers)])
        return time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=12)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="default: the config's (30)")
    args = p.parse_args(argv)
    from bench_quantize import machine_line
    from fpsim.training import sweep
    from fpsim.training.loop import train

    base = {"config": "digits-mlp-fp16", **({"epochs": args.epochs} if args.epochs else {})}
    spec = sweep.load_spec({"name": "bench", "base": base,
                            "axes": {"seed": list(range(args.runs))}})
    plan = sweep.expand(spec)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        train(plan[0].fields, db=os.path.join(tmp, "warm.sqlite"))  # compile the kernels once
        for k in range(args.rounds):
            t0 = time.perf_counter()
            for r in plan:
                train(r.fields, db=os.path.join(tmp, f"serial{k}.sqlite"))
            serial = time.perf_counter() - t0
            db = os.path.join(tmp, f"sweep{k}.sqlite")
            t0 = time.perf_counter()
            out = sweep.run_sweep(spec, db, workers=args.workers)
            swept = time.perf_counter() - t0
            assert out["finished"] == args.runs, out
            plain = _plain_processes(plan, args.workers)
            rounds.append(dict(serial=serial, swept=swept, plain=plain,
                               write=out["write_seconds"], size=os.path.getsize(db)))
    for r in rounds:
        r["ratio"], r["share"] = r["swept"] / r["serial"], r["write"] / r["swept"]
        r["plain_ratio"] = r["plain"] / r["serial"]
    ratio = statistics.median(r["ratio"] for r in rounds)
    write = statistics.median(r["share"] for r in rounds)
    print(machine_line(0, 1).split("; n =")[0] + ".")
    print()
    print("| round | serial (s) | sweep (s) | sweep / serial | client writing | "
          "2 plain processes (s) | plain / serial |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(rounds, 1):
        print(f"| {i} | {r['serial']:.1f} | {r['swept']:.1f} | {r['ratio']:.2f} | "
              f"{r['write']:.3f} s, {100 * r['share']:.2f}% | {r['plain']:.1f} | "
              f"{r['plain_ratio']:.2f} |")
    plain = statistics.median(r["plain_ratio"] for r in rounds)
    print()
    print(f"Median sweep / serial: {ratio:.2f} (target <= {TARGET_RATIO}: "
          f"{'met' if ratio <= TARGET_RATIO else 'missed'}); median client writing share: "
          f"{100 * write:.2f}% (target < {100 * TARGET_WRITE:.0f}%: "
          f"{'met' if write < TARGET_WRITE else 'missed'}); median plain processes / serial: "
          f"{plain:.2f}.")
    swept = statistics.median(r["swept"] for r in rounds)
    print(f"Database: {rounds[0]['size'] / args.runs / 1e6:.2f} MB per run; "
          f"{args.runs / (swept * args.workers / 3600):.0f} runs per worker-hour (median sweep).")
    return 0 if ratio <= TARGET_RATIO and write < TARGET_WRITE else 1


if __name__ == "__main__":
    sys.exit(main())
