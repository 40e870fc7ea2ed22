"""torch's own CUDA casts from float32 (``x.to(dtype)``) against fpsim, over all 2^32 float32
bit patterns, on the device (needs a CUDA GPU and torch; run by gpu_check.sh).

For float16, bfloat16, float8_e4m3fn and float8_e5m2, each chunk of float32 patterns is cast by
torch and encoded by fpsim (round to nearest even, each overflow policy); the codes are
compared, two NaNs matching whatever their codes. The policy with no mismatch is the one
torch's cast follows. Reports counts, the first mismatching inputs in hex and the time.

Run: ``PYTHONPATH=. python benchmarks/gpu_casts.py [--limit N] [--device cpu] [--formats ...]``
(``--device cpu``: torch's CPU casts, which differ: see docs/gpu.md).
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=1 << 32, help="patterns (default 2^32)")
    parser.add_argument("--start", type=int, default=0, help="first pattern (default 0)")
    parser.add_argument("--chunk", type=int, default=1 << 28)
    parser.add_argument("--device", default="cuda", help="cuda, or cpu (torch's CPU casts)")
    parser.add_argument("--formats", default="float16,bfloat16,float8_e4m3fn,float8_e5m2")
    args = parser.parse_args(argv)
    import torch

    import fpsim
    dtypes = {"float16": torch.float16, "bfloat16": torch.bfloat16,
              "float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}
    dev = args.device
    print(f"device: {torch.cuda.get_device_name() if dev == 'cuda' else dev}; "
          f"torch {torch.__version__}", flush=True)
    print("| torch cast | fpsim overflow | inputs | mismatches | first mismatching inputs | s |")
    print("|---|---|---|---|---|---|")
    for name in args.formats.split(","):
        dtype = dtypes[name]
        width = torch.finfo(dtype).bits
        code_view = torch.uint8 if width == 8 else torch.int16
        for overflow in ("ieee", "saturate"):
            bad, first, t0 = 0, [], time.perf_counter()
            end = args.start + args.limit
            for k0 in range(args.start, end, args.chunk):
                n = min(args.chunk, end - k0)
                bits = torch.arange(k0, k0 + n, dtype=torch.int64, device=dev)
                x = bits.to(torch.int32).view(torch.float32)  # (wraps to the same 32 bits)
                hw = x.to(dtype)
                hw_codes = hw.view(code_view).to(torch.int64) & ((1 << width) - 1)
                codes = torch.as_tensor(fpsim.encode(x, name, "rne", overflow), device=dev).to(
                    torch.int64)  # (int64 from the device kernels already)
                # fpsim's codes read back by torch (exact), to see which are NaNs
                vals = codes.to(torch.int16 if width == 16 else torch.uint8).view(dtype)
                miss = (hw_codes != codes) & ~(torch.isnan(hw.float()) & torch.isnan(vals.float()))
                c = int(miss.sum())
                if c and len(first) < 4:
                    first += [f"0x{int(v) & 0xFFFFFFFF:08x}->torch 0x{int(h):x} fpsim 0x{int(f):x}"
                              for v, h, f in zip(bits[miss][:4].tolist(),
                                                 hw_codes[miss][:4].tolist(),
                                                 codes[miss][:4].tolist())][:4 - len(first)]
                bad += c
            print(f"| {name} | {overflow} | {args.limit} | {bad} | {', '.join(first)} | "
                  f"{time.perf_counter() - t0:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
