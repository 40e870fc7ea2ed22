"""THE dispatch point between the CPU drivers and (lazily, guarded) the CUDA drivers.

Public functions in :mod:`fpsim.convert` validate their arguments and call the functions here with
contiguous arrays, a :class:`~fpsim.format.Format`, and plain ints. This module picks the carrier
(float32 when the input is float32 and the format fits, else float64), makes the bit views the
drivers take, and picks the driver by the array's device. ``import fpsim`` never imports
``numba.cuda``: device arrays reach :func:`_cuda`, which imports it on first use.
"""

from __future__ import annotations

import numba
import numpy as np

from . import config
from .format import Format
from .instrument import Stats
from .kernels import cpu
from .kernels.histogram import STATS_LEN


def is_device_array(x) -> bool:
    """Whether ``x`` lives on a CUDA device (has ``__cuda_array_interface__``)."""
    return hasattr(x, "__cuda_array_interface__")


def _cuda():
    raise RuntimeError(
        "fpsim: CUDA arrays are not supported by this build yet (the numba.cuda backend is "
        "tracked separately); pass a numpy array"
    )


def nchunks(n: int) -> int:
    """Number of independent chunks a driver splits ``n`` elements into."""
    if n == 0:
        return 1
    per_thread = config.CHUNKS_PER_THREAD * numba.get_num_threads()
    return int(max(1, min(per_thread, -(-n // config.MIN_CHUNK))))


def carrier_for(x: np.ndarray, fmt: Format) -> str:
    """``"float32"`` when ``x`` is float32 and every value of ``fmt`` is a float32, else ``"float64"``."""
    return "float32" if x.dtype == np.float32 and fmt.fits_float32 else "float64"


def _bits(x: np.ndarray) -> np.ndarray:
    """Flat integer view of a contiguous float32 (uint32) or float64 (int64) array."""
    return x.reshape(-1).view(np.uint32 if x.dtype == np.float32 else np.int64)


def quantize(x: np.ndarray, fmt: Format, mode: int, overflow: int, key: int, srk: int,
             want_stats: bool, out: np.ndarray | None = None) -> tuple[np.ndarray, Stats | None]:
    """Round a contiguous float32/float64 array into ``fmt``; returns (values, Stats or None).

    ``out``, if given, must be a C-contiguous array of the result's shape and carrier dtype.
    """
    carrier = carrier_for(x, fmt)
    if carrier == "float64" and x.dtype != np.float64:
        with np.errstate(invalid="ignore"):  # signalling NaNs warn when widened; they stay NaN
            x = x.astype(np.float64)
    if out is None:
        out = np.empty_like(x)
    elif (out.dtype != x.dtype or out.shape != x.shape or not out.flags.c_contiguous
          or not out.flags.writeable):
        raise ValueError(
            f"out must be a writeable C-contiguous {x.dtype} array of shape {x.shape} (the "
            f"{carrier} carrier of this call), got {out.dtype} {out.shape}"
            + ("" if out.flags.c_contiguous else " non-contiguous")
            + ("" if out.flags.writeable else " read-only"))
    serial = x.size < config.SERIAL_BELOW
    k = 1 if serial else nchunks(x.size)
    counts = np.zeros((k, 5), np.int64)
    hist = np.zeros((k, STATS_LEN if want_stats else 0), np.int64)
    P = fmt.params(carrier)
    drivers = cpu.QUANTIZE_SERIAL if serial else cpu.QUANTIZE
    drivers[mode](_bits(x), _bits(out), P, overflow, np.uint64(key), srk, counts, hist)
    stats = Stats.from_kernel(x.size, counts, hist, P) if want_stats else None
    return out, stats


def encode(x: np.ndarray, fmt: Format, mode: int, overflow: int, key: int, srk: int) -> np.ndarray:
    """Codes (int64 array of the same shape) of ``x`` rounded into ``fmt``."""
    carrier = carrier_for(x, fmt)
    if carrier == "float64" and x.dtype != np.float64:
        with np.errstate(invalid="ignore"):  # signalling NaNs warn when widened; they stay NaN
            x = x.astype(np.float64)
    codes = np.empty(x.shape, np.int64)
    cpu.encode(_bits(x), codes.reshape(-1), fmt.params(carrier), mode, overflow, np.uint64(key),
               srk, nchunks(x.size))
    return codes


def decode(codes: np.ndarray, fmt: Format) -> np.ndarray:
    """float64 values of a contiguous int64 array of codes."""
    out = np.empty(codes.shape, np.float64)
    cpu.decode(codes.reshape(-1), _bits(out), fmt.params("float64"), nchunks(codes.size))
    return out
