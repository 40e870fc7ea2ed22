"""Public array API: :func:`quantize`, :func:`encode`, :func:`decode`.

Thin validated wrappers: each checks its arguments and turns names into kernel ints; the array
goes as it is to :mod:`fpsim.numerics.backend`, whose dispatch table picks the CPU or the CUDA
implementation by where the array lives (nothing here looks at that).
"""

from __future__ import annotations

import numpy as np

from fpsim.numerics import backend
from fpsim.numerics.format import Format
from fpsim.numerics.formats import format as _format
from fpsim.kernels.rng import stream_key
from fpsim.kernels.round import SR_BITS_MAX
from fpsim.numerics.modes import Overflow, RoundMode


#: Host coercion of array-likes (the CPU entries of the dispatch table use it); kept under its
#: old name for callers of this module.
_as_float_array = backend.as_float_array


def _sr_bits(sr_bits) -> int:
    if sr_bits is None:
        return SR_BITS_MAX
    if isinstance(sr_bits, bool) or not isinstance(sr_bits, (int, np.integer)) or not (
        1 <= int(sr_bits) <= SR_BITS_MAX
    ):
        raise ValueError(f"sr_bits={sr_bits!r} is invalid: use None or an int in 1..{SR_BITS_MAX}")
    return int(sr_bits)


def _prepare(fmt, rounding, overflow, seed, stream, sr_bits):
    """The kernel arguments ``(Format, mode, policy, key, srk)`` of the public names."""
    fmt = _format(fmt)
    mode = RoundMode.parse(rounding)
    policy = Overflow.parse(overflow)
    key = stream_key(seed, stream)
    return fmt, int(mode), int(policy), key, _sr_bits(sr_bits)


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
    fmt, mode, policy, key, srk = _prepare(fmt, rounding, overflow, seed, stream, sr_bits)
    res, st = backend.quantize(x, fmt, mode, policy, key, srk, bool(stats), out)
    res = res if out is not None else backend.unwrap_0d(res)  # out= is returned as it is
    return (res, st) if stats else res


def code_dtype(fmt: "str | Format") -> np.dtype:
    """Smallest unsigned dtype that holds a code of ``fmt`` (uint8/16/32/64)."""
    return backend.code_dtype(_format(fmt))


def encode(x, fmt: "str | Format", rounding="rne", overflow="ieee", seed: int = 0, *,
           stream: int = 0, sr_bits: int | None = None) -> np.ndarray:
    """Round ``x`` into ``fmt`` (as :func:`quantize`) and return the bit codes.

    Returns:
        An array of the smallest unsigned dtype holding a code (:func:`code_dtype`), same shape
        (for a device array: int64 codes as that kind of device array).
        NaN in a format without NaN (``float4_e2m1fn``, ``float6_*``) encodes as ml_dtypes does:
        the sign-only code of the opposite sign.
    """
    fmt, mode, policy, key, srk = _prepare(fmt, rounding, overflow, seed, stream, sr_bits)
    codes = backend.encode(x, fmt, mode, policy, key, srk)
    return backend.unwrap_0d(codes)


def decode(codes, fmt: "str | Format") -> np.ndarray:
    """float64 values of the codes of ``fmt``.

    Args:
        codes: array-like of non-negative integers below ``2**fmt.bits``.

    Raises:
        ValueError: a code is out of range (the message gives the first offending index).
    """
    return backend.unwrap_0d(backend.decode(codes, _format(fmt)))
