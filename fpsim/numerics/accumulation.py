"""Dot products and matrix products under an explicit accumulation model.

A model says how ``sum_k a[k] * b[k]`` is evaluated in low precision:

* ``inputs``: the format the operands must be values of (default: the output format);
* ``product``: the format each product is rounded into (None: exact products);
* ``accum``: the accumulator format, every addition rounded into it (None: exact accumulation,
  a single rounding at the end; ``"float64"``: native float64 additions, rne only);
* ``order``: ``sequential`` (``((p0 + p1) + p2) + ...``), ``pairwise`` (neighbours added level by
  level) or ``blocked`` (sequential partial sums of ``block`` terms, each added into the running
  total: the chunk-based accumulation of Wang et al. 2018);
* ``compensated``: Kahan summation, every operation of it rounded into the accumulator;
* ``fmt``: the output format, one final rounding.

All roundings use one rounding mode. ``docs/arithmetic.md`` draws the orders and works an example.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading

import numpy as np

from fpsim.numerics import backend, config
from fpsim.numerics.arith import arith_sr_bits, check_arith_format, first_non_value
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format
from fpsim.kernels import accumulate as kacc
from fpsim.kernels.rng import stream_key
from fpsim.numerics.modes import Overflow, RoundMode

_ORDERS = {"sequential": kacc.ORDER_SEQUENTIAL, "pairwise": kacc.ORDER_PAIRWISE,
           "blocked": kacc.ORDER_BLOCKED}
_FLOAT64 = Format(exp_bits=11, man_bits=52)
_FLOAT32 = Format(exp_bits=8, man_bits=23)
#: Largest ``block=``: the kernels take it as a 64-bit integer.
_BLOCK_MAX = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named accumulation model: operand, accumulator and output formats (exact products)."""

    inputs: str
    accum: str
    fmt: str


#: Common hardware models by name. Aliases: ``fp16-fp32acc``, ``fp16-fp16acc``, ``bf16-fp32acc``.
PRESETS = {
    "fp16 inputs, fp32 accumulate": Preset("float16", "float32", "float32"),
    "fp16 accumulate": Preset("float16", "float16", "float16"),
    "bf16 inputs, fp32 accumulate": Preset("bfloat16", "float32", "float32"),
}
_PRESET_ALIASES = {"fp16-fp32acc": "fp16 inputs, fp32 accumulate",
                   "fp16-fp16acc": "fp16 accumulate",
                   "bf16-fp32acc": "bf16 inputs, fp32 accumulate"}


def preset(name: str) -> Preset:
    """The :class:`Preset` called ``name`` (see :data:`PRESETS`)."""
    key = _PRESET_ALIASES.get(name, name)
    if key not in PRESETS:
        raise ValueError(f"preset={name!r} is unknown: use one of "
                         + ", ".join(repr(k) for k in [*PRESETS, *_PRESET_ALIASES]))
    return PRESETS[key]


def _is_float64(f) -> bool:
    """Whether ``f`` (a name, a spec such as ``"e11m52"``, or a Format) is IEEE binary64."""
    if isinstance(f, str):
        try:
            f = _format(f)
        except ValueError:
            return False  # (not a format at all: the caller's own lookup says why)
    return isinstance(f, Format) and f == _FLOAT64  # (the name is not part of equality)


#: Temporaries of the fast path (the operands' float32 copies, the sgemm product) of at most
#: this many elements reuse per-thread buffers. A fresh array above glibc's mmap threshold
#: (128 KiB at first) is new pages each call, and their faults cost as much as the O(n^2)
#: passes: 256^3 on exact data took 0.87-0.90 ms fresh against 0.44 ms with reused memory on
#: one BLAS thread. Larger temporaries are allocated per call (their O(n^3) product dwarfs
#: the faults), so no buffer of unbounded size is kept: a thread holds at most three of
#: 2^20 elements (4 MiB each in float32; 1024 x 1024 operands still fit).
SCRATCH_MAX_ELEMENTS = 1 << 20
_SCRATCH = threading.local()


def _scratch(slot: str, shape: tuple, dtype) -> np.ndarray:
    """An uninitialised ``shape`` array of ``dtype`` for the temporary ``slot`` of one call
    on this thread (reused by the next call: never handed to a caller)."""
    n = math.prod(shape)
    if n == 0 or n > SCRATCH_MAX_ELEMENTS:
        return np.empty(shape, dtype)
    bufs = _SCRATCH.__dict__.setdefault("bufs", {})
    key = (slot, np.dtype(dtype))
    buf = bufs.get(key)
    if buf is None or buf.size < n:
        buf = bufs[key] = np.empty(n, dtype)
    return buf[:n].reshape(shape)


def _operand(x, name: str, fmt: Format, ndim: int, float32: bool = False,
             row_sums: bool = True):
    """Host operand ``x`` as a contiguous float64 ``ndim``-D array of values of ``fmt``, with
    what one scan of it found (and its float32 copy when ``float32``; ``row_sums``: whether
    the scan sums rows); TypeError / ValueError naming the operand otherwise."""
    arr = np.asarray(x)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind not in "fiub" and arr.dtype.kind != "V":
        raise TypeError(f"operand {name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"operand {name} must be {ndim}-D, got shape {arr.shape}")
    backend.check_exact_ints(arr, f"operand {name}")
    with np.errstate(invalid="ignore"):
        arr = np.ascontiguousarray(arr, dtype=np.float64)
    # (the float32 copy is the scan's temporary for sgemm: a scratch buffer of this thread)
    arr32 = _scratch(name, arr.shape, np.float32) if float32 else np.empty((0, 0), np.float32)
    scan = kacc.scan_operand_into(arr, fmt.params("float64"), arr32, row_sums)
    if scan[0]:
        where = first_non_value(arr, fmt)
        raise ValueError(f"operand {name} holds {float(arr[where])!r} at index {where}, which is "
                         f"not a value of the input format {fmt}: quantize it first")
    return arr, _Scan(*scan, arr32 if float32 else None)


@dataclasses.dataclass(frozen=True)
class _Scan:
    """What one pass over an operand found (:func:`fpsim.kernels.accumulate.scan_operand_into`)."""

    n_not_values: int
    finite: bool
    lowest: int  # every element a multiple of 2^lowest (kacc.NO_SET_BIT: all zero)
    max_abs: float  # of the finite elements
    max_row_sum: float  # 0.0 when the scan was not asked for row sums
    float32: np.ndarray | None  # the operand as float32, exactly (None: not asked for)


@dataclasses.dataclass(frozen=True)
class _Model:
    fmt: Format
    inputs: Format
    product: Format | None
    accum: Format | None  # None: exact
    acc_kind: int
    order: int
    block: int
    compensated: bool
    mode: int
    policy: int
    key: int
    srk: int


def _model(fmt, accum, product, rounding, order, block, compensated, preset_name, inputs,
           overflow, seed, stream, sr_bits) -> _Model:
    if preset_name is not None:
        p = preset(preset_name)
        fmt = p.fmt if fmt is None else fmt
        accum = p.accum if accum is None else accum
        inputs = p.inputs if inputs is None else inputs
    if fmt is None:
        raise ValueError("fmt (the output format) is required unless a preset gives it")
    mode = int(RoundMode.parse(rounding))
    policy = int(Overflow.parse(overflow))
    if accum is None:
        acc_kind, acc = kacc.ACC_EXACT, None
    elif _is_float64(accum):
        acc_kind, acc = kacc.ACC_FLOAT64, _FLOAT64
        if mode != int(RoundMode.RNE):
            raise ValueError(f"accum=float64 means native float64 additions, which round to "
                             f"nearest even only; rounding={rounding!r} is not available with it")
    else:
        acc_kind, acc = kacc.ACC_FORMAT, _format(accum)
        check_arith_format(acc)
    out = _FLOAT64 if _is_float64(fmt) else _format(fmt)
    if _is_float64(out) and acc_kind != kacc.ACC_FLOAT64:
        raise ValueError("a float64 output needs accum='float64' (a narrower accumulator or an "
                         "exact sum is rounded into the output, which takes at most 26 bits)")
    if not _is_float64(out):
        check_arith_format(out)
    ins = out if inputs is None else _format(inputs)
    check_arith_format(ins)
    prod = None if product is None else _format(product)
    if prod is not None:
        check_arith_format(prod)
    if not isinstance(order, str) or order not in _ORDERS:
        raise ValueError(f"order={order!r} is invalid: use one of {', '.join(_ORDERS)}")
    if order == "blocked":
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or not (
                1 <= block <= _BLOCK_MAX):
            raise ValueError(f"order='blocked' needs block=<int in 1..2^63-1> (terms per "
                             f"partial sum, a 64-bit kernel argument), got block={block!r}")
    elif block is not None:
        raise ValueError(f"block={block!r} is given but order={order!r}: block is for "
                         f"order='blocked' only")
    if compensated and (acc_kind == kacc.ACC_EXACT or order != "sequential"):
        raise ValueError("compensated=True is Kahan summation of a sequential sum in an "
                         "accumulator format: it needs accum=<format> and order='sequential'")
    rounded_into = [f for f in (acc, prod, out) if f is not None and not _is_float64(f)]
    srk = arith_sr_bits(max(rounded_into, key=lambda f: f.man_bits), sr_bits) if rounded_into \
        else 1
    return _Model(out, ins, prod, acc, acc_kind, _ORDERS[order], int(block or 1),
                  bool(compensated), mode, policy, stream_key(seed, stream), srk)


def _remembered_model(*args) -> _Model:
    """:func:`_model` of ``args``, remembered when they are plain names and numbers: parsing a
    model costs about as much as a fast-path 64^3 product. (Format objects are not remembered:
    equal formats may carry different names, which messages show.)"""
    if all(a is None or type(a) in _PLAIN for a in args):
        return _model_cache(*args)
    return _model(*args)


_PLAIN = (str, int, float, bool)
# typed: True and 1 (block=True is refused, block=1 is not), 1 and 1.0 are different keys.
_model_cache = functools.lru_cache(maxsize=64, typed=True)(_model)


def _exact_in(bound: float, L: int, f: Format | None) -> bool:
    """Whether every multiple of ``2^L`` not above ``bound`` in magnitude is a value of ``f``
    (None: exact arithmetic, but BLAS computes in float64: float64's condition)."""
    lowest, man_bits, largest, has_negzero = _grid_limits(_FLOAT64 if f is None else f)
    if not has_negzero or L < lowest:
        return False
    top = L + man_bits + 1  # multiples of 2^L below 2^top have at most man_bits + 1 bits
    return bound < largest and (top > 1023 or bound < 2.0 ** top)


@functools.cache
def _grid_limits(f: Format) -> tuple[int, int, float, bool]:
    """What :func:`_exact_in` reads of ``f``: the exponent of its smallest positive value, its
    fraction bits, its largest value, whether it has -0 (derived once per format)."""
    lowest = f.emin - f.man_bits if f.subnormals else f.emin
    return lowest, f.man_bits, float(f.max), f.has_negzero


def _exact_product(A: np.ndarray, B: np.ndarray, sa: _Scan, sb: _Scan, m: _Model):
    """``(C, in_output)``: ``C`` the exact ``A @ B`` from BLAS (float32 or float64; its zeros
    carry BLAS's signs, :func:`fpsim.kernels.accumulate.finish_exact` gives them the model's)
    when the model provably equals it, and ``in_output`` whether every such sum is also a value
    of the output format (its final rounding then changes nothing); else None.

    The model equals BLAS when every product and every partial sum, in any order, is exactly
    representable in the product format, the accumulator and float64 (float32 for sgemm): then
    every rounding of the model is exact and so is the BLAS sum, whatever order and FMA use it
    has. Sufficient condition checked here: all products are multiples of ``2^L`` (``L`` =
    lowest set bits of A plus B's), the largest row sum of ``|A|`` times ``max |B|`` bounds
    every partial sum, and it is below ``2^(L + precision)`` and the format's max, with ``2^L``
    not below the format's smallest positive value. Not taken for Kahan (its -0 rules differ
    under rdn); zero results get the model's sign of zero afterwards. sgemm runs on the scans'
    float32 copies, which exist only when the input format fits float32.
    """
    if m.compensated or A.size == 0 or B.size == 0 or not (sa.finite and sb.finite):
        return None
    if sa.lowest == kacc.NO_SET_BIT or sb.lowest == kacc.NO_SET_BIT:
        return np.zeros((A.shape[0], B.shape[1])), False  # every product is ±0
    L = sa.lowest + sb.lowest
    # The float64 row sums may round low by a relative K*2^-53 at most: covered.
    bound = sa.max_row_sum * sb.max_abs * (1 + (A.shape[1] + 2) * 2.0 ** -52)
    if not all(_exact_in(bound, L, f) for f in (m.product, m.accum, _FLOAT64)
               if f is not None or m.acc_kind == kacc.ACC_EXACT):
        return None
    in_output = _exact_in(bound, L, m.fmt)
    if sa.float32 is not None and sb.float32 is not None and _exact_in(bound, L, _FLOAT32):
        return _blas(sa.float32, sb.float32), in_output
    return _blas(A, B), in_output


def _blas(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``X @ Y`` through numpy's BLAS into this thread's scratch product (valid until the next
    call: the fast path reads it once); below ``config.BLAS_SERIAL_MACS`` multiply-adds on one
    BLAS thread (a small GEMM spread over threads only adds synchronisation)."""
    C = _scratch("product", (X.shape[0], Y.shape[1]), X.dtype)
    if X.shape[0] * X.shape[1] * Y.shape[1] >= config.BLAS_SERIAL_MACS:
        return np.matmul(X, Y, out=C)
    spread = [(lib, lib.num_threads) for lib in _blas_libraries() if lib.num_threads > 1]
    try:
        for lib, _ in spread:
            lib.set_num_threads(1)
        return np.matmul(X, Y, out=C)
    finally:
        for lib, threads in spread:
            lib.set_num_threads(threads)


@functools.cache
def _blas_libraries() -> tuple:
    """threadpoolctl's controllers of the BLAS libraries loaded in this process (found once:
    a search takes milliseconds, setting a thread count a microsecond)."""
    from threadpoolctl import ThreadpoolController
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


def blas_exact(A, B, m: _Model):
    """The exact ``A @ B`` (float64, zeros signed as the model's) from BLAS for two operands of
    the model's input format when the model provably equals it, else None (tests and benchmarks
    ask it whether the fast path applies)."""
    A, sa = _operand(A, "a", m.inputs, 2, float32=m.inputs.fits_float32)
    B, sb = _operand(B, "b", m.inputs, 2, float32=m.inputs.fits_float32, row_sums=False)
    exact = _exact_product(A, B, sa, sb, m)
    if exact is None:
        return None
    C = np.empty((A.shape[0], B.shape[1]))
    kacc.finish_exact(exact[0], A, B, C, m.fmt.params("float64"), m.mode, m.policy,
                      np.uint64(m.key), m.srk, 1, False)
    return C


def matmul(a, b, fmt=None, accum=None, product=None, rounding="rne", order="sequential",
           block=None, compensated=False, *, preset=None, inputs=None, overflow="ieee", seed=0,
           stream=0, sr_bits=None, fast=True, c=None) -> np.ndarray:
    """``a @ b`` under an accumulation model (module docstring), rounded into ``fmt``; or
    ``c + a @ b`` through a tensor-core model.

    A tensor-core model is chosen by ``preset="{GPU}-{inputs}[-fp16out]"`` (``"H100-fp16"``,
    ``"B200-e4m3-fp16out"``; :data:`fpsim.numerics.tensor_core.PRESET_NAMES`) or by
    ``accum=TensorCore(...)``; it fixes every format and rounding, so only ``a``, ``b`` and
    ``c`` may be given with it (``docs/tensor_cores.md``).

    Args:
        a, b: 2-D arrays (M, K) and (K, N) of values of the input format (tensor-core models
            also take stacks (..., M, K), (..., K, N)).
        c: the addend (M, N) of a tensor-core model, values of its output format (None: zeros);
            other models have none.
        fmt: output format (None only with a ``preset``).
        accum: accumulator format (None: exact accumulation; ``"float64"``, or any name, spec
            such as ``"e11m52"`` or Format that is binary64: native float64).
        product: format products are rounded into (None: exact).
        rounding: one mode for every rounding (``rne``, ``rna``, ``rtz``, ``rup``, ``rdn``,
            ``rto``, ``sr``); ``overflow``: ``ieee`` or ``saturate``, for every rounding.
        order, block, compensated: the summation (module docstring).
        preset: a name of :data:`PRESETS`; it gives ``inputs``, ``accum`` and ``fmt`` unless
            they are passed.
        inputs: the format operands must be values of (default ``fmt``).
        seed, stream, sr_bits: stochastic rounding's random bits (each rounding of each output
            element has its own counter; see :mod:`fpsim.kernels.accumulate`).
        fast: allow the BLAS fast path where it provably equals the model (and the vectorized
            sequential kernel); False forces the one-element-at-a-time model kernel.

    Returns:
        (M, N) float64 array of values of ``fmt``.
    """
    tc = _tensor_core_of(accum, preset)
    if tc is not None:
        given = {k: v for k, v in dict(fmt=fmt, product=product, rounding=rounding, order=order,
                                       block=block, compensated=compensated, inputs=inputs,
                                       overflow=overflow, seed=seed, stream=stream,
                                       sr_bits=sr_bits).items()
                 if v != _MATMUL_DEFAULTS[k]}
        if given:
            raise ValueError(f"the tensor-core model {tc.name} fixes every format and rounding; "
                             f"{', '.join(sorted(given))} cannot be given with it")
        return backend.tc_matmul(a, b, tc, c)
    if c is not None:
        raise ValueError("c (an addend) is for tensor-core models (preset='H100-fp16', "
                         "accum=TensorCore(...)); add it after the product otherwise")
    m = _remembered_model(fmt, accum, product, rounding, order, block, compensated, preset,
                          inputs, overflow, seed, stream, sr_bits)
    return backend.matmul(a, b, m, fast)


_MATMUL_DEFAULTS = dict(fmt=None, product=None, rounding="rne", order="sequential", block=None,
                        compensated=False, inputs=None, overflow="ieee", seed=0, stream=0,
                        sr_bits=None)


def _tensor_core_of(accum, preset_name):
    """The TensorCore that ``accum`` or ``preset_name`` names, or None for other models."""
    from fpsim.numerics import tensor_core as tcm
    if isinstance(accum, tcm.TensorCore):
        if preset_name is not None:
            raise ValueError("give a tensor-core model as accum=TensorCore(...) or as preset=, "
                             "not both")
        return accum
    if isinstance(preset_name, str) and preset_name not in PRESETS \
            and preset_name not in _PRESET_ALIASES:
        if preset_name in tcm.PRESETS:
            if accum is not None:
                raise ValueError(f"preset={preset_name!r} is a tensor-core model: accum cannot "
                                 f"be given with it")
            return tcm.PRESETS[preset_name]
        raise ValueError(f"preset={preset_name!r} is unknown: use an accumulation preset ("
                         + ", ".join(repr(k) for k in [*PRESETS, *_PRESET_ALIASES])
                         + ") or a tensor-core preset (" + ", ".join(tcm.PRESET_NAMES) + ")")
    return None


def checked_operands(a, b, m: _Model, float32: bool = False):
    """``(A, B, scan of A, scan of B)``: host operands checked against the model's input format
    and for aligned shapes (both backends check on the host, with these messages); the scans
    hold float32 copies when ``float32`` (the input format must fit float32)."""
    A, sa = _operand(a, "a", m.inputs, 2, float32)
    B, sb = _operand(b, "b", m.inputs, 2, float32, row_sums=False)
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"shapes {A.shape} and {B.shape} do not align: a's columns ({A.shape[1]}) "
                         f"must equal b's rows ({B.shape[0]})")
    return A, B, sa, sb


def model_args(m: _Model) -> tuple:
    """The model's arguments of the ``matmul_model`` drivers after ``(A, BT, out)``, in their
    order (``prod_kind, PP, acc_kind, PA, PO, order, block, compensated, mode, overflow, key,
    srk``), the same for the CPU and the CUDA driver."""
    prod_kind = kacc.PROD_EXACT if m.product is None else kacc.PROD_FORMAT
    return (prod_kind, (m.product or m.fmt).params("float64"), m.acc_kind,
            (m.accum or m.fmt).params("float64"), m.fmt.params("float64"), m.order, m.block,
            m.compensated, m.mode, m.policy, m.key, m.srk)


def host_matmul(a, b, m: _Model, fast: bool) -> np.ndarray:
    """The CPU implementation of :func:`matmul` (the dispatch table's ``matmul`` / ``cpu``
    entry): operand checks, the fast paths where they provably equal the model, else the
    model driver."""
    # The float32 copies are for sgemm, which only the fast path may run.
    float32 = fast and not m.compensated and m.inputs.fits_float32
    A, B, sa, sb = checked_operands(a, b, m, float32)
    return _matmul(A, B, sa, sb, m, fast)


def _matmul(A: np.ndarray, B: np.ndarray, sa: _Scan, sb: _Scan, m: _Model,
            fast: bool) -> np.ndarray:
    """Checked host operands through the fast paths or the CPU model driver."""
    M, K = A.shape
    N = B.shape[1]
    out = np.empty((M, N), np.float64)
    # The fast paths are CPU-only strategies (BLAS, a vectorized sequential loop) with no CUDA
    # twin, so they call their kernels here; the model itself goes through the driver below.
    if fast:
        exact = _exact_product(A, B, sa, sb, m)
        if exact is not None:
            C, in_output = exact
            kacc.finish_exact(C, A, B, out, m.fmt.params("float64"), m.mode, m.policy,
                              np.uint64(m.key), m.srk, 5 * K + 4, not in_output)
            return out
    nchunk = backend.nchunks(M * max(N, 1) * max(K, 1)) if M else 1
    nchunk = max(1, min(nchunk, M))
    if fast and (m.acc_kind == kacc.ACC_FORMAT and m.order == kacc.ORDER_SEQUENTIAL
                 and not m.compensated and sa.finite and sb.finite):
        prod_kind, PP, _, PA, PO = model_args(m)[:5]
        kacc.matmul_sequential(A, B, out, prod_kind, PP, PA, PO, m.mode, m.policy,
                               np.uint64(m.key), m.srk, nchunk)
        return out
    if m.acc_kind == kacc.ACC_EXACT and A.size and B.size:
        big = sa.max_abs * sb.max_abs  # (of the finite elements)
        if big * K >= 2.0**1000:
            raise ValueError("exact accumulation of these operands could overflow the float64 "
                             "partial sums it is computed with (|a| * |b| * K >= 2^1000)")
    backend.drivers("cpu").matmul_model(A, np.ascontiguousarray(B.T), out, *model_args(m),
                                        nchunk)
    return out


def dot(a, b, fmt=None, accum=None, product=None, rounding="rne", order="sequential",
        block=None, compensated=False, **kw) -> np.float64:
    """``sum_k a[k] * b[k]`` of two 1-D arrays under an accumulation model: :func:`matmul` of
    ``a`` as a row and ``b`` as a column (same arguments); returns a float64 scalar."""
    a, b = np.asarray(a), np.asarray(b)
    for name, v in (("a", a), ("b", b)):
        if v.ndim != 1:
            raise ValueError(f"dot takes 1-D operands; {name} has shape {v.shape}")
    if a.shape != b.shape:
        raise ValueError(f"dot of operands of lengths {a.shape[0]} and {b.shape[0]}")
    return matmul(a[None, :], b[:, None], fmt, accum, product, rounding, order, block,
                  compensated, **kw)[0, 0]


__all__ = ["PRESETS", "Preset", "dot", "matmul", "preset"]
