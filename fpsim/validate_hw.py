"""``fpsim validate hardware``: the GPU's own fp16 arithmetic and conversions against the
emulator, exhaustively, on the device (needs a CUDA GPU; see docs/gpu.md).

- Binary ops (add, sub, mul, div): all 2^32 pairs of float16 codes.
- fma: all 2^32 pairs (a, b) with c from a fixed set of addends (zeros, ±1, the smallest
  subnormal, the largest value, Inf), 2^32 triples each.
- convert: all 2^32 float32 bit patterns to float16 (round to nearest even).

Each result is compared as a float16 code; two NaNs match. Reports mismatch counts, the first
examples in hex, and the time.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

#: Addends c of the fma check (float16 codes): +0, -0, 1, -1, smallest subnormal, max, +Inf.
FMA_ADDENDS = (0x0000, 0x8000, 0x3C00, 0xBC00, 0x0001, 0x7BFF, 0x7C00)
CHUNK = 1 << 26


def run_op(op: str, chunk: int = CHUNK, limit: int | None = None, c_codes=FMA_ADDENDS) -> dict:
    """Compare the hardware fp16 ``op`` with the emulator over all (or ``limit``) pairs."""
    from numba import cuda

    from . import backend
    from .formats import format as fmt_of
    from .kernels import cuda_hw as hw
    backend.cuda_module()
    f16 = fmt_of("float16")
    P = f16.params("float64")
    W = type(f16)(11, 10, specials="ieee").params("float64")  # same precision, float64 range
    total = (1 << 32) if limit is None else int(limit)
    table = cuda.to_device(np.arange(1 << 16, dtype=np.uint16).view(np.float16))
    out = cuda.device_array(chunk, np.float16)
    mism = cuda.to_device(np.zeros(1, np.int64))
    first = cuda.to_device(np.full(hw.KEEP, -1, np.int64))
    cs = c_codes if op == "fma" else (0,)
    t0 = time.perf_counter()
    for c in cs:
        for k0 in range(0, total, chunk):
            n = min(chunk, total - k0)
            hw.fp16_op[hw.blocks(n), hw.THREADS](hw.HW_OPS[op], k0, n, c, table, out)
            hw.compare_op[hw.blocks(n), hw.THREADS](hw.HW_OPS[op], k0, n, c, out.view(np.uint16),
                                                    P, W, mism, first)
    cuda.synchronize()
    secs = time.perf_counter() - t0
    count = int(mism.copy_to_host()[0])
    ex = [int(k) for k in first.copy_to_host() if k >= 0]
    examples = [f"a=0x{(k >> 16) & 0xFFFF:04x} b=0x{k & 0xFFFF:04x}" for k in ex]
    return {"op": op, "cases": total * len(cs), "mismatches": count, "examples": examples,
            "seconds": secs}


def run_convert(chunk: int = CHUNK, limit: int | None = None) -> dict:
    """Compare the hardware float32 -> float16 conversion with the emulator."""
    from numba import cuda

    from . import backend
    from .formats import format as fmt_of
    from .kernels import cuda_hw as hw
    backend.cuda_module()
    P = fmt_of("float16").params("float32")
    total = (1 << 32) if limit is None else int(limit)
    buf = cuda.device_array(chunk, np.uint32)
    out = cuda.device_array(chunk, np.float16)
    mism = cuda.to_device(np.zeros(1, np.int64))
    first = cuda.to_device(np.full(hw.KEEP, -1, np.int64))
    t0 = time.perf_counter()
    for k0 in range(0, total, chunk):
        n = min(chunk, total - k0)
        hw.iota32[hw.blocks(n), hw.THREADS](k0, n, buf)
        hw.fp16_convert[hw.blocks(n), hw.THREADS](buf.view(np.float32), n, out)
        hw.compare_convert[hw.blocks(n), hw.THREADS](k0, n, out.view(np.uint16), P, mism, first)
    cuda.synchronize()
    secs = time.perf_counter() - t0
    ex = [f"x=0x{int(k):08x}" for k in first.copy_to_host() if k >= 0]
    return {"op": "convert", "cases": total, "mismatches": int(mism.copy_to_host()[0]),
            "examples": ex, "seconds": secs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fpsim validate hardware",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", default="float16", help="float16 (bfloat16: not yet)")
    parser.add_argument("--op", default="add,sub,mul,div,fma,convert",
                        help="comma-separated: add, sub, mul, div, fma, convert")
    parser.add_argument("--limit", type=int, default=None,
                        help="check only the first N pairs / inputs (default: all 2^32)")
    args = parser.parse_args(argv)
    if args.format not in ("float16", "fp16", "half"):
        print(f"fpsim validate hardware: error: --format {args.format}: only float16 has a "
              "hardware path so far (numba.cuda.fp16)", file=sys.stderr)
        return 2
    ops = [o for o in args.op.split(",") if o]
    bad = [o for o in ops if o not in ("add", "sub", "mul", "div", "fma", "convert")]
    if bad:
        print(f"fpsim validate hardware: error: unknown op(s) {bad}", file=sys.stderr)
        return 2
    try:
        from numba import cuda

        from . import backend
        backend.cuda_module()
        dev = cuda.get_current_device()
        print(f"device: {dev.name.decode() if isinstance(dev.name, bytes) else dev.name}, "
              f"compute capability {dev.compute_capability}")
    except RuntimeError as e:
        print(f"fpsim validate hardware: error: {e}", file=sys.stderr)
        return 2
    failed = False
    for op in ops:
        r = run_convert(limit=args.limit) if op == "convert" else run_op(op, limit=args.limit)
        print(f"float16 {op}: {r['cases']} cases, {r['mismatches']} mismatches, "
              f"{r['seconds']:.2f} s" + (f"; first: {', '.join(r['examples'])}"
                                         if r["examples"] else ""), flush=True)
        failed |= r["mismatches"] > 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
