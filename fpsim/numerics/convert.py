"""Public array API: :func:`quantize`, :func:`encode`, :func:`decode`.

Thin validated wrappers: each checks its arguments, turns names into kernel ints, and hands
contiguous arrays to :mod:`fpsim.backend`.
"""

from __future__ import annotations

import numpy as np

from fpsim.numerics import backend
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format
from fpsim.kernels.rng import stream_key
from fpsim.kernels.round import SR_BITS_MAX
from fpsim.numerics.modes import Overflow, RoundMode


def _as_float_array(x, what: str = "x") -> np.ndarray:
    """``x`` as a contiguous float32 or float64 array, converting exactly or refusing."""
    if backend.is_device_array(x):
        backend.cuda_module()
    arr = np.asarray(x)
    if not arr.dtype.isnative:  # big-endian data: same values, native byte order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype in (np.float32, np.float64):
        # (np.ascontiguousarray would turn a 0-d array into a 1-d one.)
        return arr if arr.flags.c_contiguous else arr.copy(order="C")
    if arr.dtype == np.float16 or arr.dtype.kind in "iub" or _is_ml_dtype(arr.dtype):
        if arr.dtype.kind in "iu" and arr.size and np.max(np.abs(arr.astype(object))) > 2**53:
            raise ValueError(f"{what} holds integers beyond 2^53, which float64 cannot hold exactly")
        with np.errstate(invalid="ignore"):  # signalling NaNs warn when widened; they stay NaN
            return arr.astype(np.float64, order="C")
    raise TypeError(
        f"{what} must hold real floating-point (or integer) values, got dtype {arr.dtype}"
        + (" (long double would lose precision: convert it to float64 yourself)"
           if arr.dtype.kind == "f" else "")
    )


def _is_ml_dtype(dtype: np.dtype) -> bool:
    return dtype.kind == "V" and type(dtype).__module__.startswith("ml_dtypes") or (
        getattr(dtype.type, "__module__", "").startswith("ml_dtypes")
    )


def _sr_bits(sr_bits) -> int:
    if sr_bits is None:
        return SR_BITS_MAX
    if isinstance(sr_bits, bool) or not isinstance(sr_bits, (int, np.integer)) or not (
        1 <= int(sr_bits) <= SR_BITS_MAX
    ):
        raise ValueError(f"sr_bits={sr_bits!r} is invalid: use None or an int in 1..{SR_BITS_MAX}")
    return int(sr_bits)


def _prepare(x, fmt, rounding, overflow, seed, stream, sr_bits):
    fmt = _format(fmt)
    mode = RoundMode.parse(rounding)
    policy = Overflow.parse(overflow)
    key = stream_key(seed, stream)
    return _as_float_array(x), fmt, int(mode), int(policy), key, _sr_bits(sr_bits)


def _shape_like(out: np.ndarray, x):
    return out[()] if np.ndim(x) == 0 else out


def quantize(x, fmt: "str | Format", rounding="rne", overflow="ieee", seed: int = 0,
             stats: bool = False, *, stream: int = 0, sr_bits: int | None = None,
             out: np.ndarray | None = None):
    """Round every element of ``x`` to the nearest value of ``fmt`` under a rounding mode.

    Args:
        x: array-like of real numbers (float32/float64; float16, ml_dtypes floats and integers up
            to 2^53 are converted to float64 exactly).
        fmt: a :class:`Format`, a name (``"bfloat16"``, ``"e4m3"``) or a spec (``"e5m10"``).
        rounding: ``rne``, ``rna``, ``rtz``, ``rup``, ``rdn``, ``rto`` or ``sr``.
        overflow: ``ieee`` (Inf, or NaN without Inf) or ``saturate`` (±max; Inf saturates too).
        seed, stream: key of the counter-based random bits of ``sr`` (element ``i`` of the
            flattened array always gets the same bits for the same seed and stream).
        stats: also return a :class:`Stats` with event counts and the input exponent histogram,
            counted in the same pass.
        sr_bits: number of random bits ``sr`` compares (None: 62, i.e. exact for every input not
            below 2^-10 of the smallest subnormal).
        out: optional preallocated, writeable result array (C-contiguous, the result's shape
            and dtype); it may be ``x`` itself to round in place (any other overlap with ``x`` is
            handled by copying ``x`` first). It is returned, also for 0-d input.

    Returns:
        The rounded values, same shape, in a float32 array when ``x`` is float32 and every value
        of ``fmt`` is a float32, else float64; with ``stats=True`` a tuple ``(values, Stats)``.
        A NaN result carries the sign bit of the format's NaN code (negative for fnuz formats,
        positive for unsigned ones, the input's sign otherwise); NaN inputs stay NaN in the
        carrier even for formats that cannot encode NaN.
    """
    if backend.is_device_array(x):
        if out is not None:
            raise ValueError("out= is not available for device arrays")
        dev = _format(fmt), int(RoundMode.parse(rounding)), int(Overflow.parse(overflow))
        res, st = backend.quantize_device(x, *dev, stream_key(seed, stream), _sr_bits(sr_bits),
                                          bool(stats))
        return (res, st) if stats else res
    arr, fmt, mode, policy, key, srk = _prepare(x, fmt, rounding, overflow, seed, stream, sr_bits)
    if out is not None:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
        if np.shares_memory(out, arr) and not (
                out.__array_interface__["data"][0] == arr.__array_interface__["data"][0]
                and out.strides == arr.strides):
            arr = arr.copy()  # partial overlap: elements would be read after being overwritten
    res, st = backend.quantize(arr, fmt, mode, policy, key, srk, bool(stats), out)
    res = res if out is not None else _shape_like(res, x)
    return (res, st) if stats else res


def code_dtype(fmt: "str | Format") -> np.dtype:
    """Smallest unsigned dtype that holds a code of ``fmt`` (uint8/16/32/64)."""
    bits = _format(fmt).bits
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if bits <= np.dtype(dt).itemsize * 8:
            return np.dtype(dt)
    raise AssertionError("formats are at most 64 bits wide")


def encode(x, fmt: "str | Format", rounding="rne", overflow="ieee", seed: int = 0, *,
           stream: int = 0, sr_bits: int | None = None) -> np.ndarray:
    """Round ``x`` into ``fmt`` (as :func:`quantize`) and return the bit codes.

    Returns:
        An array of the smallest unsigned dtype holding a code (:func:`code_dtype`), same shape.
        NaN in a format without NaN (``float4_e2m1fn``, ``float6_*``) encodes as ml_dtypes does:
        the sign-only code of the opposite sign.
    """
    if backend.is_device_array(x):
        return backend.encode_device(x, _format(fmt), int(RoundMode.parse(rounding)),
                                     int(Overflow.parse(overflow)), stream_key(seed, stream),
                                     _sr_bits(sr_bits))
    arr, fmt, mode, policy, key, srk = _prepare(x, fmt, rounding, overflow, seed, stream, sr_bits)
    codes = backend.encode(arr, fmt, mode, policy, key, srk)
    out = codes.view(np.uint64).astype(code_dtype(fmt))
    return _shape_like(out, x)


def decode(codes, fmt: "str | Format") -> np.ndarray:
    """float64 values of the codes of ``fmt``.

    Args:
        codes: array-like of non-negative integers below ``2**fmt.bits``.

    Raises:
        ValueError: a code is out of range (the message gives the first offending index).
    """
    fmt = _format(fmt)
    if backend.is_device_array(codes):
        return backend.decode_device(codes, fmt)
    arr = np.asarray(codes)
    if arr.dtype.kind == "f" and isinstance(codes, (list, tuple)):
        # numpy turns a list holding ints >= 2^63 into float64; read it as uint64 instead.
        try:
            arr = np.asarray(codes, dtype=np.uint64)
        except (OverflowError, TypeError, ValueError):
            pass
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind not in "iu":
        raise TypeError(f"codes must be integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64:
        arr64 = (arr if arr.flags.c_contiguous else arr.copy(order="C")).view(np.int64)
        bad = (arr >> np.uint64(fmt.bits)) != 0 if fmt.bits < 64 else np.zeros(arr.shape, bool)
    else:
        arr64 = arr.astype(np.int64, order="C")
        bad = (arr64 < 0) | ((arr64 >> fmt.bits) != 0 if fmt.bits < 63 else False)
    if np.any(bad):
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), arr.shape)) if arr.ndim else ()
        raise ValueError(
            f"code {int(arr[where])} at index {where} is outside 0..{(1 << fmt.bits) - 1} "
            f"of the {fmt.bits}-bit format {fmt}"
        )
    return _shape_like(backend.decode(arr64, fmt), codes)
