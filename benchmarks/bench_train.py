"""Cost of one training step under precision policies, as ratios measured in one process.

For every zoo model on digits (MLP at batch 128; LeNet CNN, ResNet and transformer at batch
64): the ``fp32`` policy, against a plain numpy implementation of the same network and update
where one exists (fpsim.reference.nets: MLP and LeNet); and ``mixed_fp16`` with and without
instrumentation (per-site Stats), against ``fp32``. A step is forward, backward, gradient
check and SGD / Adam update (no run-record writes). The sessions' steps alternate (one step of
each in turn), so that a shared, noisy machine slows all of them alike; medians are reported.

Run: ``python benchmarks/bench_train.py [--steps 200] [--models mlp,cnn] [--clock cpu]
[--write docs/performance.md]``
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

#: (model, batch size): the zoo at its default batch sizes.
MODELS = (("mlp", 128), ("cnn", 64), ("resnet", 64), ("transformer", 64))
#: Models with a hand-written numpy twin in fpsim.reference.nets.
NUMPY_NETS = {"mlp": reference_nets.mlp, "cnn": reference_nets.lenet}


def _session(model, policy, batch):
    return Session(TrainConfig(model=model, policy=policy, batch_size=batch).resolved())


def engine_step(model, policy, batch, instrumented):
    """A function running one engine training step (and its name for the table), and the
    recorder of its Stats (None without instrumentation)."""
    s = _session(model, policy, batch)
    rec = instrument.Recorder(keep=False) if instrumented else None
    idx = np.arange(batch)

    def step():
        with instrument.recording(rec) if rec else contextlib.nullcontext():
            s.train_step(idx, rec)
    return step, rec


def numpy_step(model, batch):
    """A function running one step of the hand-written numpy network (same init and data)."""
    s = _session(model, "fp32", batch)
    params = {k: p.data.copy() for k, p in s.model.named_parameters()}
    x, y = s.data.x_train[:batch], s.data.y_train[:batch]
    bufs = {}

    def step():
        loss, grads = NUMPY_NETS[model](params, x, y)
        all(np.isfinite(g).all() for g in grads.values())
        reference_nets.sgd_momentum(params, grads, bufs, 0.05, 0.9)
    return step


#: Clocks a step can be timed with: wall time, or the CPU time of the process (every thread;
#: on a machine shared with other jobs it leaves out the time the process waits for a core).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def alternating_medians(steps: dict, n: int, clock=time.perf_counter, warmup: int = 5,
                        block: int = 1) -> dict:
    """Median seconds of each named step function, running them in turn ``n + warmup`` times
    (the first ``warmup`` rounds are dropped: compilation, caches). With ``block`` > 1 each
    turn runs ``block`` calls back to back and counts their mean: a step then finds the caches
    as its own previous step left them, as in a training loop, not as another model's did."""
    times = {name: [] for name in steps}
    # as in fpsim train: BLAS pinned to one thread (fpsim.training.determinism)
    with determinism.pinned_blas():
        for _ in range(n + warmup):
            for name, fn in steps.items():
                t0 = clock()
                for _ in range(block):
                    fn()
                times[name].append((clock() - t0) / block)
    return {name: float(np.median(t[warmup:])) for name, t in times.items()}


def measure(model, batch, n, clock=time.perf_counter, block: int = 1) -> dict:
    """The step medians of one model: numpy (if it has a twin), fp32, mixed_fp16 with and
    without Stats; and the number of roundings a mixed_fp16 step reports."""
    steps = {"numpy": numpy_step(model, batch)} if model in NUMPY_NETS else {}
    steps["fp32"], _ = engine_step(model, "fp32", batch, True)
    steps["fp16"], rec = engine_step(model, "mixed_fp16", batch, True)
    steps["fp16n"], _ = engine_step(model, "mixed_fp16", batch, False)
    t = alternating_medians(steps, max(n // block, 3), clock, warmup=max(5 // block, 1),
                            block=block)
    probe = instrument.Recorder(keep=False)
    with instrument.recording(probe):
        steps["fp16"]()  # (its own recorder closes the step; the probe counts the same emits)
    t["casts"] = len(probe.peek().sites)
    return t


def table(rows, clock: str) -> str:
    """The markdown table and the prose under it."""
    lines = ["| model (batch) | numpy step | fp32 step | fp32 / numpy [≤ 1.5] | casts | "
             "mixed_fp16 + stats | / fp32 [≤ 1.5] | mixed_fp16, no stats | / fp32 [≤ 1.25] | "
             "per cast, stats / none |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for model, batch, t in rows:
        numpy = (f"{t['numpy'] * 1e3:.3f} ms", f"{t['fp32'] / t['numpy']:.2f}") \
            if "numpy" in t else ("—", "—")
        per_cast = [(t[k] - t["fp32"]) / t["casts"] * 1e6 for k in ("fp16", "fp16n")]
        lines.append(
            f"| {model} ({batch}) | {numpy[0]} | {t['fp32'] * 1e3:.3f} ms | {numpy[1]} | "
            f"{t['casts']} | {t['fp16'] * 1e3:.3f} ms | {t['fp16'] / t['fp32']:.2f} | "
            f"{t['fp16n'] * 1e3:.3f} ms | {t['fp16n'] / t['fp32']:.2f} | "
            f"{per_cast[0]:.1f} / {per_cast[1]:.1f} us |")
    return "\n".join(lines) + (
        f"\n\nMedian of the steps' {'wall' if clock == 'wall' else 'process CPU'} times (forward, backward, gradient check, optimizer "
        "update; no run-record writes), the sessions' steps alternating in one process. "
        "fp32 / numpy compares the engine with the hand-written network of "
        "fpsim/reference/nets.py (MLP and LeNet only); the mixed_fp16 columns add the policy's "
        "cast sites (fp16 rounding of the input, every non-exact layer output and every "
        "parameter forward, and of their gradients backward), with and without per-site "
        "Stats. casts: the (site, role, direction) roundings a step reports; per cast: the "
        "step's extra time over fp32 divided by them.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--models", default=",".join(m for m, _ in MODELS),
                        help="comma-separated zoo models (default: all four)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time, or process CPU time (a machine shared with other jobs)")
    parser.add_argument("--block", type=int, default=1,
                        help="steps of one kind run back to back in each turn (1: alternate "
                             "single steps)")
    parser.add_argument("--write", default=None)
    args = parser.parse_args(argv)
    chosen = args.models.split(",")
    unknown = set(chosen) - {m for m, _ in MODELS}
    if unknown:
        parser.error(f"unknown model(s) {sorted(unknown)}; choose from "
                     + ", ".join(m for m, _ in MODELS))
    rows = [(model, batch, measure(model, batch, args.steps, CLOCKS[args.clock], args.block))
            for model, batch in MODELS if model in chosen]
    body = table(rows, args.clock)
    print(body)
    if args.write:
        options = [f"--{k} {v}" for k, v in vars(args).items()
                   if k != "write" and v != parser.get_default(k)]
        replace_section(args.write, "train", "Training step", body,
                        " ".join(["cd benchmarks && python bench_train.py", *options,
                                  "--write ../docs/performance.md"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
