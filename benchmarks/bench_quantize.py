"""Throughput of fake quantization float32 -> format -> float32, as ratios to baselines measured in
the same process: ``np.copyto`` (memory bandwidth), numpy's float16 round trip and ml_dtypes'
round trip of the same format.

Run: ``python benchmarks/bench_quantize.py [--n 16777216] [--repeat 7] [--write docs/performance.md]``

Each timing is the best of ``--repeat`` runs after one warm-up call (which also compiles the
kernel on first use). fpsim is timed both writing into a preallocated array (``out=``, what
``np.copyto`` does) and allocating its result (the default call, which pays the page faults of a
fresh array).

Two more rows bound what the drivers can reach: a Numba ``prange`` loop that copies the bits in
the drivers' chunks (the memory traffic of ``out=`` with no rounding) and ``x.copy()`` (numpy's
own allocating copy, which pays the same page faults as an allocating call).

``--kernel`` adds the statistics cost of the serial driver alone: 2^16 inputs (in L2 cache),
thread CPU time (what other processes on a shared machine take from this one is not counted),
best of 15 x ``--repeat``; the ratios of the table above are wall times and move with the load.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numba
import numpy as np
from numba import njit, prange

import fpsim
from fpsim.numerics.backend import nchunks

FORMATS = ("float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")


def best_time(fn, repeat: int, clock=time.perf_counter) -> float:
    """Best ``clock`` time of ``repeat`` calls after one warm-up call (wall time by default)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def data(kind: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    if kind == "normal":
        return rng.standard_normal(n).astype(np.float32)
    # wide range: |x| = 2^U(-30, 20) with random signs (underflow, subnormals and overflow occur)
    mag = np.exp2(rng.uniform(-30, 20, n)) * rng.choice([-1.0, 1.0], n)
    return mag.astype(np.float32)


@njit(parallel=True, cache=True)
def copy_chunks(xb, outb, nchunk):
    """Copy ``xb`` into ``outb`` in the quantize drivers' ``nchunk`` contiguous chunks."""
    n = xb.size
    for c in prange(nchunk):
        lo = (c * n) // nchunk
        hi = ((c + 1) * n) // nchunk
        xs = xb[lo:hi]
        os = outb[lo:hi]
        for j in range(xs.size):
            os[j] = xs[j]


def kernel_rows(repeat: int) -> list[str]:
    """Rows of the serial driver's ``stats=True`` / plain CPU time, per format and data kind."""
    from fpsim.kernels import cpu
    from fpsim.kernels.histogram import STATS_LEN
    from fpsim.numerics.convert import _prepare

    rows = ["", "| data | format | serial driver ns / element, plain | with statistics | ratio |",
            "|---|---|---|---|---|"]
    n = 1 << 16
    for kind in ("normal", "wide"):
        xb = data(kind, n).view(np.uint32)
        outb = np.empty_like(xb)
        for name in FORMATS:
            fmt, mode, policy, key, srk = _prepare(name, "rne", None, 0, 0, None)
            P = fmt.params("float32")
            counts = np.zeros((1, 5), np.int64)
            times = []
            for hist_len in (0, STATS_LEN):
                hist = np.zeros((1, hist_len), np.int64)
                times.append(best_time(lambda: cpu.quantize_serial(
                    xb, outb, P, mode, policy, key, srk, counts, hist), 15 * repeat,
                    time.thread_time))
            rows.append(f"| {kind} | {name} | {times[0] / n * 1e9:.3f} | {times[1] / n * 1e9:.3f} "
                        f"| {times[1] / times[0]:.2f} |")
    return rows


def oracle(name: str):
    if name == "float16":
        return np.float16
    import ml_dtypes

    return getattr(ml_dtypes, name)


def run(n: int, repeat: int) -> tuple[list[str], dict]:
    rows = []
    summary = {}
    for kind in ("normal", "wide"):
        x = data(kind, n)
        out = np.empty_like(x)
        t_copy = best_time(lambda: np.copyto(out, x), repeat)
        copy_rate = n / t_copy
        rows.append(f"| {kind} | np.copyto (baseline) | {copy_rate / 1e9:.2f} | 1.00 | | |")
        xb, outb, k = x.view(np.uint32), out.view(np.uint32), nchunks(n)
        for label, fn in (("Numba copy loop, quantize's chunks (bound for out=)",
                           lambda: copy_chunks(xb, outb, k)),
                          ("x.copy() (bound for allocating calls)", lambda: x.copy())):
            t = best_time(fn, repeat)
            rows.append(f"| {kind} | {label} | {n / t / 1e9:.2f} | {t_copy / t:.2f} | | |")
        with np.errstate(all="ignore"):
            t_np16 = best_time(lambda: x.astype(np.float16).astype(np.float32), repeat)
        for name in FORMATS:
            o = oracle(name)
            with np.errstate(all="ignore"):
                t_oracle = t_np16 if name == "float16" else best_time(
                    lambda: x.astype(o).astype(np.float32), repeat)
            cases = [
                ("rne, out=", lambda: fpsim.quantize(x, name, out=out)),
                ("rne", lambda: fpsim.quantize(x, name)),
                ("rne, stats=True, out=", lambda: fpsim.quantize(x, name, stats=True, out=out)),
                ("sr, out=", lambda: fpsim.quantize(x, name, "sr", out=out)),
            ]
            times = {}
            for label, fn in cases:
                times[label] = t = best_time(fn, repeat)
                rate = n / t
                rows.append(f"| {kind} | {name} {label} | {rate / 1e9:.2f} | {rate / copy_rate:.2f} "
                            f"| {t_oracle / t:.2f} | {t_np16 / t:.2f} |")
            summary[(kind, name)] = {
                "copy_ratio": (n / times["rne, out="]) / copy_rate,
                "alloc_ratio": (n / times["rne"]) / copy_rate,
                "sr_over_rne": times["sr, out="] / times["rne, out="],
                "stats_over_plain": times["rne, stats=True, out="] / times["rne, out="],
            }
        for name in FORMATS:
            o = oracle(name)
            with np.errstate(all="ignore"):
                t = best_time(lambda: x.astype(o).astype(np.float32), repeat)
            rows.append(f"| {kind} | oracle: {'numpy' if name == 'float16' else 'ml_dtypes'} "
                        f"{name} round trip | {n / t / 1e9:.2f} | {n / t / copy_rate:.2f} | | |")
    return rows, summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1 << 24)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--write", default=None, help="replace the quantize section of this file")
    parser.add_argument("--kernel", action="store_true",
                        help="add the serial driver's statistics cost in thread CPU time")
    args = parser.parse_args(argv)
    rows, summary = run(args.n, args.repeat)
    header = [
        machine_line(args.n, args.repeat),
        "",
        "| data | path | G elem/s | / np.copyto | speed-up vs oracle cast | speed-up vs numpy fp16 |",
        "|---|---|---|---|---|---|",
    ]
    worst = min(v["copy_ratio"] for v in summary.values())
    worst_alloc = min(v["alloc_ratio"] for v in summary.values())
    sr = max(v["sr_over_rne"] for v in summary.values())
    st = max(v["stats_over_plain"] for v in summary.values())
    footer = ["", f"Worst RNE ratio to np.copyto: {worst:.2f} (out=), {worst_alloc:.2f} (allocating); "
              f"SR / RNE time at most {sr:.2f}x; "
              f"stats=True / plain time at most {st:.2f}x."]
    if args.kernel:
        footer += kernel_rows(args.repeat)
    text = "\n".join(header + rows + footer)
    print(text)
    if args.write:
        replace_section(args.write, "bench_quantize", "Fake quantization (quantize)", text,
                        " ".join(["python benchmarks/bench_quantize.py"] + (argv or sys.argv[1:])))
    return 0


def replace_section(path: str, name: str, title: str, body: str, command: str) -> None:
    """Replace the ``<!-- BEGIN name -->`` .. ``<!-- END name -->`` block of the file at ``path``
    with ``body`` and the command that produced it (appended under ``## title`` if absent)."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\nCommand: `{command}`\n\n{body}\n{end}"
    try:
        with open(path) as fh:
            doc = fh.read()
    except FileNotFoundError:
        doc = "# Performance\n\n"
    if begin in doc and end in doc:
        doc = doc[: doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + f"\n\n## {title}\n\n" + block + "\n"
    with open(path, "w") as fh:
        fh.write(doc)


def machine_line(n: int, repeat: int) -> str:
    """The first line of a benchmark table: the machine, library versions, threads, sizes."""
    return (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"numba {numba.__version__} ({numba.get_num_threads()} threads), numpy "
            f"{np.__version__}, Python {platform.python_version()}; n = {n} float32 inputs, "
            f"best of {repeat}.")


def ratio_main(argv, doc: str, run, section: str, title: str, columns: str, script: str) -> int:
    """The command line of a benchmark that prints a table of ratios to ``np.copyto`` and
    can write it into a section of docs/performance.md: ``--n``, ``--repeat``, ``--threads``
    (Numba threads, with BLAS and OpenMP pools held to the same count by threadpoolctl) and
    ``--write``. ``run(n, repeat) -> (rows, misses)`` makes the table rows and the missed
    targets; ``columns`` is the table's header row."""
    from threadpoolctl import threadpool_limits

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1 << 24)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", default=None, help=f"replace the {section} section of this file")
    args = parser.parse_args(argv)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    with threadpool_limits(args.threads):
        rows, misses = run(args.n, args.repeat)
    header = [
        machine_line(args.n, args.repeat),
        "",
        columns,
        "|" + "---|" * (columns.count("|") - 1),
    ]
    footer = ["", "Targets missed: " + (", ".join(misses) if misses else "none") + "."]
    text = "\n".join(header + rows + footer)
    print(text)
    if args.write:
        replace_section(args.write, section, title, text,
                        " ".join([f"python benchmarks/{script}"] + (argv or sys.argv[1:])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
