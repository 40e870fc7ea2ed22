"""Run by test_cudasim.py in a subprocess with NUMBA_ENABLE_CUDASIM=1: the CUDA quantize driver
(fpsim.kernels.cuda) against the CPU result, bit for bit, values and Stats. Prints one line per case
and exits non-zero on the first mismatch."""

import sys

import numpy as np

import fpsim
from fpsim.instrument import Stats
from fpsim.kernels import cuda as kcuda
from fpsim.kernels.histogram import STATS_LEN
from fpsim.kernels.rng import stream_key

rng = np.random.default_rng(0)
n = 400  # the simulator runs every thread in Python: 2000 took 155 s of the suite
x64 = rng.standard_normal(n) * np.exp2(rng.uniform(-40, 40, n))
x64[:8] = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1e-310, 65520.0]
x32 = x64.astype(np.float32)
cases = [("bfloat16", m) for m in range(7)] + [
    ("float8_e4m3fn", 0), ("float8_e4m3fn", 6), ("float8_e8m0fnu", 1), ("e5m10-nosub", 5),
    ("float4_e2m1fn", 3), ("e11m4", 0), ("e11m4", 6)]
for name, mode in cases:
    fmt = fpsim.format(name)
    for x in (x32, x64):
        carrier = "float32" if (x.dtype == np.float32 and fmt.fits_float32) else "float64"
        xc = x.astype(carrier)
        bits_t = np.uint32 if carrier == "float32" else np.int64
        for overflow in (0, 1):
            out = np.empty_like(xc)
            counts = np.zeros((1, 5), np.int64)
            hist = np.zeros((1, STATS_LEN), np.int64)
            P = fmt.params(carrier)
            kcuda.launch_quantize(xc.view(bits_t), out.view(bits_t), P, mode, overflow,
                                  stream_key(4, 0), 62, counts, hist)
            want, st = fpsim.quantize(xc, fmt, mode, overflow, seed=4, stats=True)
            same = np.array_equal(out.view(bits_t), want.view(bits_t))
            same_stats = Stats.from_kernel(xc.size, counts, hist, P) == st
            print(f"{name} mode={mode} overflow={overflow} {carrier}: values {same} stats {same_stats}")
            if not (same and same_stats):
                sys.exit(1)
print("cudasim parity: all cases equal")
