"""GPU throughput of fake quantization (float32 -> format -> float32, RNE) against the device's
copy bandwidth measured in the same run (needs a CUDA GPU; run by gpu_check.sh).

Run: ``PYTHONPATH=. python benchmarks/bench_gpu.py [--log2n 28]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log2n", type=int, default=28)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    from numba import cuda

    import fpsim
    from fpsim.numerics import backend
    backend.cuda_module()
    n = 1 << args.log2n
    x = cuda.to_device(np.random.default_rng(0).standard_normal(n).astype(np.float32))
    y = cuda.device_array(n, np.float32)

    def best(fn):
        """Best of ``args.repeat`` timed calls, each waited for on the device."""
        fn()
        cuda.synchronize()
        t = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            cuda.synchronize()
            t = min(t, time.perf_counter() - t0)
        return t
    t_copy = best(lambda: y.copy_to_device(x))
    gbs = 2 * 4 * n / t_copy / 1e9
    print(f"n = 2^{args.log2n} float32; device copy {gbs:.0f} GB/s ({n / t_copy / 1e9:.1f} G elem/s)")
    print("| format | G elem/s | GB/s (read + write) | / copy [>= 0.8] | with Stats |")
    print("|---|---|---|---|---|")
    for name in ("float16", "bfloat16", "float8_e4m3fn"):
        t = best(lambda: fpsim.quantize(x, name))
        ts = best(lambda: fpsim.quantize(x, name, stats=True))
        print(f"| {name} | {n / t / 1e9:.1f} | {2 * 4 * n / t / 1e9:.0f} | "
              f"{t_copy / t:.2f} | {n / ts / 1e9:.1f} G elem/s |", flush=True)
    try:
        import torch
        if not torch.cuda.is_available():
            raise RuntimeError("torch sees no GPU")
    except Exception as e:  # noqa: BLE001 - the torch anchor is optional
        print(f"torch comparison not run ({type(e).__name__}: {e})")
        return 0
    import fpsim.torch as ft
    xt = torch.as_tensor(x, device="cuda")  # (the same memory)

    print("\n| float32 -> format -> float32 on a torch CUDA tensor | G elem/s | / copy |")
    print("|---|---|---|")
    rows = [("torch clone (a copy)", lambda: xt.clone()),
            ("torch cast round trip, float16", lambda: xt.half().float()),
            ("torch cast round trip, bfloat16", lambda: xt.bfloat16().float()),
            ("torch cast round trip, float8_e4m3fn", lambda: xt.to(torch.float8_e4m3fn).float())]
    rows += [(f"fpsim.torch.quantize, {name}", lambda name=name: ft.quantize(xt, name))
             for name in ("float16", "bfloat16", "float8_e4m3fn")]
    for label, fn in rows:
        t = best(fn)  # (numba's synchronize waits for the whole device, torch's work too)
        print(f"| {label} | {n / t / 1e9:.1f} | {t_copy / t:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
