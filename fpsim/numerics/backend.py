"""THE dispatch point between the CPU drivers and (lazily, guarded) the CUDA drivers.

Public functions in :mod:`fpsim.convert` validate their arguments and call the functions here with
contiguous arrays, a :class:`~fpsim.format.Format`, and plain ints. This module picks the carrier
(float32 when the input is float32 and the format fits, else float64), makes the bit views the
drivers take, and picks the driver by the array's device. ``import fpsim`` never imports
``numba.cuda``: device arrays reach :func:`cuda_module`, which imports it on first use.
"""

from __future__ import annotations

import numba
import numpy as np

from fpsim.numerics import config
from fpsim.numerics.format import Format
from fpsim.numerics.stats import Stats
from fpsim.kernels import cpu
from fpsim.kernels.histogram import STATS_LEN


def is_device_array(x) -> bool:
    """Whether ``x`` lives on a CUDA device: it has ``__cuda_array_interface__`` (numba device
    arrays, CuPy, PyTorch CUDA tensors), or it is an array of numba's CUDA simulator."""
    return hasattr(x, "__cuda_array_interface__") or type(x).__name__ == "FakeCUDAArray"


_CUDA = None


def cuda_module():
    """The CUDA drivers (:mod:`fpsim.kernels.cuda`), imported on first use.

    Raises:
        RuntimeError: CUDA cannot be used, with the reason (numba-cuda missing or failing to
            import, no driver or no GPU).
    """
    global _CUDA
    if _CUDA is not None:
        return _CUDA
    try:
        from fpsim.kernels import cuda as kcuda
    except Exception as e:  # ImportError, or numba-cuda failing under this numpy
        raise RuntimeError(f"fpsim: the CUDA backend cannot be imported ({type(e).__name__}: "
                           f"{e}); install it with pip install 'fpsim[cuda]'") from e
    from numba import cuda
    if not cuda.is_available():
        reason = "no CUDA driver or GPU was found"
        try:
            cuda.detect()
        except Exception as e:  # detect() explains missing drivers
            reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise RuntimeError(f"fpsim: CUDA is unavailable ({reason})")
    _CUDA = kcuda
    return kcuda


def as_device(x, dtype=None):
    """``x`` (any CUDA array) as a C-contiguous numba device array, optionally converted to
    ``dtype`` on the device (a copy)."""
    from numba import cuda
    d = x if type(x).__name__ == "FakeCUDAArray" else cuda.as_cuda_array(x)
    if not d.is_c_contiguous():
        raise ValueError("device arrays must be C-contiguous")
    if dtype is not None and d.dtype != dtype:
        h = d.copy_to_host().astype(dtype)  # (a rare path; values convert exactly)
        d = cuda.to_device(h)
    return d


def like(result, x):
    """A numba device array ``result`` returned as the kind of device array ``x`` is: CuPy for
    CuPy, a PyTorch tensor on the same device for PyTorch, else the numba array."""
    mod = type(x).__module__.split(".")[0]
    if mod == "cupy":
        import cupy
        return cupy.asarray(result)
    if mod == "torch":
        import torch
        return torch.as_tensor(result, device=x.device)
    return result


def _device_carrier(x, fmt: Format):
    """``(device array, carrier)`` by the CPU's carrier rule, widening to float64 if needed."""
    d = as_device(x)
    if d.dtype not in (np.float32, np.float64):
        raise TypeError(f"device arrays must be float32 or float64, got {d.dtype}")
    carrier = "float32" if d.dtype == np.float32 and fmt.fits_float32 else "float64"
    if carrier == "float64" and d.dtype != np.float64:
        d = as_device(d, np.float64)
    return d, carrier


def quantize_device(x, fmt: Format, mode: int, overflow: int, key: int, srk: int,
                    want_stats: bool):
    """:func:`quantize` for a device array: ``(values as x's kind, Stats or None)``; the carrier
    rule is the CPU's, statistics are gathered on the device."""
    from numba import cuda
    kc = cuda_module()
    d, carrier = _device_carrier(x, fmt)
    bits_t = np.uint32 if carrier == "float32" else np.int64
    xb = d.reshape(d.size).view(bits_t)
    out = cuda.device_array(d.shape, d.dtype)
    counts = cuda.to_device(np.zeros((1, 5), np.int64))
    hist = cuda.to_device(np.zeros((1, STATS_LEN if want_stats else 0), np.int64))
    P = fmt.params(carrier)
    kc.launch_quantize(xb, out.reshape(out.size).view(bits_t), P, mode, overflow, key, srk,
                       counts, hist)
    stats = (Stats.from_kernel(d.size, counts.copy_to_host(), hist.copy_to_host(), P)
             if want_stats else None)
    return like(out, x), stats


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


def encode_device(x, fmt: Format, mode: int, overflow: int, key: int, srk: int):
    """:func:`encode` for a device array: int64 codes as x's kind of device array."""
    from numba import cuda
    kc = cuda_module()
    d, carrier = _device_carrier(x, fmt)
    codes = cuda.device_array(d.shape, np.int64)
    kc.launch_encode(d.reshape(d.size).view(np.uint32 if carrier == "float32" else np.int64),
                     codes.reshape(codes.size), fmt.params(carrier), mode, overflow, key, srk)
    return like(codes, x)


def decode_device(codes, fmt: Format):
    """:func:`decode` for device codes (any integer dtype): float64 values as codes' kind.

    Raises:
        ValueError: a code is out of range (the first offending index is named).
    """
    from numba import cuda
    kc = cuda_module()
    d = as_device(codes)
    if d.dtype.kind not in "iu":
        raise TypeError(f"codes must be integers, got dtype {d.dtype}")
    host = d.copy_to_host().reshape(-1)  # the range check needs the values; codes are small
    big = host.astype(np.uint64) >> np.uint64(fmt.bits) if fmt.bits < 64 else np.zeros(1)
    bad = np.flatnonzero(big != 0) if fmt.bits < 64 else np.zeros(0, np.int64)
    if bad.size:
        raise ValueError(f"code {int(host[bad[0]])} at index {int(bad[0])} is out of range for "
                         f"{fmt.name or fmt.spec} ({fmt.bits} bits)")
    c64 = cuda.to_device(host.astype(np.uint64).view(np.int64))
    out = cuda.device_array(d.shape, np.float64)
    kc.launch_decode(c64, out.reshape(out.size).view(np.int64), fmt.params("float64"))
    return like(out, codes)


def elementwise_device(op: int, operands, fmt: Format, W: Format, mode: int, overflow: int,
                       key: int, srk: int, tin_before: int, want_flags: bool):
    """An elementwise op on same-shape device operands: ``(values, flags or None)`` as the
    first operand's kind (float64 values, uint8 flags).

    Raises:
        ValueError: shapes differ, or an operand is not a value of the format (index named).
    """
    from numba import cuda
    kc = cuda_module()
    ds = [as_device(o) for o in operands]
    shape = ds[0].shape
    if any(d.shape != shape for d in ds):
        raise ValueError(f"device operands must have the same shape (no broadcasting on the "
                         f"device), got {[d.shape for d in ds]}")
    ds = [as_device(d, np.float64) for d in ds]
    flat = [d.reshape(d.size) for d in ds]
    while len(flat) < 3:
        flat.append(flat[0])
    n = flat[0].size
    out = cuda.device_array(n, np.float64)
    fl = cuda.device_array(n, np.uint8)
    first_bad = cuda.to_device(np.array([n], np.int64))
    kc.launch_elementwise(op, flat[0], flat[1], flat[2], out, fl, fmt.params("float64"),
                          W.params("float64"), mode, overflow, key, srk, tin_before, first_bad)
    bad = int(first_bad.copy_to_host()[0])
    if bad < n:
        idx = np.unravel_index(bad, shape)
        raise ValueError(f"an operand at index {tuple(int(i) for i in idx)} is not a value of "
                         f"{fmt.name or fmt.spec}; quantize the operands first")
    vals = like(out.reshape(shape), operands[0])
    return vals, (like(fl.reshape(shape), operands[0]) if want_flags else None)


def matmul_device(A, B, prod_kind, PP, acc_kind, PA, PO, order, block, compensated, mode,
                  overflow, key, srk, first_a):
    """The general accumulation-model matmul of host-checked float64 operands ``A``, ``B`` on
    the device: the float64 result as ``first_a``'s kind of device array."""
    from numba import cuda
    kc = cuda_module()
    dA = cuda.to_device(np.ascontiguousarray(A, np.float64))
    BT = cuda.to_device(np.ascontiguousarray(np.asarray(B, np.float64).T))
    out = cuda.device_array((A.shape[0], B.shape[1]), np.float64)
    kc.launch_matmul_model(dA, BT, out, prod_kind, PP, acc_kind, PA, PO, order, block,
                           compensated, mode, overflow, key, srk)
    return like(out, first_a)
