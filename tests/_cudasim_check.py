"""Run by test_cudasim.py in a subprocess with NUMBA_ENABLE_CUDASIM=1: every CUDA driver family
against the CPU, bit for bit (values, Stats, codes, flags), through the public API with device
arrays. Prints one line per case and exits non-zero on the first mismatch.

The simulator runs every thread as Python, so the inputs are small: the kernels' logic is the
CPU's scalar core either way; what this checks is the drivers (indexing, counters of stochastic
rounding, per-block statistics, flags, scratch rows, the dispatch and conversions)."""

import sys
import time

import numpy as np
from numba import cuda

import fpsim
from fpsim.numerics import backend
from fpsim.numerics.stats import Stats
from fpsim.kernels import cuda as kcuda
from fpsim.kernels.histogram import STATS_LEN
from fpsim.kernels.rng import stream_key

MODES = ["rne", "rna", "rtz", "rup", "rdn", "rto", "sr"]
rng = np.random.default_rng(0)
n = 400
x64 = rng.standard_normal(n) * np.exp2(rng.uniform(-40, 40, n))
x64[:8] = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, 1e-310, 65520.0]
x32 = x64.astype(np.float32)
t0 = time.time()


def check(label, ok):
    print(f"{label}: {'equal' if ok else 'MISMATCH'}", flush=True)
    if not ok:
        sys.exit(1)


def bits(a):
    a = np.asarray(a)
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


assert backend.is_device_array(cuda.to_device(x32)) and not backend.is_device_array(x32)

# 1. The quantize driver directly: formats x modes x carriers x policies, values and Stats.
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
            check(f"quantize driver {name} mode={mode} overflow={overflow} {carrier}",
                  same and same_stats)

# 2. The public API with device arrays: quantize (+Stats), encode, decode.
d32 = cuda.to_device(x32)
for mode in ("rne", "sr"):
    y, st = fpsim.quantize(d32, "float16", mode, seed=9, stats=True)
    w, wst = fpsim.quantize(x32, "float16", mode, seed=9, stats=True)
    check(f"fpsim.quantize(device) float16 {mode}",
          np.array_equal(bits(y.copy_to_host()), bits(w)) and st == wst)
    c = fpsim.encode(d32, "float8_e5m2", mode, seed=9)
    check(f"fpsim.encode(device) e5m2 {mode}",
          np.array_equal(c.copy_to_host(), fpsim.encode(x32, "float8_e5m2", mode, seed=9)))
codes = np.ascontiguousarray(np.arange(1 << 16, dtype=np.uint16)[::7])
v = fpsim.decode(cuda.to_device(codes), "bfloat16")
check("fpsim.decode(device) bfloat16", np.array_equal(bits(v.copy_to_host()),
                                                      bits(fpsim.decode(codes, "bfloat16"))))

# 3. Elementwise ops: every op x every mode, values and IEEE flags.
m = 96
ops = {k: fpsim.quantize(rng.standard_normal(m) * np.exp2(rng.integers(-16, 16, m)), "float16")
       for k in "abc"}
ops["a"][:6] = [0.0, -0.0, np.inf, np.nan, 65504.0, 2.0 ** -24]
ops["b"][:6] = [-0.0, 0.0, -np.inf, 1.0, 65504.0, -(2.0 ** -24)]
dev = {k: cuda.to_device(v) for k, v in ops.items()}
for op, args in (("add", "ab"), ("sub", "ab"), ("mul", "ab"), ("div", "ab"), ("sqrt", "a"),
                 ("fma", "abc")):
    for mode in MODES:
        got, gf = getattr(fpsim, op)(*[dev[k] for k in args], "float16", mode, flags=True, seed=5)
        want, wf = getattr(fpsim, op)(*[ops[k] for k in args], "float16", mode, flags=True, seed=5)
        check(f"fpsim.{op}(device) float16 {mode}",
              np.array_equal(bits(got.copy_to_host()), bits(want))
              and np.array_equal(gf.copy_to_host(), wf))
try:
    fpsim.add(cuda.to_device(np.array([0.1])), cuda.to_device(np.array([1.0])), "float16")
    check("non-value operand refused", False)
except ValueError as e:
    check("non-value operand refused", "index (0,)" in str(e))

# 4. matmul: the model kernel with its scratch rows, every order, Kahan, exact sums, SR.
A = fpsim.quantize(rng.standard_normal((4, 9)), "float16")
B = fpsim.quantize(rng.standard_normal((9, 3)), "float16")
for kw in (dict(preset="fp16 accumulate"), dict(fmt="float16", accum=None),
           dict(fmt="float16", accum="float16", order="pairwise", rounding="sr"),
           dict(fmt="float16", accum="float16", compensated=True, rounding="rtz"),
           dict(fmt="float16", accum="bfloat16", product="float8_e5m2", order="blocked", block=4,
                rounding="rup")):
    got = fpsim.matmul(cuda.to_device(A), cuda.to_device(B), **kw)
    want = fpsim.matmul(A, B, fast=False, **kw)
    check(f"fpsim.matmul(device) {kw}", np.array_equal(bits(got.copy_to_host()), bits(want)))


# 5. The hardware-validation compare kernels (fpsim validate hardware), fed with "hardware"
#    results computed by numpy's float16 arithmetic (IEEE, round to nearest even): no mismatch;
#    one corrupted result is found with its index.
from fpsim.kernels import cuda_hw

f16 = fpsim.format("float16")
P, W = f16.params("float64"), fpsim.Format(11, 10, specials="ieee").params("float64")
k0, nn = 0x3C00_3A00, 512  # pairs around 1.0
kk = np.arange(k0, k0 + nn, dtype=np.int64)
a = (kk >> 16).astype(np.uint16).view(np.float16)
b = (kk & 0xFFFF).astype(np.uint16).view(np.float16)
with np.errstate(all="ignore"):
    hw_codes = (a * b).view(np.uint16).copy()
for corrupt in (False, True):
    codes = hw_codes.copy()
    if corrupt:
        codes[77] ^= 1
    mism = np.zeros(1, np.int64)
    first = np.full(cuda_hw.KEEP, -1, np.int64)
    cuda_hw.compare_op[cuda_hw.blocks(nn), cuda_hw.THREADS](2, k0, nn, 0, codes, P, W, 0x7C00,
                                                          0x3FF, mism, first)
    want = (1, k0 + 77) if corrupt else (0, -1)
    check(f"hardware compare kernel, float16 mul, {'one corrupted result' if corrupt else 'numpy results'}",
          (int(mism[0]), int(first[0])) == want)

print(f"cudasim parity: all cases equal ({time.time() - t0:.0f} s)")
