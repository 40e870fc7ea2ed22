"""The tensor-core models against the device's own cuBLAS GEMMs, through torch (needs a CUDA
GPU for real results; run by gpu_check.sh).

For each input format, output and K (16 to 4096), M = N = 128, two operand distributions
("normal": standard normal values rounded to the input format; "wide": the same times 2^k,
k uniform in -10 .. 10, so that alignment shifts and subnormal products occur), the GPU computes
``d = a @ b`` (beta = 0) and :func:`fpsim.validate_gemm` with ``fit=True`` ranks every preset
whose formats hold the operands. Ways of computing:

- ``fp32-out``: ``torch.mm(a, b, out_dtype=torch.float32)`` on fp16 / bf16 operands
  (cuBLAS GemmEx, fp32 accumulation and output);
- ``fp16-out``: ``torch.mm`` of float16 operands with fp32 accumulation (reduced-precision
  reduction off), compared also with "the fp32-output model, then one RNE into binary16";
- ``fp16-acc``: float16 with ``torch.backends.cuda.matmul.allow_fp16_accumulation`` (cuBLAS's
  16-bit compute type), against the ``-fp16out`` presets;
- ``fp8``: ``torch._scaled_mm`` of E4M3 / E5M2 operands, unit scales, fp32 output, with and
  without ``use_fast_accum``.

A way torch does not offer on this build is reported as not run, with the error.

Run: ``PYTHONPATH=. python benchmarks/gpu_gemm.py [--device cuda] [--json FILE]``; with
``--device cpu`` the plumbing runs on torch's CPU GEMMs (a check of this script, not of a GPU).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

KS = (16, 64, 256, 1024, 4096)
GPUS = ("B200", "H200", "H100", "A100", "V100")


def _operands(torch, dtype, shape, wide, gen):
    """float64 normals (times 2^k with ``wide``) rounded to ``dtype`` by torch (RNE)."""
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    if wide:
        x = x * torch.exp2(torch.randint(-10, 11, shape, generator=gen).double())
    return x.to(dtype)


def _gemm(torch, way, a, b, fast_accum=False):
    """The device's product of ``a`` (M, K) and ``b`` (K, N) the way ``way`` says."""
    if way == "fp32-out":
        return torch.mm(a, b, out_dtype=torch.float32)
    if way in ("fp16-out", "fp16-acc"):
        m = torch.backends.cuda.matmul
        old = getattr(m, "allow_fp16_accumulation", None)
        if way == "fp16-acc" and old is None:
            raise RuntimeError("torch.backends.cuda.matmul.allow_fp16_accumulation is missing")
        try:
            if old is not None:
                m.allow_fp16_accumulation = way == "fp16-acc"
            return torch.mm(a, b)
        finally:
            if old is not None:
                m.allow_fp16_accumulation = old
    one = torch.ones((), dtype=torch.float32, device=a.device)
    # _scaled_mm takes b column-major: the transpose of a contiguous (N, K) tensor
    return torch._scaled_mm(a, b.t().contiguous().t(), one, one, out_dtype=torch.float32,
                            use_fast_accum=fast_accum)


def _values(torch, t):
    """A tensor's values as a float64 numpy array (exact for every format here)."""
    return t.detach().float().cpu().double().numpy()


def _gpu_prefix(torch, device) -> str | None:
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((g for g in GPUS if g in name), None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", default=None, help="write every result to this file")
    parser.add_argument("--mn", type=int, default=128)
    parser.add_argument("--ks", default=",".join(map(str, KS)))
    parser.add_argument("--only", default=None,
                        help="comma-separated inputs:way pairs to run (e.g. fp16:fp32-out)")
    parser.add_argument("--no-fit", action="store_true",
                        help="compare with the GPU's own preset only (large products)")
    parser.add_argument("--dists", default="normal,wide")
    args = parser.parse_args(argv)
    import torch

    import fpsim
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
    gpu = _gpu_prefix(torch, args.device)
    print(f"device: {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}; "
          f"torch {torch.__version__}; model family {gpu}", flush=True)
    fp8 = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
    cases = [("fp16", torch.float16, "fp32-out"), ("bf16", torch.bfloat16, "fp32-out"),
             ("fp16", torch.float16, "fp16-out"), ("fp16", torch.float16, "fp16-acc")]
    cases += [(n, d, w) for n, d in fp8.items() for w in ("fp8", "fp8-fast")]
    if args.only:
        keep = set(args.only.split(","))
        cases = [c for c in cases if f"{c[0]}:{c[2]}" in keep]
    results = []
    print("| inputs | way | K | dist | best preset (matches) | "
          f"{gpu or 'own'} preset | fp32 correctly rounded | gpu s | model s |")
    print("|---|---|---|---|---|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    for inputs, dtype, way in cases:
        for k in (int(s) for s in args.ks.split(",")):
            for dist in args.dists.split(","):
                row = {"inputs": inputs, "way": way, "K": k, "dist": dist,
                       "M": args.mn, "N": args.mn}
                results.append(row)
                a = _operands(torch, dtype if dtype in (torch.float16, torch.bfloat16)
                              else torch.float16, (args.mn, k), dist == "wide", gen)
                b = _operands(torch, a.dtype, (k, args.mn), dist == "wide", gen)
                if way.startswith("fp8"):  # (fp16 values rounded once more, by torch: RNE)
                    a, b = a.float().to(dtype), b.float().to(dtype)
                try:
                    da, db = a.to(args.device), b.to(args.device)
                    t0 = time.perf_counter()
                    d = _gemm(torch, "fp8" if way.startswith("fp8") else way, da, db,
                              fast_accum=way == "fp8-fast")
                    if args.device == "cuda":
                        torch.cuda.synchronize()
                    row["gpu_seconds"] = time.perf_counter() - t0
                except Exception as e:  # noqa: BLE001 - a way this torch lacks: say which
                    row["error"] = f"{type(e).__name__}: {e}"[:300]
                    print(f"| {inputs} | {way} | {k} | {dist} | not run: {row['error'][:120]} "
                          "| | | | |", flush=True)
                    continue
                A, B, D = _values(torch, a), _values(torch, b), _values(torch, d)
                t0 = time.perf_counter()
                own = f"{gpu}-{inputs}" + ("-fp16out" if way == "fp16-acc" else "")
                try:
                    v = (fpsim.validate_gemm(A, B, D, preset=own, show=3) if args.no_fit
                         else fpsim.validate_gemm(A, B, D, fit=True, show=3))
                except ValueError as e:
                    row["error"] = f"validate_gemm: {e}"[:300]
                    print(f"| {inputs} | {way} | {k} | {dist} | {row['error'][:120]} | | | | |")
                    continue
                row["model_seconds"] = time.perf_counter() - t0
                row["total"] = v.total
                row["ranking"] = v.ranking
                row["best"] = {"preset": v.preset, "matches": v.matches,
                               "ulp_differences": v.ulp_differences,
                               "first_mismatches": v.first_mismatches}
                by = ({r["preset"]: r["matches"] for r in v.ranking} if v.ranking
                      else {v.preset: v.matches})
                row["own_preset"] = {"preset": own, "matches": by.get(own)}
                if way == "fp16-out" and gpu:
                    # fp32 accumulation then one rounding into binary16: the fp32 model, then RNE
                    m32 = fpsim.matmul(A, B, preset=f"{gpu}-fp16")
                    m16 = fpsim.quantize(m32, "float16")
                    same = (m16.view(np.uint64) == D.view(np.uint64)) | (np.isnan(m16)
                                                                         & np.isnan(D))
                    row["own_preset"] = {"preset": f"{gpu}-fp16 then RNE to binary16",
                                         "matches": int(same.sum())}
                cr = by.get("fp32-correctly-rounded")
                print(f"| {inputs} | {way} | {k} | {dist} | {v.preset} ({v.matches}/{v.total}) "
                      f"| {row['own_preset']['matches']} | {cr} | {row['gpu_seconds']:.4f} | "
                      f"{row['model_seconds']:.2f} |", flush=True)
                if args.json:
                    with open(args.json, "w") as f:
                        json.dump(results, f, indent=1, default=str)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
