"""Throughput of fake quantization float32 -> format -> float32, as ratios to baselines measured in
the same process: ``np.copyto`` (memory bandwidth), numpy's float16 round trip and ml_dtypes'
round trip of the same format.

Run: ``python benchmarks/bench_quantize.py [--n 16777216] [--repeat 7] [--write docs/performance.md]``

Each timing is the best of ``--repeat`` runs after one warm-up call (which also compiles the
kernel on first use). fpsim is timed both writing into a preallocated array (``out=``, what
``np.copyto`` does) and allocating its result (the default call, which pays the page faults of a
fresh array).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numba
import numpy as np

import fpsim

FORMATS = ("float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")


def best_time(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def data(kind: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    if kind == "normal":
        return rng.standard_normal(n).astype(np.float32)
    # wide range: |x| = 2^U(-30, 20) with random signs (underflow, subnormals and overflow occur)
    mag = np.exp2(rng.uniform(-30, 20, n)) * rng.choice([-1.0, 1.0], n)
    return mag.astype(np.float32)


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
    args = parser.parse_args(argv)
    rows, summary = run(args.n, args.repeat)
    header = [
        machine_line(args.n, args.repeat),
        "",
        "| data | path | G elem/s | / np.copyto | speed-up vs oracle cast | speed-up vs numpy fp16 |",
        "|---|---|---|---|---|---|",
    ]
    worst = min(v["copy_ratio"] for v in summary.values())
    sr = max(v["sr_over_rne"] for v in summary.values())
    st = max(v["stats_over_plain"] for v in summary.values())
    footer = ["", f"Worst RNE ratio to np.copyto: {worst:.2f}; SR / RNE time at most {sr:.2f}x; "
              f"stats=True / plain time at most {st:.2f}x."]
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
