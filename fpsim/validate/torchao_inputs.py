"""The inputs of the torchao comparison (:mod:`fpsim.validate.torchao_mx`).

``python -m fpsim.validate.torchao_inputs IN.npz`` writes float32 arrays ``x_<k>``: normal data
(64 x 256), wide-range data (magnitudes 2^-40 .. 2^40, random signs) and structured 1 x 32
blocks (all-zero, one non-zero, amax a power of two and its float32 neighbours, float32
subnormals, amax 1e-37, 1e-39 and 1e38, Inf, NaN), each alone and all in one tensor.
"""
import sys

import numpy as np
rng = np.random.default_rng(1234)
f32 = np.float32
d = {}
d["x_normal"] = rng.standard_normal((64, 256)).astype(f32)
e = np.clip(rng.normal(0, 40/3, (64, 256)), -40, 40)
d["x_wide"] = (np.exp2(e) * rng.choice([-1.0, 1.0], (64, 256))).astype(f32)
def blk(scale=1.0):
    return (rng.standard_normal(32) * 0.3 * scale).astype(f32)
def with_amax(a, pos=5):
    b = blk(); b = b / np.abs(b).max() * 0.9 * np.float32(a); b[pos] = a; return b.astype(f32)
four = f32(4.0)
cases = {
 "zero": np.zeros(32, f32),
 "single": (lambda b: (b.__setitem__(7, f32(1.3)), b)[1])(np.zeros(32, f32)),
 "pow2": with_amax(four),
 "below_pow2": with_amax(np.nextafter(four, f32(0))),
 "above_pow2": with_amax(np.nextafter(four, f32(10))),
 "subnormal": (rng.uniform(-1, 1, 32) * 1e-39).astype(f32),
 "tiny37": with_amax(f32(1e-37)),
 "tiny39": with_amax(f32(1e-39)),
 "huge": with_amax(f32(1e38)),
 "inf": (lambda b: (b.__setitem__(3, np.inf), b.__setitem__(20, -np.inf), b)[2])(blk()),
 "nan": (lambda b: (b.__setitem__(9, np.nan), b)[1])(blk()),
}
normal_row = blk()
for k, v in cases.items():
    assert v.dtype == f32 and v.shape == (32,)
    d[f"x_{k}"] = v[None, :].copy()
# every case in one tensor (affects the nvfp4 per-tensor scale), plus a plain block
d["x_allcases"] = np.stack(list(cases.values()) + [normal_row])
d["x_allfinite"] = np.stack([v for k, v in cases.items() if k not in ("inf", "nan")] + [normal_row])
np.savez(sys.argv[1] if len(sys.argv) > 1 else "torchao_in.npz", **d)
print({k: v.shape for k, v in d.items()})
