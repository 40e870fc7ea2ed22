#!/usr/bin/env python
"""Dump torchao MX / NVFP4 reference casts (CPU, eager, float32 input).

Usage:
    python -m fpsim.validate.torchao_dump IN.npz OUT.npz

Run it with a Python that has torch (a CPU build is enough) and torchao installed; fpsim's own
environment needs neither (this module imports them only when run).

IN.npz : float32 arrays named x_<k>, 2-D, last axis a multiple of 32.
OUT.npz: for every k and fmt in
    mxfp8_e4m3, mxfp8_e5m2, mxfp6_e3m2, mxfp6_e2m3, mxfp4_e2m1
        (torchao to_mx, ScaleCalculationMode.FLOOR, block 32 along last axis)
    nvfp4        (block 16, two-level: per-tensor scale =
                  per_tensor_amax_to_scale(max(abs(x))) = amax / (448 * 6))
    nvfp4_nopts  (block 16, single-level: no per-tensor scale)
  deq_<fmt>_<k>    float32, shape of x: dequantized values (torchao dequantize)
  elem_<fmt>_<k>   uint8, shape of x: element code, one per element, unpacked
                   (fp8: raw byte; fp6: 6-bit code in bits 0-5, sign = bit 5;
                    fp4: 4-bit code in bits 0-3, sign = bit 3)
  scale_<fmt>_<k>  uint8, shape (M, K/block): MX -> E8M0 biased exponent;
                   nvfp4 -> float8_e4m3fn bit pattern of the block scale
  tscale_nvfp4_<k> float32, shape (): per-tensor scale (nvfp4 only)
  info_versions    unicode array: torch / torchao versions
A format that fails on some input is skipped for that input, with the reason
printed to stderr.
"""

import sys
import traceback
import warnings

import numpy as np

warnings.filterwarnings("ignore")

import logging  # noqa: E402

logging.disable(logging.WARNING)

import torch  # noqa: E402
import torchao  # noqa: E402
from torchao.prototype.mx_formats.config import ScaleCalculationMode  # noqa: E402
from torchao.prototype.mx_formats.constants import (  # noqa: E402
    DTYPE_FP6_E2M3,
    DTYPE_FP6_E3M2,
)
from torchao.prototype.mx_formats.kernels import unpack_uint4  # noqa: E402
from torchao.prototype.mx_formats.mx_tensor import MXTensor  # noqa: E402
from torchao.prototype.mx_formats.nvfp4_tensor import (  # noqa: E402
    NVFP4Tensor,
    per_tensor_amax_to_scale,
)

MX_FORMATS = {
    "mxfp8_e4m3": torch.float8_e4m3fn,
    "mxfp8_e5m2": torch.float8_e5m2,
    "mxfp6_e3m2": DTYPE_FP6_E3M2,
    "mxfp6_e2m3": DTYPE_FP6_E2M3,
    "mxfp4_e2m1": torch.float4_e2m1fn_x2,
}
MX_BLOCK = 32
NV_BLOCK = 16


def _u8(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().view(torch.uint8).numpy().copy()


def dump_mx(x: torch.Tensor, elem_dtype):
    mx = MXTensor.to_mx(
        x, elem_dtype, block_size=MX_BLOCK, scaling_mode=ScaleCalculationMode.FLOOR
    )
    deq = mx.dequantize(torch.float32)
    if elem_dtype == torch.float4_e2m1fn_x2:
        elem = unpack_uint4(mx.qdata.contiguous().view(torch.uint8))
    else:
        # fp8: raw bytes; fp6: already one uint8 per element (code in bits 0-5)
        elem = mx.qdata.contiguous().view(torch.uint8)
    scale = mx.scale.contiguous().view(torch.uint8)
    M, K = x.shape
    assert tuple(elem.shape) == (M, K), elem.shape
    assert tuple(scale.shape) == (M, K // MX_BLOCK), scale.shape
    return deq.numpy().astype(np.float32), _u8(elem), _u8(scale)


def dump_nvfp4(x: torch.Tensor, with_pts: bool):
    pts = None
    if with_pts:
        # same as torchao inference_workflow.py (use_dynamic_per_tensor_scale)
        tensor_amax = torch.max(torch.abs(x))
        pts = per_tensor_amax_to_scale(tensor_amax)
    nv = NVFP4Tensor.to_nvfp4(x, block_size=NV_BLOCK, per_tensor_scale=pts)
    deq = nv.dequantize(torch.float32)
    elem = unpack_uint4(nv.qdata.contiguous().view(torch.uint8))
    scale = nv.scale.contiguous().view(torch.uint8)
    M, K = x.shape
    assert tuple(elem.shape) == (M, K), elem.shape
    assert tuple(scale.shape) == (M, K // NV_BLOCK), scale.shape
    ts = None if pts is None else np.asarray(pts.numpy(), dtype=np.float32)
    return deq.numpy().astype(np.float32), _u8(elem), _u8(scale), ts


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    inp = np.load(argv[1])
    out = {
        "info_versions": np.array(
            [f"torch={torch.__version__}", f"torchao={torchao.__version__}"]
        )
    }
    keys = [n for n in inp.files if n.startswith("x_")]
    if not keys:
        print("no arrays named x_<k> in input", file=sys.stderr)
    nfail = 0
    for name in keys:
        k = name[2:]
        a = inp[name]
        if a.dtype != np.float32:
            print(f"{name}: dtype {a.dtype}, casting to float32", file=sys.stderr)
        a = np.ascontiguousarray(a, dtype=np.float32)
        if a.ndim != 2 or a.shape[-1] % MX_BLOCK != 0:
            print(f"{name}: shape {a.shape} not 2-D with last axis % 32 == 0; skipped",
                  file=sys.stderr)
            nfail += 1
            continue
        x = torch.from_numpy(a.copy())
        casts = [(fmt, lambda x, dt=dt: (*dump_mx(x, dt), None)) for fmt, dt in MX_FORMATS.items()]
        casts += [(fmt, lambda x, p=pts: dump_nvfp4(x, p))
                  for fmt, pts in (("nvfp4", True), ("nvfp4_nopts", False))]
        for fmt, cast in casts:
            try:
                deq, elem, scale, ts = cast(x)
            except Exception as e:  # noqa: BLE001
                nfail += 1
                print(f"{fmt} on {name} failed: {e!r}", file=sys.stderr)
                traceback.print_exc()
                continue
            out[f"deq_{fmt}_{k}"] = deq
            out[f"elem_{fmt}_{k}"] = elem
            out[f"scale_{fmt}_{k}"] = scale
            if ts is not None:
                out[f"tscale_{fmt}_{k}"] = ts
    np.savez(argv[2], **out)
    print(f"wrote {argv[2]}: {len(keys)} inputs, {len(out) - 1} arrays, "
          f"{nfail} failures")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
