"""Tensor-core GEMM models: the parametric block-FMA model of NVIDIA tensor cores as data.

A :class:`TensorCore` holds the parameters of one GPU's block FMA for one input and output
format (group size, extra alignment bits, the carry-bit rule, final rounding, result width,
whether the addend joins the alignment); :data:`PRESETS` names one per GPU x input format
(``"H100-fp16"``, ``"B200-e4m3-fp16out"``, ...). :func:`tc_matmul` evaluates a whole GEMM by
chaining blocks along K (:mod:`fpsim.kernels.tensor_core` is the jitted model,
:mod:`fpsim.reference.tensor_core` an independent Fraction implementation of the same model).
``docs/tensor_cores.md`` describes the model, every parameter's source and what was measured.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from fpsim.numerics.arith import first_non_value
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format

#: The input formats of the presets, by their short name.
INPUT_FORMATS = {"fp16": "float16", "bf16": "bfloat16", "tf32": "tfloat32",
                 "e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2"}
#: Output formats: binary32, or binary16 (the ``-fp16out`` presets).
OUTPUT_FORMATS = {"fp32": "float32", "fp16": "float16"}
GPUS = ("V100", "A100", "H100", "H200", "B200")
ROUNDINGS = ("rtz", "rne")
#: Fraction bits of the alignment window's base: the products' and binary32's 23.
WINDOW_BASE = 23


@dataclasses.dataclass(frozen=True)
class TensorCore:
    """One tensor core's block-FMA model: ``d = c + sum_{k<group} a_k b_k`` per hardware
    operation, the operations chained along K (see ``docs/tensor_cores.md``).

    ``TensorCore(gpu="H100", inputs="fp16", output="fp32")`` takes every model parameter from
    :data:`PRESETS`; a custom model gives ``gpu="custom"`` and all of them.

    Attributes:
        gpu: ``V100``, ``A100``, ``H100``, ``H200``, ``B200`` or ``custom``.
        inputs: ``fp16``, ``bf16``, ``tf32``, ``e4m3`` or ``e5m2``.
        output: ``fp32`` or ``fp16`` (the format of ``c``, of every block result and of d).
        group: products per hardware operation.
        extra_bits: fraction bits kept below the largest exponent beyond 23 (negative: fewer;
            ``-10`` is the H100/H200 FP8 accumulator's 13 bits).
        carry_bit: keep one more bit when the product with the largest unnormalised exponent
            has a significand product in [2, 4) and the addend is not above it.
        rounding: the block result's rounding, ``rtz`` (truncation) or ``rne``.
        result_bits: fraction bits of every block result (23 or 10; 13 on H100/H200 FP8).
        late_addend: the products are summed first and ``c`` is added last with one correctly
            rounded addition (FP8 on B200, and FP8 with fp16 output).
        product_steps: with ``late_addend``, the chained steps of the product sum (1, or 2:
            k = 0, 1 mod 4, then 2, 3 mod 4).
        product_format: ``fp32`` or ``fp16``, the format each step's sum is rounded into.
        product_rounding: ``rtz`` or ``rne``, that rounding.
        source: where the parameters come from.
        measured: what the shared measurements say about the model (docs/tensor_cores.md).
    """

    gpu: str
    inputs: str
    output: str = "fp32"
    group: int | None = None
    extra_bits: int | None = None
    carry_bit: bool | None = None
    rounding: str | None = None
    result_bits: int | None = None
    late_addend: bool | None = None
    product_steps: int | None = None
    product_format: str | None = None
    product_rounding: str | None = None
    source: str = ""
    measured: str = ""

    def __post_init__(self):
        if self.inputs not in INPUT_FORMATS:
            raise ValueError(f"inputs={self.inputs!r} is not a tensor-core input format: use one "
                             f"of {', '.join(INPUT_FORMATS)}")
        if self.output not in OUTPUT_FORMATS:
            raise ValueError(f"output={self.output!r} is not a tensor-core output format: use "
                             f"one of {', '.join(OUTPUT_FORMATS)}")
        fields = ("group", "extra_bits", "carry_bit", "rounding", "result_bits", "late_addend",
                  "product_steps", "product_format", "product_rounding")
        if self.gpu in GPUS:
            name = preset_name(self.gpu, self.inputs, self.output)
            if name not in _TABLE:
                raise ValueError(f"{self.gpu} has no tensor-core model for {self.inputs} inputs "
                                 f"with {self.output} output; presets: {', '.join(PRESET_NAMES)}")
            ref = _TABLE[name]
            for f in (*fields, "source", "measured"):
                if getattr(self, f) in (None, ""):
                    object.__setattr__(self, f, ref[f])
        elif self.gpu != "custom":
            raise ValueError(f"gpu={self.gpu!r} is unknown: use one of {', '.join(GPUS)} or "
                             f"'custom' (with every model parameter)")
        if self.gpu == "custom" and not self.late_addend:
            for f, v in (("product_steps", 1), ("product_format", "fp32"),
                         ("product_rounding", "rtz")):
                if getattr(self, f) is None:
                    object.__setattr__(self, f, v)
        missing = [f for f in fields if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a custom TensorCore needs {', '.join(missing)}")
        if isinstance(self.group, bool) or not isinstance(self.group, (int, np.integer)) \
                or not 1 <= self.group <= 64:
            raise ValueError(f"group={self.group!r} must be an int in 1..64")
        if not -20 <= int(self.extra_bits) <= 30:
            raise ValueError(f"extra_bits={self.extra_bits!r} must be in -20..30 (the window "
                             f"must keep the sums below 2^62)")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding={self.rounding!r} must be one of {', '.join(ROUNDINGS)}")
        top = _format(OUTPUT_FORMATS[self.output]).man_bits
        if not 1 <= int(self.result_bits) <= top:
            raise ValueError(f"result_bits={self.result_bits!r} must be in 1..{top} for "
                             f"{self.output} output")
        if self.product_steps not in (1, 2):
            raise ValueError(f"product_steps={self.product_steps!r} must be 1 or 2")
        if self.product_format not in OUTPUT_FORMATS:
            raise ValueError(f"product_format={self.product_format!r} must be fp32 or fp16")
        if self.product_rounding not in ROUNDINGS:
            raise ValueError(f"product_rounding={self.product_rounding!r} must be one of "
                             f"{', '.join(ROUNDINGS)}")

    @property
    def name(self) -> str:
        """The preset name (``"H100-fp16"``, ``"B200-e4m3-fp16out"``); ``custom-...`` else."""
        return preset_name(self.gpu, self.inputs, self.output)

    @property
    def input_format(self) -> Format:
        """The :class:`Format` operands must be values of."""
        return _format(INPUT_FORMATS[self.inputs])

    @property
    def output_format(self) -> Format:
        """The :class:`Format` of ``c`` and of the result."""
        return _format(OUTPUT_FORMATS[self.output])

    @property
    def result_format(self) -> Format:
        """The format every block result is rounded into: the output format, or (13-bit
        accumulators) the output's exponent range with ``result_bits`` fraction bits."""
        out = self.output_format
        if self.result_bits == out.man_bits:
            return out
        return Format(exp_bits=out.exp_bits, man_bits=int(self.result_bits))

    def kernel_args(self) -> tuple:
        """The model's arguments of :func:`fpsim.kernels.tensor_core.matmul_tc` after the
        operand arrays: ``(G, two_m, F0, carry_rule, late_c, c_emin, PO, omode, olimit, L, LP)``."""
        from fpsim.kernels.round import RNE, RTZ
        from fpsim.kernels.tensor_core import LateParams
        out = self.output_format
        prod = _format(OUTPUT_FORMATS[self.product_format])
        late = LateParams(int(self.product_steps), RNE if self.product_rounding == "rne" else RTZ,
                          int(prod.emin), float(2.0 ** (prod.emax + 1)))
        return (int(self.group), 2 * self.input_format.man_bits, WINDOW_BASE + int(self.extra_bits),
                int(bool(self.carry_bit)), int(bool(self.late_addend)), int(out.emin),
                self.result_format.params("float64"), RNE if self.rounding == "rne" else RTZ,
                float(2.0 ** (out.emax + 1)), late, prod.params("float64"))


def preset_name(gpu: str, inputs: str, output: str = "fp32") -> str:
    """``"{gpu}-{inputs}"``, with ``-fp16out`` for binary16 output."""
    return f"{gpu}-{inputs}" + ("-fp16out" if output == "fp16" else "")


def _p(group, extra_bits, rounding="rtz", result_bits=None, late_addend=False, carry_bit=True,
       product_steps=1, product_format="fp32", product_rounding="rtz", source="", measured=""):
    return dict(group=group, extra_bits=extra_bits, carry_bit=carry_bit, rounding=rounding,
                result_bits=result_bits, late_addend=late_addend, product_steps=product_steps,
                product_format=product_format, product_rounding=product_rounding, source=source,
                measured=measured)


_KM = "Khattak & Mikaitis, Accurate Models of NVIDIA Tensor Cores (2025), models/{}TC.m"
_FASI = "Fasi, Higham, Mikaitis, Pranesh, PeerJ CS 7:e330 (2021)"


def _table() -> dict:
    t = {}

    def add(gpu, inputs, output, **kw):
        out_bits = 23 if output == "fp32" else 10
        kw["result_bits"] = kw.get("result_bits") or out_bits
        t[preset_name(gpu, inputs, output)] = kw

    # V100: group 4, no extra bit, truncation into binary32, RNE into binary16. No shared
    # measurements: the parameters are the published model's, not checked here.
    add("V100", "fp16", "fp32", **_p(4, 0, source=_KM.format("V100") + "; " + _FASI,
                                     measured="not measured here"))
    add("V100", "fp16", "fp16", **_p(4, 0, "rne", source=_KM.format("V100"),
                                     measured="not measured here"))
    for gpu, g16, gtf in (("A100", 8, 4), ("H100", 16, 8), ("H200", 16, 8), ("B200", 16, 8)):
        eb = 1 if gpu == "A100" else 2
        src = _KM.format(gpu)
        add(gpu, "fp16", "fp32", **_p(g16, eb, source=src, measured="shared data"))
        add(gpu, "fp16", "fp16", **_p(g16, eb, "rne", source=src, measured="shared data"))
        add(gpu, "bf16", "fp32", **_p(g16, eb, source=src, measured="shared data"))
        add(gpu, "tf32", "fp32", **_p(gtf, eb, source=src, measured="shared data"))
    for gpu in ("H100", "H200"):
        for f in ("e4m3", "e5m2"):
            # Two interleaved groups of 16 act as one of 32; the accumulator keeps 13 fraction
            # bits (neab = -10 in the published model), every block result truncated to them.
            add(gpu, f, "fp32", **_p(32, -10, "rtz", result_bits=13, source=_KM.format(gpu),
                                     measured="shared data (c = 0 in the measurement)"))
    fp8_fp16 = dict(late_addend=True, carry_bit=False, product_steps=2, product_format="fp16",
                    product_rounding="rne",
                    source="fitted here to the shared measurements (the published models do not "
                           "reproduce this column): two chained fp16 steps of 16 products "
                           "(k = 0, 1 mod 4, then 2, 3 mod 4), c added last",
                    measured="shared data")
    for gpu in ("H100", "H200", "B200"):
        for f in ("e4m3", "e5m2"):
            add(gpu, f, "fp16", **_p(32, 30, "rne", **fp8_fp16))
    for f in ("e4m3", "e5m2"):
        # Fitted here to the shared B200 data: the 32 products are summed (a window 30 bits
        # beyond binary32's: exact for every E4M3 block and all but extreme E5M2 ones),
        # truncated to binary32, then added to c with one RNE addition.
        add("B200", f, "fp32", **_p(32, 30, "rne", late_addend=True, carry_bit=False,
                                    source="fitted to the shared B200 measurements (the "
                                    "published B200 model truncates; it does not reproduce them)",
                                    measured="shared data"))
    return t


_TABLE = _table()
#: Every preset name, in table order.
PRESET_NAMES = tuple(_TABLE)


def tensor_core(name: str) -> TensorCore:
    """The :class:`TensorCore` preset ``name`` (``"H100-fp16"``, ``"B200-e4m3-fp16out"``);
    ValueError listing the valid names otherwise."""
    if not isinstance(name, str) or name not in _TABLE:
        raise ValueError(f"tensor-core preset {name!r} does not exist; valid presets: "
                         + ", ".join(PRESET_NAMES))
    parts = name.split("-")
    return TensorCore(gpu=parts[0], inputs=parts[1],
                      output="fp16" if name.endswith("-fp16out") else "fp32")


#: Every preset as a TensorCore, by name.
PRESETS = {n: tensor_core(n) for n in PRESET_NAMES}


def _values(x, name: str, fmt: Format, shape=None) -> np.ndarray:
    """Operand ``x`` as a contiguous float64 array of values of ``fmt`` (NaN and, where the
    format has them, infinities allowed); ValueError naming the operand, the first offending
    index and its value otherwise."""
    from fpsim.kernels import accumulate as kacc
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu" and arr.dtype.kind != "V":
        raise TypeError(f"operand {name} must hold real numbers, got dtype {arr.dtype}")
    with np.errstate(invalid="ignore"):
        arr = np.ascontiguousarray(arr, dtype=np.float64)
    if shape is not None and arr.shape != shape:
        raise ValueError(f"operand {name} has shape {arr.shape}, expected {shape}")
    if arr.size and kacc.scan_operand(arr.reshape(1, -1), fmt.params("float64"))[0]:
        where = first_non_value(arr, fmt)
        raise ValueError(f"operand {name} holds {float(arr[where])!r} at index {where}, which is "
                         f"not a value of {fmt} ({name} must hold values of the model's "
                         f"{'input' if name in 'ab' else 'output'} format): quantize it first")
    return arr


def tc_matmul(a, b, tc: TensorCore, c=None, *, parallel: bool = True):
    """``c + a @ b`` through the block-FMA model ``tc`` (2-D operands, or stacks of them with
    the same leading dimensions), on the CPU or, for device arrays, the GPU.

    Args:
        a: (..., M, K) values of ``tc``'s input format.
        b: (..., K, N) values of the input format.
        c: (..., M, N) values of the output format, or None (zeros).
        parallel: rows in parallel threads (the serial twin otherwise; the bits are the same).

    Returns:
        (..., M, N) float64 array of values of the output format (the result of the last block
        along K; for K = 0 it is ``c``); a device array for device operands.
    """
    from fpsim.numerics import backend
    return backend.tc_matmul(a, b, tc, c, parallel)


def prepare(a, b, tc: TensorCore, c=None) -> tuple[tuple, tuple]:
    """Checked host operands of :func:`tc_matmul` as the drivers' arrays ``(A, B, SA, EA, SB,
    EB, bad_rows, bad_cols, C)`` (batched (T, M, K), (T, K, N), (T, M, N), split) and the
    result's shape."""
    from fpsim.kernels import tensor_core as ktc
    fin = tc.input_format
    A = _values(a, "a", fin)
    B = _values(b, "b", fin)
    if A.ndim < 2 or B.ndim < 2:
        raise ValueError(f"a and b must be at least 2-D, got shapes {A.shape} and {B.shape}")
    if A.shape[-1] != B.shape[-2] or A.shape[:-2] != B.shape[:-2]:
        raise ValueError(f"shapes {A.shape} and {B.shape} do not align: a (..., M, K) and b "
                         f"(..., K, N) need the same K and the same leading dimensions")
    batch = A.shape[:-2]
    M, K = A.shape[-2:]
    N = B.shape[-1]
    C = np.zeros((*batch, M, N)) if c is None else _values(c, "c", tc.output_format,
                                                          shape=(*batch, M, N))
    A3 = A.reshape(-1, M, K)
    B3 = B.reshape(-1, K, N)
    C3 = np.ascontiguousarray(C.reshape(-1, M, N))
    SA, EA = np.empty(A3.shape, np.int64), np.empty(A3.shape, np.int32)
    SB, EB = np.empty(B3.shape, np.int64), np.empty(B3.shape, np.int32)
    ktc.split_values(A3, fin.man_bits, fin.emin, SA, EA)
    ktc.split_values(B3, fin.man_bits, fin.emin, SB, EB)
    bad_rows = (~np.isfinite(A3)).any(axis=2).astype(np.int64)
    bad_cols = (~np.isfinite(B3)).any(axis=1).astype(np.int64)
    return (A3, B3, SA, EA, SB, EB, bad_rows, bad_cols, C3), (*batch, M, N)


def host_tc_matmul(a, b, tc: TensorCore, c=None, parallel: bool = True) -> np.ndarray:
    """The CPU implementation of :func:`tc_matmul` (the dispatch table's ``tc_matmul`` /
    ``cpu`` entry)."""
    from fpsim.numerics import backend
    arrays, shape = prepare(a, b, tc, c)
    out = np.empty(arrays[-1].shape)
    cpu = backend.drivers("cpu")
    run = cpu.tc_matmul if parallel else cpu.tc_matmul_serial
    run(*arrays, out, *tc.kernel_args())
    return out.reshape(shape)


__all__ = ["GPUS", "INPUT_FORMATS", "PRESETS", "PRESET_NAMES", "TensorCore", "preset_name",
           "tc_matmul", "tensor_core"]
