"""``fpsim validate hardware``: the GPU's own fp16 / bf16 arithmetic and conversions against the
emulator, exhaustively, on the device (needs a CUDA GPU; see docs/gpu.md).

- Binary ops (add, sub, mul, div): all 2^32 pairs of 16-bit codes.
- fma: all 2^32 pairs (a, b) for each addend c of a fixed set (±0, ±1, the smallest
  subnormal, the largest value, +Inf).
- convert: all 2^32 float32 bit patterns into the format (round to nearest even).

Each result is compared as a code of the format; two NaNs match. Reports mismatch counts, the
first examples in hex, and the time.
"""

from __future__ import annotations

import sys
import time

import numpy as np

#: Addends of the fma check, as codes: +0, -0, 1, -1, smallest subnormal, max, +Inf.
FMA_ADDENDS = {"float16": (0x0000, 0x8000, 0x3C00, 0xBC00, 0x0001, 0x7BFF, 0x7C00),
               "bfloat16": (0x0000, 0x8000, 0x3F80, 0xBF80, 0x0001, 0x7F7F, 0x7F80)}
CHUNK = 1 << 26
OPS = ("add", "sub", "mul", "div", "fma", "convert")


def _masks(fmt):
    return ((1 << fmt.exp_bits) - 1) << fmt.man_bits, (1 << fmt.man_bits) - 1


def _setup(name):
    from numba import cuda

    from fpsim.numerics import backend
    from fpsim.numerics.formats import format as fmt_of
    from fpsim.kernels import cuda_hw as hw
    backend.cuda_module()
    fmt = fmt_of(name)
    if fmt.name == "bfloat16" and hw.bf16 is None:
        raise RuntimeError(f"numba.cuda.bf16 is not available ({hw.BF16_ERROR})")
    mism = cuda.to_device(np.zeros(1, np.int64))
    first = cuda.to_device(np.full(hw.KEEP, -1, np.int64))
    return cuda, hw, fmt, mism, first


def run_op(name: str, op: str, chunk: int = CHUNK, limit: int | None = None) -> dict:
    """Compare the hardware ``op`` of format ``name`` with the emulator over all pairs."""
    cuda, hw, fmt, mism, first = _setup(name)
    P = fmt.params("float64")
    from fpsim.numerics.arith import _wide
    W = _wide(fmt).params("float64")  # the tininess format of the elementwise kernels
    em, mm = _masks(fmt)
    total = (1 << 32) if limit is None else int(limit)
    codes = cuda.device_array(chunk, np.uint16)
    if fmt.name == "float16":
        table = cuda.to_device(np.arange(1 << 16, dtype=np.uint16).view(np.float16))
        out16 = cuda.device_array(chunk, np.float16)
    cs = FMA_ADDENDS[fmt.name] if op == "fma" else (0,)
    t0 = time.perf_counter()
    for c in cs:
        for k0 in range(0, total, chunk):
            n = min(chunk, total - k0)
            if fmt.name == "float16":
                hw.fp16_op[hw.blocks(n), hw.THREADS](hw.HW_OPS[op], k0, n, c, table, out16)
                got = out16.view(np.uint16)
            else:
                hw.bf16_op[hw.blocks(n), hw.THREADS](hw.HW_OPS[op], k0, n, c, codes)
                got = codes
            hw.compare_op[hw.blocks(n), hw.THREADS](hw.HW_OPS[op], k0, n, c, got, P, W, em, mm,
                                                    mism, first)
    cuda.synchronize()
    secs = time.perf_counter() - t0
    ex = [int(k) for k in first.copy_to_host() if k >= 0]
    return {"format": fmt.name, "op": op, "cases": total * len(cs),
            "mismatches": int(mism.copy_to_host()[0]), "seconds": secs,
            "examples": [f"a=0x{(k >> 16) & 0xFFFF:04x} b=0x{k & 0xFFFF:04x}" for k in ex]}


def run_convert(name: str, chunk: int = CHUNK, limit: int | None = None) -> dict:
    """Compare the hardware float32 -> ``name`` conversion with the emulator."""
    cuda, hw, fmt, mism, first = _setup(name)
    P = fmt.params("float32")
    em, mm = _masks(fmt)
    total = (1 << 32) if limit is None else int(limit)
    buf = cuda.device_array(chunk, np.uint32)
    out16 = cuda.device_array(chunk, np.float16)
    codes = cuda.device_array(chunk, np.uint16)
    t0 = time.perf_counter()
    for k0 in range(0, total, chunk):
        n = min(chunk, total - k0)
        hw.iota32[hw.blocks(n), hw.THREADS](k0, n, buf)
        if fmt.name == "float16":
            hw.fp16_convert[hw.blocks(n), hw.THREADS](buf.view(np.float32), n, out16)
            got = out16.view(np.uint16)
        else:
            hw.bf16_convert[hw.blocks(n), hw.THREADS](buf.view(np.float32), n, codes)
            got = codes
        hw.compare_convert[hw.blocks(n), hw.THREADS](k0, n, got, P, em, mm, mism, first)
    cuda.synchronize()
    secs = time.perf_counter() - t0
    ex = [f"x=0x{int(k):08x}" for k in first.copy_to_host() if k >= 0]
    return {"format": fmt.name, "op": "convert", "cases": total, "seconds": secs,
            "mismatches": int(mism.copy_to_host()[0]), "examples": ex}


def add_arguments(parser) -> None:
    """Describe ``fpsim validate hardware`` on ``parser`` and add its options (read by
    :func:`run`)."""
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("--format", default="float16,bfloat16",
                        help="comma-separated: float16, bfloat16 (default both)")
    parser.add_argument("--op", default=",".join(OPS), help="comma-separated: " + ", ".join(OPS))
    parser.add_argument("--limit", type=int, default=None,
                        help="check only the first N pairs / inputs (default: all 2^32)")


def main(argv=None) -> int:
    """Program entry: ``python -m fpsim.validate.hardware [...]`` is ``fpsim validate hardware
    ...`` (``argv`` defaults to ``sys.argv[1:]``)."""
    from fpsim.cli import main as cli_main  # here, not at the top: the cli imports this module

    return cli_main(["validate", "hardware", *(sys.argv[1:] if argv is None else argv)])


def run(args) -> int:
    """Run ``fpsim validate hardware`` with the options of :func:`add_arguments` (``format``,
    ``op``, ``limit``): one line per format and op; 0 when nothing mismatched, 1 on a mismatch
    or a check that could not run, 2 for bad input or no usable CUDA device."""
    from fpsim.numerics.formats import format as fmt_of
    try:
        names = [fmt_of(f).name for f in args.format.split(",") if f]
    except ValueError as e:
        print(f"fpsim validate hardware: error: {e}", file=sys.stderr)
        return 2
    bad = [n for n in names if n not in ("float16", "bfloat16")]
    if bad:
        print(f"fpsim validate hardware: error: no hardware path for {bad} (float16 and bfloat16 "
              "have one)", file=sys.stderr)
        return 2
    ops = [o for o in args.op.split(",") if o]
    bad = [o for o in ops if o not in OPS]
    if bad:
        print(f"fpsim validate hardware: error: unknown op(s) {bad}; choose from {OPS}",
              file=sys.stderr)
        return 2
    try:
        from numba import cuda

        from fpsim.numerics import backend
        backend.cuda_module()
        dev = cuda.get_current_device()
        print(f"device: {dev.name.decode() if isinstance(dev.name, bytes) else dev.name}, "
              f"compute capability {dev.compute_capability}")
    except RuntimeError as e:
        print(f"fpsim validate hardware: error: {e}", file=sys.stderr)
        return 2
    failed = False
    for name in names:
        for op in ops:
            try:
                r = (run_convert(name, limit=args.limit) if op == "convert"
                     else run_op(name, op, limit=args.limit))
            except RuntimeError as e:
                print(f"{name} {op}: not run ({e})", flush=True)
                failed = True
                continue
            print(f"{name} {op}: {r['cases']} cases, {r['mismatches']} mismatches, "
                  f"{r['seconds']:.2f} s" + (f"; first: {', '.join(r['examples'])}"
                                             if r["examples"] else ""), flush=True)
            failed |= r["mismatches"] > 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
