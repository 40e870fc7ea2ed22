"""The one dispatch table between the public array API and the CPU and CUDA drivers.

The public functions (:mod:`.convert`, :mod:`.arith`, :mod:`.accumulation`) parse their
arguments, then call :func:`quantize`, :func:`encode`, :func:`decode`, :func:`elementwise` or
:func:`matmul` here with the raw array arguments; they never look at where an array lives.
Each of those looks up :data:`DISPATCH` ``[op][kind]``, ``kind`` being :func:`kind_of` the
array arguments: ``"cpu"`` for anything numpy takes, ``"cuda"`` for device arrays (numba device
arrays, CuPy, PyTorch CUDA tensors, numba's simulator arrays). The implementation prepares the
arrays its way (host: coerce, chunk, check ``out=``; device: carrier on the device, launch
geometry, results as the input's kind of array) and calls the driver of the same name in
:mod:`fpsim.kernels.cpu` or :mod:`fpsim.kernels.cuda`, which take the same arguments.

Kernel modules are imported on first use, never at ``import fpsim``: the CPU drivers pull in
numba (seconds of import), the CUDA drivers ``numba.cuda`` (:func:`cuda_module`).
"""

from __future__ import annotations

import numpy as np

from fpsim.numerics import config
from fpsim.numerics.format import Format


# ---- array kinds and driver modules ---------------------------------------------------------------
def is_device_array(x) -> bool:
    """Whether ``x`` lives on a CUDA device: it has ``__cuda_array_interface__`` (numba device
    arrays, CuPy, PyTorch CUDA tensors), or it is an array of numba's CUDA simulator."""
    return hasattr(x, "__cuda_array_interface__") or type(x).__name__ == "FakeCUDAArray"


def kind_of(*arrays) -> str:
    """The backend for these array arguments: ``"cuda"`` if any is a device array, else
    ``"cpu"``. (Mixed operands go to the CUDA implementation, which refuses or moves them.)"""
    return "cuda" if any(is_device_array(a) for a in arrays) else "cpu"


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


def cpu_module():
    """The CPU drivers (:mod:`fpsim.kernels.cpu`), imported on first use (it imports numba,
    which ``import fpsim`` does not need)."""
    from fpsim.kernels import cpu
    return cpu


def drivers(kind: str):
    """The driver module of a backend kind (``"cpu"`` or ``"cuda"``): both export the same
    driver names with the same arguments (``quantize``, ``encode``, ``decode``,
    ``elementwise``, ``matmul_model``)."""
    return cuda_module() if kind == "cuda" else cpu_module()


# ---- helpers: host arrays -------------------------------------------------------------------------
def nchunks(n: int) -> int:
    """Number of independent chunks a CPU driver splits ``n`` elements into."""
    if n == 0:
        return 1
    import numba  # (already imported by the drivers that use the count)
    per_thread = config.CHUNKS_PER_THREAD * numba.get_num_threads()
    return int(max(1, min(per_thread, -(-n // config.MIN_CHUNK))))


def carrier_for(x, fmt: Format) -> str:
    """``"float32"`` when ``x`` is float32 and every value of ``fmt`` is a float32, else ``"float64"``."""
    return "float32" if x.dtype == np.float32 and fmt.fits_float32 else "float64"


def _in_carrier(x: np.ndarray, fmt: Format) -> tuple[np.ndarray, str]:
    """``(x in its carrier, carrier)`` for a host float32/float64 array (widened exactly)."""
    carrier = carrier_for(x, fmt)
    if carrier == "float64" and x.dtype != np.float64:
        with np.errstate(invalid="ignore"):  # signalling NaNs warn when widened; they stay NaN
            x = x.astype(np.float64)
    return x, carrier


def _bits(x: np.ndarray) -> np.ndarray:
    """Flat integer view of a contiguous float32 (uint32) or float64 (int64) array."""
    return x.reshape(-1).view(np.uint32 if x.dtype == np.float32 else np.int64)


def _is_ml_dtype(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is one of ml_dtypes' floats (bfloat16, float8_*, ...)."""
    return dtype.kind == "V" and type(dtype).__module__.startswith("ml_dtypes") or (
        getattr(dtype.type, "__module__", "").startswith("ml_dtypes")
    )


def _native(x) -> np.ndarray:
    """``x`` as a numpy array in native byte order (big-endian data: same values, converted)."""
    arr = np.asarray(x)
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def _widened_exactly(dtype: np.dtype) -> bool:
    """Whether ``dtype``'s values widen to float64 exactly (integers up to 2^53 checked)."""
    return dtype == np.float16 or dtype.kind in "iub" or _is_ml_dtype(dtype)


def _refuse_dtype(dtype: np.dtype, what: str) -> TypeError:
    """The TypeError of an input that holds no real floating-point or integer values."""
    return TypeError(
        f"{what} must hold real floating-point (or integer) values, got dtype {dtype}"
        + (" (long double would lose precision: convert it to float64 yourself)"
           if dtype.kind == "f" else ""))


def as_float_array(x, what: str = "x") -> np.ndarray:
    """Host ``x`` as a contiguous float32 or float64 array, converting exactly or refusing."""
    arr = _native(x)
    if arr.dtype in (np.float32, np.float64):
        # (np.ascontiguousarray would turn a 0-d array into a 1-d one.)
        return arr if arr.flags.c_contiguous else arr.copy(order="C")
    if _widened_exactly(arr.dtype):
        check_exact_ints(arr, what)
        with np.errstate(invalid="ignore"):  # signalling NaNs warn when widened; they stay NaN
            return arr.astype(np.float64, order="C")
    raise _refuse_dtype(arr.dtype, what)


def _slabs(arr: np.ndarray):
    """Slices of whole rows of ``arr``'s leading axis, about :data:`config.CONVERT_CHUNK`
    elements each (one slice for a 0-d array)."""
    if arr.ndim == 0:
        yield ()
        return
    row = arr.size // arr.shape[0] if arr.shape[0] else 1
    step = max(1, config.CONVERT_CHUNK // max(1, row))
    for lo in range(0, arr.shape[0], step):
        yield slice(lo, lo + step)


def widen_into(arr: np.ndarray, out: np.ndarray, what: str = "x") -> None:
    """Write ``arr`` (a dtype of :func:`_widened_exactly`) into the float64 array ``out`` of its
    shape slab by slab (:func:`_slabs`): no full float64 copy next to the result (an int64
    input of 2^24 elements needed 128 MiB more, and its conversion ran out of cache). Every
    slab is range-checked before the first is written, so a refused input leaves ``out``
    (which may be ``arr``'s own buffer) untouched."""
    for part in _slabs(arr):
        check_exact_ints(arr[part], what)
    with np.errstate(invalid="ignore"):  # signalling NaNs warn when widened; they stay NaN
        for part in _slabs(arr):
            out[part] = arr[part]


_NAMES = ("a", "b", "c")


def check_exact_ints(arr: np.ndarray, what: str) -> None:
    """ValueError if the integer array ``arr`` holds a magnitude beyond 2^53 (float64, the
    kernels' carrier, would round it: the result would describe another number)."""
    # (only 64-bit integers can exceed 2^53; numpy compares them with the bound exactly)
    if arr.dtype.kind in "iu" and arr.dtype.itemsize >= 8 and arr.size and (
            np.any(arr > 2**53) or (arr.dtype.kind == "i" and np.any(arr < -2**53))):
        raise ValueError(f"{what} holds integers beyond 2^53, which float64 cannot hold exactly")


def host_operands(args):
    """Host operands as float64 arrays broadcast to one shape (exact conversions only)."""
    arrs = []
    for name, x in zip(_NAMES, args):
        arr = _native(to_host(x))
        if arr.dtype.kind not in "fiub" and not (arr.dtype.kind == "V"):
            raise TypeError(f"operand {name} must hold real numbers, got dtype {arr.dtype}")
        check_exact_ints(arr, f"operand {name}")
        with np.errstate(invalid="ignore"):
            arrs.append(arr.astype(np.float64, copy=False))
    return np.broadcast_arrays(*arrs)


def read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a``, for a kernel input the kernel only reads: every input reaches
    its kernel with one array type, so one compiled version serves writeable and read-only
    arrays alike (Numba types them apart: a read-only input, from ``setflags``,
    ``np.frombuffer`` of bytes or a shared buffer, compiled every driver anew, ~35 s a mode)."""
    view = a.view()
    view.flags.writeable = False
    return view


def _readonly_flat(x: np.ndarray) -> np.ndarray:
    """A flat, C-contiguous, read-only view (or copy) of ``x`` (see :func:`read_only`)."""
    return read_only(np.ascontiguousarray(x).reshape(-1))


def unwrap_0d(a):
    """A 0-d numpy result as a numpy scalar (as numpy's own ufuncs return it); anything else,
    device arrays included, as it is."""
    return a[()] if isinstance(a, np.ndarray) and a.ndim == 0 else a


# ---- helpers: device arrays -----------------------------------------------------------------------
def to_host(x):
    """``x`` as something numpy reads: a device array is copied to the host (error messages and
    host-side operand checks), anything else is returned as it is."""
    if not is_device_array(x):
        return x
    cuda_module()  # a device array without CUDA: say why, not numpy's conversion error
    return as_device(x).copy_to_host()


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
    carrier = carrier_for(d, fmt)
    if carrier == "float64" and d.dtype != np.float64:
        d = as_device(d, np.float64)
    return d, carrier


def _stats(n, counts, hist, P):
    """The :class:`~fpsim.numerics.stats.Stats` of a driver's host ``counts`` and ``hist`` rows
    (imported here: the statistics module reads the kernels' histogram layout)."""
    from fpsim.numerics.stats import Stats
    return Stats.from_kernel(n, counts, hist, P)


def _stats_len(want_stats: bool) -> int:
    """Histogram row length of the drivers' statistics (0: none gathered)."""
    from fpsim.kernels.histogram import STATS_LEN
    return STATS_LEN if want_stats else 0


# ---- quantize -------------------------------------------------------------------------------------
def _check_out(out, x, carrier: str) -> None:
    """ValueError unless ``out`` can hold the result of ``x`` in ``carrier``."""
    if (out.dtype != carrier or out.shape != x.shape or not out.flags.c_contiguous
            or not out.flags.writeable):
        raise ValueError(
            f"out must be a writeable C-contiguous {carrier} array of shape {x.shape} (the "
            f"{carrier} carrier of this call), got {out.dtype} {out.shape}"
            + ("" if out.flags.c_contiguous else " non-contiguous")
            + ("" if out.flags.writeable else " read-only"))


def _quantize_cpu(x, fmt, mode, overflow, key, srk, want_stats, out):
    """:func:`quantize` of a host array-like: ``cpu.quantize`` (or its serial twin) in chunks.

    float32/float64 inputs are read as they are (read-only ones too); other inputs are widened
    into the result array first (:func:`widen_into`), which is then rounded in place."""
    x = _native(x)
    if not (x.dtype in (np.float32, np.float64) or _widened_exactly(x.dtype)):
        raise _refuse_dtype(x.dtype, "x")
    if out is not None:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
        if np.shares_memory(out, x) and not (
                out.__array_interface__["data"][0] == x.__array_interface__["data"][0]
                and out.strides == x.strides):
            x = x.copy()  # partial overlap: elements would be read after being overwritten
    if x.dtype in (np.float32, np.float64):
        x, carrier = _in_carrier(as_float_array(x), fmt)
        if out is None:
            out = np.empty_like(x)
        else:
            _check_out(out, x, carrier)
    else:
        carrier = "float64"
        if out is None:
            out = np.empty(x.shape, np.float64)
        else:
            _check_out(out, x, carrier)
        widen_into(x, out)
        x = out  # rounded in place: each block is read before it is written (kernels/cpu.py)
    kc = cpu_module()
    # Small arrays take the serial twin: no thread pool start-up next to BLAS (kernels/cpu.py).
    serial = x.size < config.SERIAL_BELOW
    k = 1 if serial else nchunks(x.size)
    counts = np.zeros((k, 5), np.int64)
    hist = np.zeros((k, _stats_len(want_stats)), np.int64)
    P = fmt.params(carrier)
    (kc.quantize_serial if serial else kc.quantize)(read_only(_bits(x)), _bits(out), P, mode,
                                                    overflow, key, srk, counts, hist)
    stats = _stats(x.size, counts, hist, P) if want_stats else None
    return out, stats


def _quantize_cuda(x, fmt, mode, overflow, key, srk, want_stats, out):
    """:func:`quantize` of a device array: ``cuda.quantize``, Stats gathered on the device."""
    if out is not None:
        raise ValueError("out= is not available for device arrays")
    kc = cuda_module()  # first: without CUDA it raises, saying why
    from numba import cuda
    d, carrier = _device_carrier(x, fmt)
    bits_t = np.uint32 if carrier == "float32" else np.int64
    res = cuda.device_array(d.shape, d.dtype)
    counts = cuda.to_device(np.zeros((1, 5), np.int64))
    hist = cuda.to_device(np.zeros((1, _stats_len(want_stats)), np.int64))
    P = fmt.params(carrier)
    kc.quantize(d.reshape(d.size).view(bits_t), res.reshape(res.size).view(bits_t), P, mode,
                overflow, key, srk, counts, hist)
    stats = _stats(d.size, counts.copy_to_host(), hist.copy_to_host(), P) if want_stats else None
    return like(res, x), stats


def quantize(x, fmt: Format, mode: int, overflow: int, key: int, srk: int, want_stats: bool,
             out=None):
    """Round ``x`` (host array-like or device array) into ``fmt``: ``(values, Stats or None)``.

    Values are in the carrier (float32 when ``x`` is float32 and ``fmt`` fits, else float64),
    a numpy array (0-d stays 0-d) or ``x``'s kind of device array. ``out`` (host only) must be a
    writeable C-contiguous array of the result's shape and carrier dtype.
    """
    return DISPATCH["quantize"][kind_of(x)](x, fmt, mode, overflow, key, srk, want_stats, out)


# ---- encode / decode ------------------------------------------------------------------------------
def code_dtype(fmt: Format) -> np.dtype:
    """Smallest unsigned dtype that holds a code of ``fmt`` (uint8/16/32/64)."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if fmt.bits <= np.dtype(dt).itemsize * 8:
            return np.dtype(dt)
    raise AssertionError("formats are at most 64 bits wide")


def _encode_cpu(x, fmt, mode, overflow, key, srk):
    """:func:`encode` of a host array-like: ``cpu.encode``."""
    x, carrier = _in_carrier(as_float_array(x), fmt)
    codes = np.empty(x.shape, np.int64)
    cpu_module().encode(read_only(_bits(x)), codes.reshape(-1), fmt.params(carrier), mode,
                        overflow, key, srk, nchunks(x.size))
    return codes.view(np.uint64).astype(code_dtype(fmt))


def _encode_cuda(x, fmt, mode, overflow, key, srk):
    """:func:`encode` of a device array: ``cuda.encode``."""
    kc = cuda_module()  # first: without CUDA it raises, saying why
    from numba import cuda
    d, carrier = _device_carrier(x, fmt)
    codes = cuda.device_array(d.shape, np.int64)
    kc.encode(d.reshape(d.size).view(np.uint32 if carrier == "float32" else np.int64),
              codes.reshape(codes.size), fmt.params(carrier), mode, overflow, key, srk)
    return like(codes, x)


def encode(x, fmt: Format, mode: int, overflow: int, key: int, srk: int):
    """Codes of ``x`` rounded into ``fmt``, same shape: numpy codes of :func:`code_dtype`, or
    int64 codes as ``x``'s kind of device array (a narrower dtype would need another pass)."""
    return DISPATCH["encode"][kind_of(x)](x, fmt, mode, overflow, key, srk)


def _code_range_error(value: int, where, fmt: Format) -> ValueError:
    """The ValueError of a code outside ``0 .. 2^bits - 1``."""
    return ValueError(f"code {value} at index {where} is outside 0..{(1 << fmt.bits) - 1} "
                      f"of the {fmt.bits}-bit format {fmt}")


def host_codes(codes, fmt: Format) -> np.ndarray:
    """Host integer codes as a C-contiguous int64 array (uint64 codes reinterpreted), range
    checked."""
    arr = np.asarray(codes)
    if arr.size == 0 and isinstance(codes, (list, tuple)):
        arr = arr.astype(np.int64)  # (numpy reads an empty list as float64: it holds no float)
    if arr.dtype.kind in "fO" and isinstance(codes, (list, tuple)):
        # numpy turns a list holding ints >= 2^63 into float64 (or object beyond 2^64): read a
        # list of integers as integers. A float in the list stays a float and is refused
        # below (converting it would truncate 15360.9 to the code 15360).
        values = np.asarray(codes, dtype=object)
        if values.size and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                               for v in values.flat):
            # (the range check below needs uint64: first the codes uint64 cannot hold)
            outside = (values < 0) | (values >= 1 << 64)
            if outside.any():
                where = np.unravel_index(int(np.argmax(outside)), values.shape)
                where = tuple(int(i) for i in where)
                raise _code_range_error(int(values[where]), where, fmt)
            arr = values.astype(np.uint64)
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
        raise _code_range_error(int(arr[where]), where, fmt)
    return arr64


def _decode_cpu(codes, fmt):
    """:func:`decode` of host codes: ``cpu.decode``."""
    c64 = host_codes(codes, fmt)
    out = np.empty(c64.shape, np.float64)
    cpu_module().decode(read_only(c64.reshape(-1)), _bits(out), fmt.params("float64"),
                        nchunks(c64.size))
    return out


def _decode_cuda(codes, fmt):
    """:func:`decode` of device codes (range-checked on the host): ``cuda.decode``."""
    kc = cuda_module()  # first: without CUDA it raises, saying why
    from numba import cuda
    d = as_device(codes)
    if d.dtype.kind not in "iu":
        raise TypeError(f"codes must be integers, got dtype {d.dtype}")
    # The range check needs the values; codes are small next to what they decode to. The host
    # check is the CPU's, so both backends refuse the same codes with the same message.
    c64 = host_codes(d.copy_to_host(), fmt)
    out = cuda.device_array(d.shape, np.float64)
    kc.decode(cuda.to_device(c64.reshape(-1)), out.reshape(out.size).view(np.int64),
              fmt.params("float64"))
    return like(out, codes)


def decode(codes, fmt: Format):
    """float64 values of integer codes of ``fmt`` (numpy, or ``codes``' kind of device array).

    Raises:
        TypeError: the codes are not integers.
        ValueError: a code is out of range (the first offending index is named).
    """
    return DISPATCH["decode"][kind_of(codes)](codes, fmt)


# ---- elementwise ops ------------------------------------------------------------------------------
def _elementwise_cpu(op, args, fmt, W, mode, overflow, key, srk, tin_before, want_flags,
                     want_stats):
    """:func:`elementwise` of host operands (broadcast): ``cpu.elementwise``."""
    ops = host_operands(args)
    shape = ops[0].shape
    flat = [_readonly_flat(o) for o in ops]
    while len(flat) < 3:
        flat.append(flat[0])
    n = flat[0].size
    out = np.empty(n, np.float64)
    fl = np.empty(n, np.uint8)
    odd = np.empty(n if want_stats else 0, np.float64)
    bad = np.full(nchunks(n), -1, np.int64)
    cpu_module().elementwise(op, flat[0], flat[1], flat[2], out, fl, odd, fmt.params("float64"),
                             W.params("float64"), mode, overflow, key, srk, tin_before, bad)
    if np.any(bad >= 0):
        return None
    stats = None
    if want_stats:
        # Rounding the rounded-to-odd exact results again is the op's rounding (same bits, same
        # random bits): its events and the exact results' histogram are the op's Stats.
        stats = _quantize_cpu(odd, fmt, mode, overflow, key, srk, True, None)[1]
    return out.reshape(shape), (fl.reshape(shape) if want_flags else None), stats


def _elementwise_cuda(op, args, fmt, W, mode, overflow, key, srk, tin_before, want_flags,
                      want_stats):
    """:func:`elementwise` of same-shape device operands: ``cuda.elementwise``."""
    if want_stats:
        raise ValueError("stats=True is not available for device operands (flags are)")
    kc = cuda_module()  # first: without CUDA it raises, saying why
    from numba import cuda
    ds = [as_device(o) for o in args]
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
    odd = cuda.device_array(0, np.float64)
    bad = cuda.to_device(np.full(1, -1, np.int64))
    kc.elementwise(op, flat[0], flat[1], flat[2], out, fl, odd, fmt.params("float64"),
                   W.params("float64"), mode, overflow, key, srk, tin_before, bad)
    if int(bad.copy_to_host()[0]) >= 0:
        return None
    first = args[0]
    return (like(out.reshape(shape), first),
            like(fl.reshape(shape), first) if want_flags else None, None)


def elementwise(op: int, args, fmt: Format, W: Format, mode: int, overflow: int, key: int,
                srk: int, tin_before: int, want_flags: bool, want_stats: bool):
    """Elementwise ``op`` (a :mod:`fpsim.kernels.arith` op code) on the operands ``args``
    (host operands broadcast; device operands must share one shape), rounded into ``fmt``;
    ``W`` is the tininess format (:func:`fpsim.numerics.arith._wide`).

    Returns:
        ``(values, flags or None, Stats or None)``: float64 values and uint8 flags as numpy
        arrays or the first operand's kind of device array; or None when an operand holds a
        non-value of ``fmt`` (the caller names it).

    Raises:
        ValueError: ``want_stats`` for device operands, or device operands of different shapes.
    """
    return DISPATCH["elementwise"][kind_of(*args)](op, args, fmt, W, mode, overflow, key, srk,
                                                   tin_before, want_flags, want_stats)


# ---- matmul under an accumulation model -----------------------------------------------------------
def _matmul_cpu(a, b, m, fast):
    """:func:`matmul` of host operands: fast paths or ``cpu.matmul_model``."""
    # The host path is the accumulation module's: operand scans, the BLAS and sequential fast
    # paths (CPU-only strategies), then the model driver drivers("cpu").matmul_model.
    from fpsim.numerics import accumulation
    return accumulation.host_matmul(a, b, m, fast)


def _matmul_cuda(a, b, m, fast):
    """:func:`matmul` of device operands: ``cuda.matmul_model`` (no fast path)."""
    # Operands are checked on the host (the CPU's checks and messages): device matmuls are for
    # validation, not speed; the model kernel runs every order, Kahan and exact sums, no fast path.
    if not (is_device_array(a) and is_device_array(b)):
        raise TypeError("matmul of a device array needs both operands on the device")
    kc = cuda_module()
    from numba import cuda
    from fpsim.numerics import accumulation
    A, B, _, _ = accumulation.checked_operands(to_host(a), to_host(b), m)
    args = accumulation.model_args(m)
    out = cuda.device_array((A.shape[0], B.shape[1]), np.float64)
    kc.matmul_model(cuda.to_device(A), cuda.to_device(np.ascontiguousarray(B.T)), out, *args)
    return like(out, a)


def matmul(a, b, m, fast: bool = True):
    """``a @ b`` under the accumulation model ``m`` (:class:`fpsim.numerics.accumulation._Model`):
    a float64 (M, N) numpy array, or ``a``'s kind of device array (both operands on the device;
    ``fast`` is for the host's fast paths)."""
    return DISPATCH["matmul"][kind_of(a, b)](a, b, m, fast)


# ---- matmul through a tensor-core model -----------------------------------------------------------
def _tc_matmul_cpu(a, b, tc, c, parallel):
    """:func:`tc_matmul` of host operands: ``cpu.tc_matmul``."""
    from fpsim.numerics import tensor_core
    return tensor_core.host_tc_matmul(a, b, tc, c, parallel)


def _tc_matmul_cuda(a, b, tc, c, parallel):
    """:func:`tc_matmul` of device operands: checked and split on the host (the CPU's checks
    and messages), then ``cuda.tc_matmul``, one thread per output element."""
    if not (is_device_array(a) and is_device_array(b)):
        raise TypeError("matmul of a device array needs both operands on the device")
    kc = cuda_module()
    from numba import cuda
    from fpsim.numerics import tensor_core
    arrays, shape = tensor_core.prepare(to_host(a), to_host(b), tc,
                                        None if c is None else to_host(c))
    out = cuda.device_array(arrays[-1].shape, np.float64)
    kc.tc_matmul(*(cuda.to_device(x) for x in arrays), out, *tc.kernel_args())
    return like(out.reshape(shape), a)


def tc_matmul(a, b, tc, c=None, parallel: bool = True):
    """``c + a @ b`` through the tensor-core model ``tc``
    (:class:`fpsim.numerics.tensor_core.TensorCore`): a float64 numpy array, or ``a``'s kind of
    device array (both operands on the device)."""
    return DISPATCH["tc_matmul"][kind_of(a, b)](a, b, tc, c, parallel)


#: op -> {backend kind -> implementation}: THE dispatch table. Every entry of one op takes the
#: same arguments; the public function of the op (above) picks the entry by :func:`kind_of`.
DISPATCH = {
    "quantize": {"cpu": _quantize_cpu, "cuda": _quantize_cuda},
    "encode": {"cpu": _encode_cpu, "cuda": _encode_cuda},
    "decode": {"cpu": _decode_cpu, "cuda": _decode_cuda},
    "elementwise": {"cpu": _elementwise_cpu, "cuda": _elementwise_cuda},
    "matmul": {"cpu": _matmul_cpu, "cuda": _matmul_cuda},
    "tc_matmul": {"cpu": _tc_matmul_cpu, "cuda": _tc_matmul_cuda},
}
