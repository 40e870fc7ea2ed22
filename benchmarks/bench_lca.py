"""Cost of loss-change allocation on the digits MLP (one epoch, 12 steps, trained with
``lca=True``), against the cost of the full training-set gradients the method needs: the
allocation's wall time over (its gradient evaluations x the time of one full-set gradient
measured alone in the same process), and over the method's minimum of 2 gradients per step at
n = 2; the target is a ratio <= 3. It also times the training with and without saving the
parameters.

Run: ``python benchmarks/bench_lca.py [--repeat 3] [--threads 2]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TARGET_RATIO = 3.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import numba
    from threadpoolctl import threadpool_limits

    from bench_quantize import machine_line
    from fpsim.training import determinism, lca
    from fpsim.training.loop import run_model, train
    from fpsim.training.records import RunDB

    numba.set_num_threads(args.threads)
    fields = dict(model="mlp", dataset="digits", epochs=1, instrument=False, hist_every=0)
    with threadpool_limits(args.threads), tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "runs.sqlite")
        train_plain, train_lca, alloc, grad = [], [], [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            train(fields, db=db)
            train_plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            s = train(dict(fields, lca=True), db=db)
            train_lca.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            res = lca.allocate(db, s["run_id"])
            alloc.append(time.perf_counter() - t0)
        _, data, model = run_model(db, s["run_id"])
        land = lca.Landscape(model, data.x_train, data.y_train)
        with RunDB(db) as r:
            theta = r.load_params(s["run_id"], 6).astype(np.float64)
        with determinism.pinned_blas():
            for _ in range(5 * args.repeat):
                t0 = time.perf_counter()
                land(theta)
                grad.append(time.perf_counter() - t0)
    g, a = float(np.median(grad)), min(alloc)
    steps, evals = len(res.steps), res.evaluations
    ratio_evals, ratio_min = a / (evals * g), a / (2 * steps * g)
    print(machine_line(len(data.x_train), args.repeat))
    print()
    print("| task | seconds | ratio | target |")
    print("|---|---|---|---|")
    print(f"| one full-set gradient ({len(data.x_train)} examples, median of "
          f"{len(grad)}) | {g:.4f} | 1 | |")
    print(f"| LCA of {steps} steps, adaptive Simpson ({evals} gradients, mean "
          f"{res.splits.mean():.2f} intervals) | {a:.3f} | {ratio_evals:.2f} x its gradients; "
          f"{ratio_min:.2f} x 2 per step | <= {TARGET_RATIO:.0f}: "
          f"{'met' if ratio_min <= TARGET_RATIO else 'missed'} |")
    print(f"| train 1 epoch, no saving | {min(train_plain):.3f} | 1 | |")
    print(f"| train 1 epoch, lca=True | {min(train_lca):.3f} | "
          f"{min(train_lca) / min(train_plain):.2f} | |")
    return 0 if ratio_min <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
