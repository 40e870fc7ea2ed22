"""Cost of one training step under precision policies, as ratios measured in one process.

For the MLP (batch 128) and the LeNet CNN (batch 64) on digits: the ``fp32`` policy, against a
plain numpy implementation of the same network and update (fpsim.reference.nets); and
``mixed_fp16`` with and without instrumentation (per-site Stats), against ``fp32``. A step is
forward, backward, gradient check and SGD update (no run-record writes).

Run: ``python benchmarks/bench_train.py [--steps 200] [--write docs/performance.md]``
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

import numpy as np

from fpsim.training import determinism, instrument
from fpsim.reference import nets as reference_nets
from fpsim.training.loop import Session, TrainConfig
from bench_quantize import replace_section


def _session(model, policy, batch):
    return Session(TrainConfig(model=model, policy=policy, batch_size=batch).resolved())


def step_time(model, policy, batch, instrumented, steps) -> float:
    """Median seconds of one engine training step."""
    s = _session(model, policy, batch)
    rec = instrument.Recorder(keep=False) if instrumented else None
    idx = np.arange(batch)
    times = []
    # as in fpsim train: BLAS pinned to one thread (fpsim.training.determinism)
    with (instrument.recording(rec) if rec else contextlib.nullcontext()), \
            determinism.pinned_blas():
        for i in range(steps + 5):
            t0 = time.perf_counter()
            s.train_step(idx, rec)
            times.append(time.perf_counter() - t0)
    return float(np.median(times[5:]))


def numpy_step_time(model, batch, steps) -> float:
    """Median seconds of one step of the hand-written numpy network (same init and data)."""
    s = _session(model, "fp32", batch)
    params = {k: p.data.copy() for k, p in s.model.named_parameters()}
    fwd_bwd = reference_nets.mlp if model == "mlp" else reference_nets.lenet
    x, y = s.data.x_train[:batch], s.data.y_train[:batch]
    bufs, times = {}, []
    for i in range(steps + 5):
        t0 = time.perf_counter()
        loss, grads = fwd_bwd(params, x, y)
        all(np.isfinite(g).all() for g in grads.values())
        reference_nets.sgd_momentum(params, grads, bufs, 0.05, 0.9)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[5:]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--write", default=None)
    args = parser.parse_args(argv)
    rows = []
    for model, batch in (("mlp", 128), ("cnn", 64)):
        t_np = numpy_step_time(model, batch, args.steps)
        t32 = step_time(model, "fp32", batch, True, args.steps)
        t16 = step_time(model, "mixed_fp16", batch, True, args.steps)
        t16n = step_time(model, "mixed_fp16", batch, False, args.steps)
        rows.append((model, batch, t_np, t32, t16, t16n))
    lines = ["| model (batch) | numpy step | fp32 step | fp32 / numpy [≤ 1.5] | mixed_fp16 + stats | "
             "/ fp32 [≤ 1.5] | mixed_fp16, no stats | / fp32 [≤ 1.25] |",
             "|---|---|---|---|---|---|---|---|"]
    for model, batch, t_np, t32, t16, t16n in rows:
        lines.append(f"| {model} ({batch}) | {t_np * 1e3:.3f} ms | {t32 * 1e3:.3f} ms | "
                     f"{t32 / t_np:.2f} | {t16 * 1e3:.3f} ms | {t16 / t32:.2f} | "
                     f"{t16n * 1e3:.3f} ms | {t16n / t32:.2f} |")
    body = "\n".join(lines) + (
        "\n\nMedian of the steps' wall times (forward, backward, gradient check, SGD update; no "
        "run-record writes). fp32 / numpy compares the engine with the hand-written network of "
        "fpsim/reference/nets.py; the mixed_fp16 columns add the policy's cast sites (fp16 "
        "rounding of the input, every non-exact layer output and every weight forward, and of "
        "their gradients backward), with and without per-site Stats.")
    print(body)
    if args.write:
        replace_section(args.write, "train", "Training step", body,
                        "cd benchmarks && python bench_train.py --write ../docs/performance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
