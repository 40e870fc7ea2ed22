"""fpsim against QPyTorch (``qtorch.quant.float_quantize``) on CPU float32 tensors: bit-for-bit
mismatch counts under round-to-nearest, classified by cause; the statistics of stochastic
rounding (only those can agree: the generators differ); and the time of both on one tensor.

Run: ``python benchmarks/bench_qtorch.py [--formats e5m10,e8m7,e5m2,e4m3,e3m2,e2m1]
[--n-inputs 65536] [--sr-samples 4194304] [--n 16777216] [--repeat 5] [--qtorch-o3]``

qtorch is not an fpsim dependency. Install it into the environment that runs this script with
``pip install --no-deps qtorch ninja`` (``--no-deps`` keeps the installed torch). Its first import
compiles a C++ extension with ``torch.utils.cpp_extension.load`` (about 40 s; set
``TORCH_EXTENSIONS_DIR`` to choose where the build goes).

``float_quantize(x, exp, man)`` has no Inf/NaN codes: its exponent range is that of fpsim's
``Format(exp, man, specials="finite")`` (top binade finite, so e5m10 reaches 131008, not 65504),
and it saturates. Every format is therefore compared with three fpsim configurations: the IEEE
layout ``Format(exp, man)`` under ``rne`` and ``rna`` with ``overflow="ieee"``, and the finite
layout under ``rna`` with ``overflow="saturate"`` (not for exp >= 8, where qtorch never clips and
keeps float32's range). A mismatch is a result whose float64 bits differ
(two NaNs match whatever their payloads). Each one is put in the first class that applies:

- ``nan/inf in``: the input is NaN or +-Inf;
- ``beyond max``: ``|x|`` exceeds the reference format's ``max``;
- ``zero sign``: equal values, both zero, opposite signs;
- ``tie``: ``x`` is exactly halfway between two neighbours (fpsim ``rne`` and ``rna`` of the finite
  layout differ), split into the normal and the subnormal range of the format;
- ``subnormal, no tie``: ``|x| < min_normal`` and not a tie;
- ``other``: anything else.
"""

from __future__ import annotations

import argparse
import os
import sys

import numba
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fpsim  # noqa: E402
from bench_quantize import best_time, machine_line  # noqa: E402  (same folder: one helper each)

CATEGORIES = ("nan/inf in", "beyond max", "zero sign", "tie, normal", "tie, subnormal",
              "subnormal, no tie", "other")
SPECIAL_BITS = (0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000,
                0x7F800001, 0x7FBFFFFF, 0x7FC00001, 0x7FFFFFFF, 0xFFFFFFFF)
FLT_MAX = float(np.finfo(np.float32).max)


def load_qtorch():
    try:
        from qtorch.quant import float_quantize
    except ImportError as err:  # not installed, or the C++ extension did not build
        sys.exit(f"bench_qtorch: qtorch is not usable here ({type(err).__name__}: {err}). "
                 "Install it with: pip install --no-deps qtorch ninja")
    return float_quantize


def parse(spec: str) -> tuple[int, int]:
    e, m = spec.lower().lstrip("e").split("m")
    return int(e), int(m)


def f32(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.uint64).astype(np.uint32).view(np.float32)


def bits_of(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def hexf(v) -> str:
    v = np.float32(v)
    return f"{float(v)!r} (0x{int(bits_of(v)):08x})"


def show64(v: float) -> str:
    """A float64 result: its float32 bits when it is a float32 value, else its repr."""
    v = float(v)
    with np.errstate(over="ignore"):
        return hexf(v) if not np.isfinite(v) or float(np.float32(v)) == v else repr(v)


def inputs(e: int, m: int, n: int, rng) -> tuple[np.ndarray, list[tuple[str, int]]]:
    """Float32 test inputs for the (e, m) grid, by class."""
    s = 23 - m
    emin, emaxq = 2 - 2 ** (e - 1), 2 ** (e - 1)
    ieee = fpsim.Format(e, m)
    lo_field, hi_field = emin + 127, min(emaxq + 127, 254)

    def sign(k):
        return rng.integers(0, 2, k, dtype=np.uint64) << 31

    def normal_ties(k):
        ef = rng.integers(lo_field, hi_field + 1, k, dtype=np.uint64)
        top = rng.integers(0, 2 ** m, k, dtype=np.uint64) << s
        return sign(k) | (ef << 23) | top | (1 << (s - 1))

    def sub_ties():
        j = np.arange(2 ** m) if 2 ** m <= n // 2 else rng.integers(0, 2 ** m, n // 2)
        mag = np.ldexp(2.0 * j + 1, emin - m - 1).astype(np.float32)
        return np.concatenate([mag, -mag])

    t = normal_ties(n)
    pm = np.where(rng.integers(0, 2, n) == 1, 1, -1).astype(np.int64)
    st = sub_ties()
    stb = bits_of(st).astype(np.int64)
    k = n // 2
    sub_rand = np.concatenate([
        f32(sign(k) | rng.integers(0, lo_field << 23, k, dtype=np.uint64)),
        (rng.random(k) * 2.0 ** emin
         * np.where(rng.integers(0, 2, k) == 1, 1, -1)).astype(np.float32),
    ])
    big_fields = rng.integers(ieee.emax + 127, min(emaxq + 127 + 2, 254) + 1, n, dtype=np.uint64)
    big = f32(sign(n) | (big_fields << 23) | rng.integers(0, 1 << 23, n, dtype=np.uint64))
    fin_max = (2 - 2.0 ** -m) * 2.0 ** emaxq
    edges = [ieee.max, (2 - 2.0 ** -(m + 1)) * 2.0 ** ieee.emax, fin_max,
             (2 - 2.0 ** -(m + 1)) * 2.0 ** emaxq, 2.0 ** (emaxq + 1), FLT_MAX]
    edges = np.array([v for v in edges if v <= FLT_MAX], np.float32)
    eb = bits_of(edges).astype(np.int64)
    edges = f32(np.concatenate([eb - 1, eb, eb + 1]))
    edges = np.concatenate([edges, -edges])
    specials = f32(np.array(SPECIAL_BITS))
    wide = rng.integers(max(0, lo_field - m - 4), min(254, emaxq + 127 + 1) + 1, n, dtype=np.uint64)
    wide = f32(sign(n) | (wide << 23) | rng.integers(0, 1 << 23, n, dtype=np.uint64))
    classes = [
        ("ties, normal range", f32(t)),
        ("ties +-1 ulp, normal range", f32((t.astype(np.int64) + pm).astype(np.uint64))),
        ("ties, subnormal range", st),
        ("ties +-1 ulp, subnormal range", f32(np.concatenate([stb - 1, stb + 1]))),
        ("subnormal range, random", sub_rand),
        ("beyond max (random and edges)", np.concatenate([big, edges])),
        ("zeros, infs, NaNs", specials),
        ("random across binades", wide),
    ]
    x = np.concatenate([c for _, c in classes]).astype(np.float32)
    return x, [(name, len(c)) for name, c in classes]


def qtorch_clips(e: int) -> bool:
    """qtorch saturates at biased float32 exponent 2^(e-1) + 127; for e >= 8 that is never
    exceeded, so its range is float32's own (Inf included) and the finite layout does not apply."""
    return 2 ** (e - 1) + 127 < 255


def nearest(fq, e, m, x):
    """Mismatch counts and first examples of qtorch nearest against three fpsim configurations."""
    ieee, fin = fpsim.Format(e, m), fpsim.Format(e, m, specials="finite")
    with np.errstate(invalid="ignore"):  # signalling NaN inputs
        q = fq(torch.from_numpy(x.copy()), e, m, rounding="nearest").numpy().astype(np.float64)
        ax = np.abs(x.astype(np.float64))
    tie = (np.asarray(fpsim.quantize(x, fin, "rne", "saturate"), np.float64)
           != np.asarray(fpsim.quantize(x, fin, "rna", "saturate"), np.float64))
    refs = {"rne, ieee": (ieee, "rne", "ieee"), "rna, ieee": (ieee, "rna", "ieee")}
    if qtorch_clips(e):
        refs["rna, finite, saturate"] = (fin, "rna", "saturate")
    out = {}
    for label, (fmt, mode, ovf) in refs.items():
        r = np.asarray(fpsim.quantize(x, fmt, mode, ovf), np.float64)
        bad = ~((q.view(np.uint64) == r.view(np.uint64)) | (np.isnan(q) & np.isnan(r)))
        cat = np.full(len(x), len(CATEGORIES) - 1)
        conds = [~np.isfinite(x), ax > fmt.max, q == r, tie & (ax >= fmt.min_normal), tie,
                 ax < fmt.min_normal]
        for i in reversed(range(len(conds))):
            cat = np.where(conds[i], i, cat)
        counts, examples = {}, {}
        for i, name in enumerate(CATEGORIES):
            idx = np.flatnonzero(bad & (cat == i))
            counts[name] = len(idx)
            if len(idx):
                j = idx[0]
                examples[name] = (hexf(x[j]), show64(q[j]), show64(r[j]))
        out[label] = (int(bad.sum()), counts, examples)
    return out


def neighbours(fq, e, m, x):
    """One stochastic rounding of every finite in-range input by both libraries: how many results
    are not one of the two neighbours, and how many zeros lost the input's sign."""
    fin, ieee = fpsim.Format(e, m, specials="finite"), fpsim.Format(e, m)
    limit = fin.max if fin.fits_float32 else ieee.max
    with np.errstate(invalid="ignore"):
        x = x[np.isfinite(x) & (np.abs(x.astype(np.float64)) <= limit)]
    lo = np.asarray(fpsim.quantize(x, fin, "rtz", "saturate"), np.float64)
    hi = np.where(x > 0, np.asarray(fpsim.quantize(x, fin, "rup", "saturate"), np.float64),
                  np.asarray(fpsim.quantize(x, fin, "rdn", "saturate"), np.float64))
    exact = lo == x.astype(np.float64)
    row = [len(x)]
    for y in (fq(torch.from_numpy(x.copy()), e, m, rounding="stochastic").numpy(),
              fpsim.quantize(x, fin, "sr", "saturate", seed=1)):
        y = np.asarray(y, np.float64)
        row += [int(((y != lo) & (y != hi)).sum()),
                int(((y == 0) & (np.signbit(y) != np.signbit(x))).sum()),
                int((exact & (y != lo)).sum())]
    return row


def sr_means(fq, e, m, n, seed):
    """P(round away from zero) of n stochastic roundings of single values, against the exact
    probability (|x| - |lo|) / gap."""
    fin = fpsim.Format(e, m, specials="finite")
    emin = fin.emin
    cases = [
        ("normal: 1 + 0.3 eps", 1 + 0.3 * 2.0 ** -m),
        ("subnormal range: 0.37 min_normal", 0.37 * 2.0 ** emin),
        ("tiny: 0.375 * 2^(emin-23)", 0.375 * 2.0 ** (emin - 23)),
        ("tiny: 0.75 * 2^(emin-23)", 0.75 * 2.0 ** (emin - 23)),
    ]
    rows = []
    for label, v in cases:
        v = float(np.float32(v))
        x = np.full(n, v, np.float32)
        lo = float(fpsim.quantize(np.float32(v), fin, "rtz", "saturate"))
        hi = float(fpsim.quantize(np.float32(v), fin, "rup", "saturate"))
        if hi == lo:  # v is 0 in float32 (e8: 2^(emin-23) is below float32's range) or exact
            continue
        p = (v - lo) / (hi - lo)
        row = [label, v, p, n * p]
        for y in (fq(torch.from_numpy(x), e, m, rounding="stochastic").numpy(),
                  fpsim.quantize(x, fin, "sr", "saturate", seed=seed)):
            y = np.asarray(y, np.float64)
            k = int((y == hi).sum())
            z = (k / n - p) / np.sqrt(p * (1 - p) / n)
            row += [k, y.mean() / v - 1, z, int(((y != lo) & (y != hi)).sum())]
        rows.append(row)
    return rows


def load_qtorch_o3():
    """qtorch's CPU sources built again with -O3 (its own build passes no -O flag: g++ uses -O0)."""
    import qtorch.quant.quant_function as qf
    from torch.utils.cpp_extension import load

    src = [os.path.join(qf.current_path, "quant_cpu", f)
           for f in ("quant_cpu.cpp", "bit_helper.cpp", "sim_helper.cpp")]
    mod = load(name="quant_cpu_o3", sources=src, extra_cflags=["-O3"])

    def fq(x, exp, man, rounding="stochastic"):
        fn = mod.float_quantize_nearest if rounding == "nearest" else mod.float_quantize_stochastic
        return fn(x.contiguous(), man, exp)

    return fq


def timing(fq, fq_o3, specs, n, repeat):
    import fpsim.torch as ft

    x = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    threads = numba.get_num_threads()
    rows, notes = [], []
    for e, m in specs:
        ieee, fin = fpsim.Format(e, m), fpsim.Format(e, m, specials="finite")
        cases = [
            ("nearest", [("rne, ieee", lambda: ft.quantize(x, ieee, "rne")),
                         ("rna, finite, saturate",
                          lambda: ft.quantize(x, fin, "rna", "saturate"))]),
            ("stochastic", [("sr, finite, saturate",
                             lambda: ft.quantize(x, fin, "sr", "saturate", seed=1))]),
        ]
        for mode, fcases in cases:
            tq = best_time(lambda: fq(x, e, m, rounding=mode), repeat)
            t3 = best_time(lambda: fq_o3(x, e, m, rounding=mode), repeat) if fq_o3 else None
            if fq_o3 and mode == "nearest":
                same = torch.equal(fq(x, e, m, rounding=mode).view(torch.int32),
                                   fq_o3(x, e, m, rounding=mode).view(torch.int32))
                notes.append(f"e{e}m{m}: qtorch -O3 nearest equals the shipped build bit for bit "
                             f"on the timed tensor: {same}.")
            for label, ffn in fcases:
                numba.set_num_threads(threads)
                tf = best_time(ffn, repeat)
                numba.set_num_threads(1)
                t1 = best_time(ffn, repeat)
                numba.set_num_threads(threads)
                o3 = f"{t3 * 1e3:.1f} | {t3 / t1:.2f}" if t3 else "- | -"
                rows.append(f"| e{e}m{m} | {mode} | {label} | {tq * 1e3:.1f} | {tf * 1e3:.1f} | "
                            f"{t1 * 1e3:.1f} | {tq / tf:.2f} | {tq / t1:.2f} | {o3} |")
    return threads, rows + [""] + notes if notes else rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--formats", default="e5m10,e8m7,e5m2,e4m3,e3m2,e2m1",
                   help="comma-separated eXmY (qtorch's exp, man)")
    p.add_argument("--n-inputs", type=int, default=1 << 16, help="inputs per class and format")
    p.add_argument("--sr-samples", type=int, default=1 << 22, help="roundings per value (SR means)")
    p.add_argument("--n", type=int, default=1 << 24, help="elements of the timed tensor")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--time-formats", default="e5m10,e4m3")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--qtorch-o3", action="store_true",
                   help="also time qtorch's CPU source rebuilt with -O3 (compiles, about 40 s)")
    args = p.parse_args(argv)
    fq = load_qtorch()
    from importlib.metadata import version

    specs = [parse(s) for s in args.formats.split(",")]
    rng = np.random.default_rng(args.seed)
    print(machine_line(args.n, args.repeat))
    print(f"qtorch {version('qtorch')}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), fpsim {getattr(fpsim, '__version__', '?')}.")

    data = {}
    for e, m in specs:
        data[(e, m)] = inputs(e, m, args.n_inputs, rng)
    print("\n### Inputs (float32, random signs)\n")
    classes = [c for c, _ in data[specs[0]][1]]
    print("| format | " + " | ".join(classes) + " | total |")
    print("|---|" + "---|" * (len(classes) + 1))
    for (e, m), (x, cl) in data.items():
        print(f"| e{e}m{m} | " + " | ".join(str(k) for _, k in cl) + f" | {len(x)} |")

    print("\n### Round to nearest: mismatches of qtorch `float_quantize(x, e, m, 'nearest')` "
          "against fpsim\n")
    print("| format | fpsim reference | mismatches | " + " | ".join(CATEGORIES) + " |")
    print("|---|---|---|" + "---|" * len(CATEGORIES))
    examples = {}
    for (e, m), (x, _) in data.items():
        for label, (total, counts, ex) in nearest(fq, e, m, x).items():
            print(f"| e{e}m{m} | {label} | {total} | "
                  + " | ".join(str(counts[c]) for c in CATEGORIES) + " |")
            for c, v in ex.items():
                examples.setdefault((label, c), (f"e{e}m{m}",) + v)
    print("\n### One example per reference and class (the first mismatch met)\n")
    print("| fpsim reference | class | format | input | qtorch | fpsim |")
    print("|---|---|---|---|---|---|")
    for (label, c), (f, xi, qv, rv) in examples.items():
        print(f"| {label} | {c} | {f} | {xi} | {qv} | {rv} |")

    print("\n### qtorch nearest on zeros, infinities and NaNs\n")
    sx = f32(np.array(SPECIAL_BITS))
    print("| input | " + " | ".join(f"e{e}m{m}" for e, m in specs) + " |")
    print("|---|" + "---|" * len(specs))
    outs = [fq(torch.from_numpy(sx.copy()), e, m, rounding="nearest").numpy() for e, m in specs]
    for i, b in enumerate(SPECIAL_BITS):
        print(f"| 0x{b:08x} ({sx[i]!r}) | " + " | ".join(hexf(o[i]) for o in outs) + " |")

    print("\n### Stochastic rounding: one rounding of every finite in-range input\n")
    print("Neighbours are fpsim `rtz` and round-away of the finite layout; 'exact moved' counts "
          "representable inputs that did not come back unchanged.\n")
    print("| format | inputs | qtorch not a neighbour | qtorch zero lost sign | qtorch exact moved "
          "| fpsim not a neighbour | fpsim zero lost sign | fpsim exact moved |")
    print("|---|---|---|---|---|---|---|---|")
    for (e, m), (x, _) in data.items():
        print(f"| e{e}m{m} | " + " | ".join(str(v) for v in neighbours(fq, e, m, x)) + " |")

    print(f"\n### Stochastic rounding: {args.sr_samples} roundings of one value\n")
    print("p = exact probability of rounding away from zero; k = observed count; z = "
          "(k/N - p) / sqrt(p(1-p)/N); bias = mean/x - 1; 'off' = results that are not a "
          "neighbour.\n")
    print("| format | value | x | p | N p | qtorch k | qtorch bias | qtorch z | qtorch off "
          "| fpsim k | fpsim bias | fpsim z | fpsim off |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for e, m in specs:
        for r in sr_means(fq, e, m, args.sr_samples, args.seed + 1):
            label, v, pr, npr, qk, qb, qz, qo, fk, fb, fz, fo = r
            print(f"| e{e}m{m} | {label} | {v:.6g} | {pr:.4g} | {npr:.1f} | {qk} | {qb:+.2e} | "
                  f"{qz:+.1f} | {qo} | {fk} | {fb:+.2e} | {fz:+.1f} | {fo} |")

    tspecs = [parse(s) for s in args.time_formats.split(",")]
    threads, rows = timing(fq, load_qtorch_o3() if args.qtorch_o3 else None, tspecs, args.n,
                           args.repeat)
    print(f"\n### Time for one float32 CPU tensor of {args.n} standard normal values "
          f"(best of {args.repeat})\n")
    print("qtorch's CPU kernel is one serial loop, built by its own `load()` call without an -O "
          "flag; '-O3' is the same source rebuilt with -O3 (`--qtorch-o3`). fpsim "
          f"(`fpsim.torch.quantize`) is timed with numba's {threads} threads and with 1 thread. "
          "Ratios are qtorch time / fpsim time.\n")
    print(f"| format | mode | fpsim call | qtorch ms | fpsim ms ({threads} thr) | fpsim ms (1 thr) "
          f"| qtorch / fpsim ({threads} thr) | qtorch / fpsim (1 thr) | qtorch -O3 ms "
          "| qtorch -O3 / fpsim (1 thr) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
