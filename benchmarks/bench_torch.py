"""The PyTorch bridge's costs, as ratios measured in one process:

1. fake-quantizing a 2^24-element CPU float32 tensor through ``fpsim.torch.quantize`` against
   ``fpsim.quantize`` on the same memory as a numpy array (target <= 1.1: the bridge adds no
   copy);
2. one training step (forward, backward, SGD) of a small CNN on digits-sized images (batch 64,
   1x8x8 inputs, two 3x3 convolutions of 8 and 16 channels, a linear head) under
   ``apply_policy(model, "mixed_fp16")`` with Stats recorded, against the same step of the
   un-hooked torch model in float32 (target <= 2); and that hooked step under dynamic and
   under adaptive per-layer loss scaling (``fpsim.torch.LossScaling``; no target).

The steps of the four kinds run in alternating blocks of 20 (each block's mean step
counted, medians reported), so that a machine whose speed drifts slows all of them alike
while each step finds the caches as its own kind's last step left them.

Run: ``python benchmarks/bench_torch.py [--repeat 7] [--steps 200]``
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_quantize import machine_line  # noqa: E402
from bench_train import alternating_medians  # noqa: E402

TARGET_QUANTIZE = 1.1
TARGET_STEP = 2.0


def _cnn(torch):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(16 * 8 * 8, 10))


def _step(torch, model, x, y, record: bool, scaler=None, sites=None):
    """A function running one training step (forward, backward, SGD) of ``model``; with
    ``scaler``, the step goes through ``fpsim.torch.LossScaling(scaler, optimizer,
    sites=sites)``."""
    import fpsim
    import fpsim.torch as ft
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    scaling = None if scaler is None else ft.LossScaling(scaler, opt, sites=sites)

    def step():
        rec = fpsim.Recorder() if record else None
        with fpsim.recording(rec) if record else _null():
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            if scaling is None:
                loss.backward()
                opt.step()
            else:
                scaling.scale(loss).backward()
                scaling.step()
    return step


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--steps", type=int, default=200,
                   help="timed steps of each kind (in alternating blocks of 20)")
    args = p.parse_args(argv)
    import torch

    import fpsim
    import fpsim.torch as ft
    torch.set_num_threads(1)  # (the step is small: threads only add noise)
    t = torch.randn(1 << 24) * 100
    arr = t.numpy()
    q = alternating_medians({"numpy": lambda: fpsim.quantize(arr, "fp16"),
                             "bridge": lambda: ft.quantize(t, "fp16")}, args.repeat, warmup=2)
    numpy_path, bridge = q["numpy"], q["bridge"]
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((64, 1, 8, 8), np.float32))
    y = torch.from_numpy(rng.integers(0, 10, 64))
    steps = {"plain": _step(torch, _cnn(torch), x, y, record=False)}
    model = _cnn(torch)
    ft.apply_policy(model, "mixed_fp16")
    steps["hooked"] = _step(torch, model, x, y, record=True)
    for spec in ("dynamic", "adaptive"):
        model = _cnn(torch)
        sites = ft.apply_policy(model, "mixed_fp16")
        steps[spec] = _step(torch, model, x, y, record=True, scaler=spec, sites=sites)
    # blocks of 20 steps of each kind in turn, medians: a machine whose speed drifts slows all
    # of them alike, and each step finds the caches as its own kind's last step left them
    t = alternating_medians(steps, max(args.steps // 20, 3), warmup=1, block=20)
    plain, hooked = t["plain"], t["hooked"]
    scaled = {spec: t[spec] for spec in ("dynamic", "adaptive")}
    q_ratio, s_ratio = bridge / numpy_path, hooked / plain
    print(machine_line(1 << 24, args.repeat).replace("best of", "median of").replace(
          "threads)", "threads; torch "
          f"{torch.__version__}, 1 thread)"))
    print()
    print("| task | time | ratio | target |")
    print("|---|---|---|---|")
    print(f"| fpsim.quantize, numpy float32, fp16 | {1e3 * numpy_path:.1f} ms | 1 | |")
    print(f"| fpsim.torch.quantize, the same tensor | {1e3 * bridge:.1f} ms | {q_ratio:.3f} | "
          f"<= {TARGET_QUANTIZE}: {'met' if q_ratio <= TARGET_QUANTIZE else 'missed'} |")
    print(f"| CNN training step, torch float32 | {1e3 * plain:.2f} ms | 1 | |")
    print(f"| the same step, mixed_fp16 policy, Stats recorded | {1e3 * hooked:.2f} ms | "
          f"{s_ratio:.2f} | <= {TARGET_STEP}: {'met' if s_ratio <= TARGET_STEP else 'missed'} |")
    for spec, seconds in scaled.items():
        print(f"| the same, with {spec} loss scaling | {1e3 * seconds:.2f} ms | "
              f"{seconds / plain:.2f} | |")
    return 0 if q_ratio <= TARGET_QUANTIZE and s_ratio <= TARGET_STEP else 1


if __name__ == "__main__":
    sys.exit(main())
