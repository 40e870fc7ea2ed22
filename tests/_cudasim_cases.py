"""The CUDA-simulator parity cases, as plain data: test_cudasim.py parametrizes over
:func:`case_ids` at collection time (without importing numba), and _cudasim_check.py, run once
in a subprocess with NUMBA_ENABLE_CUDASIM=1, runs every case and writes each one's result.

One case per driver family and mode, so that one mismatch fails one test and hides no other.
"""

from __future__ import annotations

MODES = ("rne", "rna", "rtz", "rup", "rdn", "rto", "sr")

#: Formats of the driver-level quantize cases, by mode index: bfloat16 for every mode, plus the
#: format classes whose logic a mode exercises (fn and fnu specials, no subnormals, 4-bit,
#: a 4-bit mantissa with float64's exponent range, i.e. the float64 carrier).
QUANTIZE_FORMATS = {
    0: ("bfloat16", "float8_e4m3fn", "e11m4"),
    1: ("bfloat16", "float8_e8m0fnu"),
    2: ("bfloat16",),
    3: ("bfloat16", "float4_e2m1fn"),
    4: ("bfloat16",),
    5: ("bfloat16", "e5m10-nosub"),
    6: ("bfloat16", "float8_e4m3fn", "e11m4"),
}

#: Elementwise ops and the operands each takes.
OPS = {"add": "ab", "sub": "ab", "mul": "ab", "div": "ab", "sqrt": "a", "fma": "abc"}

#: Accumulation-model families of the device matmul: the model kernel with its scratch rows,
#: every order, Kahan, exact sums, rounded products, stochastic rounding.
MATMUL = {
    "preset-fp16-accumulate": dict(preset="fp16 accumulate"),
    "exact-accumulation": dict(fmt="float16", accum=None),
    "pairwise-sr": dict(fmt="float16", accum="float16", order="pairwise", rounding="sr"),
    "kahan-rtz": dict(fmt="float16", accum="float16", compensated=True, rounding="rtz"),
    "blocked-product-rup": dict(fmt="float16", accum="bfloat16", product="float8_e5m2",
                                order="blocked", block=4, rounding="rup"),
}


#: Tensor-core presets of the device GEMM: truncation with the carry bit (fp16), the 13-bit FP8
#: accumulator, the late addend (B200 FP8), round to nearest into binary16.
TENSOR_CORE = ("H100-fp16", "H100-e4m3", "B200-e5m2", "A100-fp16-fp16out", "A100-tf32")


def case_ids() -> list[str]:
    """Every case id, in run order."""
    ids = [f"quantize-driver-{m}-{'stats' if s else 'nostats'}" for m in MODES for s in (True, False)]
    ids += [f"quantize-api-float16-{m}" for m in ("rne", "sr")]
    ids += [f"encode-api-e5m2-{m}" for m in MODES]
    ids += ["decode-api-bfloat16"]
    ids += [f"elementwise-{op}-{m}" for op in OPS for m in MODES]
    ids += ["elementwise-nonvalue-refused"]
    ids += [f"matmul-{name}" for name in MATMUL]
    ids += [f"tensorcore-{name}" for name in TENSOR_CORE]
    ids += ["hw-compare-clean", "hw-compare-corrupted"]
    return ids


#: Formats of the PyTorch bridge's tests (tests/test_torch.py) and of its device cases.
TORCH_FORMATS = ("fp16", "bfloat16", "e4m3", "e5m2", "e3m2", "e2m1", "e5m10b20", "int8", "q3.4",
                 "mxfp8_e4m3")


def torch_case_ids() -> list[str]:
    """The PyTorch bridge on CUDA tensors against the numpy path: run only on a real GPU
    (``_cudasim_check.py --device``; the simulator has no CUDA tensors), so not in
    :func:`case_ids`."""
    ids = [f"torch-quantize-{f}" for f in TORCH_FORMATS]
    ids += [f"torch-arith-{op}" for op in OPS]
    return ids + ["torch-codes-stats", "torch-cast-backward"]

