"""Compile every CUDA kernel of fpsim to PTX without a GPU (numba-cuda's ``compile_ptx``, for
compute capability 9.0), with the argument types the drivers launch them with: a kernel that
numba-cuda cannot type or lower fails here, on any machine with numba-cuda and its NVVM
(``pip install "numba-cuda[cu12]"``), instead of on the GPU. The simulator cannot show this:
it runs kernels as Python, where every NumPy function exists.

The argument types are taken from real calls: each CPU driver twin is wrapped to record its
arguments while small fpsim calls run, and those arguments (the CUDA drivers take the same
ones) are mapped to their kernels' parameter lists.

Usage: ``python tests/_cuda_compile_check.py`` (exit status 0: every kernel compiled; 2:
numba-cuda or NVVM missing, with the reason). Run by test_cuda_compile.py.
"""

from __future__ import annotations

import sys
import traceback

import numpy as np


def _captured_driver_calls() -> dict:
    """``{driver: [args, ...]}`` of the CPU drivers during a few small fpsim calls that reach
    every driver family the CUDA module has a twin of."""
    import fpsim
    from fpsim.kernels import cpu
    calls: dict = {}
    names = ("quantize", "encode", "decode", "elementwise", "matmul_model", "tc_matmul")
    originals = {n: getattr(cpu, n) for n in names}

    def wrap(name):
        def recorder(*args):
            calls.setdefault(name, []).append(args)
            return originals[name](*args)
        return recorder
    for n in names:
        setattr(cpu, n, wrap(n))
    try:
        x = np.linspace(-3, 3, 1 << 17)  # (above the serial drivers' threshold)
        for dtype in (np.float32, np.float64):
            fpsim.quantize(x.astype(dtype), "bfloat16", "sr", stats=True)
            fpsim.quantize(x.astype(dtype), "e4m3", "rne")
            fpsim.decode(fpsim.encode(x.astype(dtype), "e5m2", "rtz"), "e5m2")
        a = fpsim.quantize(x, "float16")
        fpsim.fma(a, a, a, "float16", "rto", flags=True)
        fpsim.sqrt(np.abs(a), "float16", "sr")
        A = fpsim.quantize(np.linspace(-2, 2, 64 * 80).reshape(64, 80), "float16")
        B = A.T.copy()
        fpsim.matmul(A, B, fmt="float16", accum="bfloat16", product="float8_e5m2",
                     order="blocked", block=4, rounding="sr", fast=False)
        fpsim.matmul(A, B, fmt="float16", accum="float16", compensated=True, fast=False)
        for preset in ("H100-fp16", "B200-e5m2", "A100-fp16-fp16out"):
            tc = fpsim.tensor_core(preset)
            q = fpsim.quantize(A, tc.input_format, overflow="saturate")
            fpsim.matmul(q, q.T.copy(), preset=preset, c=np.zeros((64, 64)))
    finally:
        for n in names:
            setattr(cpu, n, originals[n])
    return calls


def _contiguous(args):
    """Arrays as the device has them (C-contiguous copies), other arguments unchanged."""
    return tuple(np.ascontiguousarray(a) if isinstance(a, np.ndarray) else a for a in args)


def _kernel_launches(calls) -> list:
    """``[(label, kernel, args)]``: each captured driver call as its kernel's arguments."""
    from fpsim.kernels import cuda as kc
    out = []
    for args in calls.get("quantize", []):
        xb, outb, P, mode, overflow, key, srk, counts, hist = args
        out.append(("quantize", kc._quantize_kernel,
                    (xb, outb, P, mode, overflow, np.uint64(key), srk, counts, hist)))
    for args in calls.get("encode", []):
        xb, codes, P, mode, overflow, key, srk = args[:7]
        out.append(("encode", kc._encode_kernel, (xb, codes, P, mode, overflow, np.uint64(key),
                                                  srk)))
    for args in calls.get("decode", []):
        out.append(("decode", kc._decode_kernel, args[:3]))
    for args in calls.get("elementwise", []):
        a = list(args)
        a[11] = np.uint64(a[11])
        out.append(("elementwise", kc._elementwise_kernel, tuple(a)))
    for args in calls.get("matmul_model", []):
        A, BT, res = args[:3]
        scratch = np.zeros((4, A.shape[1]))
        rest = list(args[3:15])
        rest[10] = np.uint64(rest[10])  # key
        out.append(("matmul_model", kc._matmul_kernel,
                    (A, BT, res, 0, scratch, scratch.copy(), *rest)))
    for args in calls.get("tc_matmul", []):
        out.append(("tc_matmul", kc._tc_kernel, args))
    return out


def _hardware_launches() -> list:
    """The hardware-validation kernels (``fpsim validate hardware``) with their argument
    types."""
    from fpsim.kernels import cuda_hw as hw
    from fpsim.numerics.arith import _wide
    from fpsim.numerics.formats import format as fmt_of
    n = 8
    u16, i64 = np.zeros(n, np.uint16), np.zeros(n, np.int64)
    out = []
    for name in ("float16", "bfloat16"):
        f = fmt_of(name)
        P, W, P32 = f.params("float64"), _wide(f).params("float64"), f.params("float32")
        out.append((f"compare_op {name}", hw.compare_op,
                    (2, 0, n, 0, u16, P, W, 0x7C00, 0x3FF, i64[:1], i64)))
        out.append((f"compare_convert {name}", hw.compare_convert,
                    (0, n, u16, P32, 0x7C00, 0x3FF, i64[:1], i64)))
    out.append(("fp16_op", hw.fp16_op, (2, 0, n, 0, np.zeros(n, np.float16),
                                        np.zeros(n, np.float16))))
    out.append(("fp16_convert", hw.fp16_convert, (np.zeros(n, np.float32), n,
                                                  np.zeros(n, np.float16))))
    out.append(("iota32", hw.iota32, (0, n, np.zeros(n, np.uint32))))
    if hw.bf16 is not None:
        out.append(("bf16_op", hw.bf16_op, (2, 0, n, 0, u16)))
        out.append(("bf16_convert", hw.bf16_convert, (np.zeros(n, np.float32), n, u16)))
    return out


def _pretend_device(cc) -> None:
    """Without a GPU, numba-cuda's device functions (``@cuda.jit(device=True)``) still ask the
    current device for its compute capability when a kernel calling them is typed: answer
    ``cc`` (compile_ptx compiles for the ``cc`` it is given anyway)."""
    from numba.cuda import dispatcher

    class _Device:
        compute_capability = cc
    dispatcher.get_current_device = lambda: _Device()


def main() -> int:
    """Compile every launch's kernel for its argument types; print one line each."""
    try:
        import importlib.util
        if importlib.util.find_spec("numba_cuda") is None:  # (numba's own, older numba.cuda
            raise ImportError("the numba-cuda package is not installed")  # is not checked)
        import fpsim.kernels.cuda  # noqa: F401  (first: the np.row_stack shim)
        from numba import cuda, typeof
        from numba.cuda.cudadrv import nvvm
        if not nvvm.is_available():
            raise ImportError("NVVM (libnvvm) is not available")
    except ImportError as e:
        print(f"SKIP: numba-cuda with NVVM is needed ({type(e).__name__}: {e})")
        return 2
    if not cuda.is_available():
        _pretend_device((9, 0))
    launches = _kernel_launches(_captured_driver_calls()) + _hardware_launches()
    seen, failed = set(), 0
    for label, kernel, args in launches:
        sig = tuple(typeof(a) for a in _contiguous(args))
        if (kernel, sig) in seen:
            continue
        seen.add((kernel, sig))
        try:
            cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
            print(f"ok   {label} {kernel.py_func.__name__}", flush=True)
        except Exception:  # noqa: BLE001 - report every kernel, not just the first failure
            failed += 1
            tb = traceback.format_exc().strip().splitlines()
            print(f"FAIL {label} {kernel.py_func.__name__}: {tb[-1][:300]}", flush=True)
    families = {label.split()[0] for label, _, _ in launches}
    print(f"{len(seen)} kernel signatures compiled, {failed} failed; families: "
          f"{', '.join(sorted(families))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
