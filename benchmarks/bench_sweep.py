"""A 12-run sweep of the default config (``digits-mlp-fp16``, seeds 0..11) on a LocalCluster of
2 worker processes, against the same 12 runs trained one after another in this process; the
target is a ratio <= 0.6. Also reported: the share of the sweep's wall time the client spent
writing the study database (target < 5%), the database size per run, runs per worker-hour, and
a reference without Dask: the same runs split over 2 plain processes (``multiprocessing``,
spawned, no study database), which shows what the cores allow and so what Dask itself costs.

This machine's speed drifts by tens of percent over minutes (other tenants), so the serial
baseline, the sweep and the reference are measured in turn, ``--rounds`` times (default 3), and
each round's ratio is taken against the serial time of its own round; the verdict uses the
median.

``--explain`` measures where the time goes instead: one run's time in a process alone and
beside a second process training too, the client's time to store one run with idle workers, and
the CPU an idle LocalCluster worker and its client take.

Run: ``python benchmarks/bench_sweep.py [--runs 12] [--workers 2] [--rounds 3] [--epochs E]
[--explain]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TARGET_RATIO = 0.6
TARGET_WRITE = 0.05
_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _plain_processes(plan, workers: int) -> float:
    """The runs dealt round-robin to ``workers`` spawned processes (BLAS / OpenMP at one
    thread, as in a sweep's workers); wall seconds including their start."""
    saved = {k: os.environ.get(k) for k in _ONE_THREAD}
    os.environ.update({k: "1" for k in _ONE_THREAD})
    try:
        t0 = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_train_each, [[r.fields for r in plan[i::workers]] for i in range(workers)])
        return time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _train_each(fields_list: list[dict]) -> list[float]:
    """Seconds of each run of ``fields_list`` trained one after another in this process."""
    import numba

    from fpsim.training.loop import train
    numba.set_num_threads(1)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, fields in enumerate(fields_list):
            t0 = time.perf_counter()
            train(fields, db=os.path.join(tmp, f"{i}.sqlite"))
            out.append(time.perf_counter() - t0)
    return out


def _cpu_seconds() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _faults(fields_list: list[dict]) -> tuple[int, float]:
    """Minor page faults and system seconds of training ``fields_list`` in this process."""
    import resource
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    _train_each(fields_list)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return r1.ru_minflt - r0.ru_minflt, r1.ru_stime - r0.ru_stime


def _idle_cpu(client) -> tuple[list[float], float]:
    """Share of a core each worker and this process take over 5 s of an idle cluster."""
    time.sleep(1)
    w0, c0 = client.run(_cpu_seconds), _cpu_seconds()
    time.sleep(5)
    w1, c1 = client.run(_cpu_seconds), _cpu_seconds()
    return [(w1[k] - w0[k]) / 5 for k in w0], (c1 - c0) / 5


def explain(plan) -> None:
    """Print the decomposition of a sweep's time (see the module docstring)."""
    from fpsim.training import sweep
    from fpsim.training.records import RunDB
    os.environ.update({k: "1" for k in _ONE_THREAD})
    ctx = multiprocessing.get_context("spawn")
    fields = [r.fields for r in plan[:5]]
    with ctx.Pool(1) as one, ctx.Pool(1) as two:
        one.apply(_train_each, (fields[:1],))  # (start-up and kernels loaded: not measured)
        two.apply(_train_each, (fields[:1],))
        alone = one.apply(_train_each, (fields,))
        a, b = one.apply_async(_train_each, (fields,)), two.apply_async(_train_each, (fields,))
        pair = a.get() + b.get()
    med = statistics.median
    print(f"One run alone in a process: median {med(alone):.2f} s ({min(alone):.2f}-"
          f"{max(alone):.2f}); beside a second process training: median {med(pair):.2f} s "
          f"({min(pair):.2f}-{max(pair):.2f}); two processes' throughput against one: "
          f"{2 * med(alone) / med(pair):.2f}x.")
    with tempfile.TemporaryDirectory() as tmp:
        from fpsim.training.loop import train
        worker_db = os.path.join(tmp, "run.sqlite")
        train(fields[0], db=worker_db)
        with open(worker_db, "rb") as f:
            data = f.read()
        times = []
        with RunDB(os.path.join(tmp, "study.sqlite")) as rdb:
            for r in plan:
                t0 = time.perf_counter()
                sweep._store(rdb, r, {"database": data, "error": None}, "explain")
                times.append(time.perf_counter() - t0)
    print(f"Client storing one run ({len(data) / 1e6:.2f} MB file), idle machine: median "
          f"{1e3 * med(times):.1f} ms over {len(times)}.")
    for trim in (None, "65536"):  # Dask's default in its workers' environment, and not
        if trim:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = trim
        with ctx.Pool(1) as pool:
            pool.apply(_train_each, (fields[:1],))
            faults, system = pool.apply(_faults, (fields[1:4],))
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        print(f"Three runs with MALLOC_TRIM_THRESHOLD_={trim or '(unset)'}: {faults} minor page "
              f"faults, {system:.2f} s system time.")
    import dask
    from distributed import Client, LocalCluster

    def defaults():
        with dask.config.set({"distributed.worker.profile.enabled": False}):
            cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                                   dashboard_address=":0", silence_logs=40)
        return Client(cluster), cluster
    for label, connect in (("Dask's defaults (profiler off)", defaults),
                           ("the sweep's settings", lambda: sweep._connect(2, None))):
        client, cluster = connect()
        try:
            workers, own = _idle_cpu(client)
        finally:
            client.close()
            cluster.close()
        print(f"Idle 2-worker LocalCluster, {label}: each worker "
              f"{', '.join(f'{100 * x:.1f}%' for x in workers)} of a core, the client "
              f"(scheduler, nannies) {100 * own:.1f}%.")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=12)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="default: the config's (30)")
    p.add_argument("--explain", action="store_true", help="measure where the time goes")
    args = p.parse_args(argv)
    from bench_quantize import machine_line
    from fpsim.training import sweep
    from fpsim.training.loop import train

    base = {"config": "digits-mlp-fp16", **({"epochs": args.epochs} if args.epochs else {})}
    spec = sweep.load_spec({"name": "bench", "base": base,
                            "axes": {"seed": list(range(args.runs))}})
    plan = sweep.expand(spec)
    if args.explain:
        explain(plan)
        return 0
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        train(plan[0].fields, db=os.path.join(tmp, "warm.sqlite"))  # compile the kernels once
        for k in range(args.rounds):
            t0 = time.perf_counter()
            for r in plan:
                train(r.fields, db=os.path.join(tmp, f"serial{k}.sqlite"))
            serial = time.perf_counter() - t0
            db = os.path.join(tmp, f"sweep{k}.sqlite")
            t0 = time.perf_counter()
            out = sweep.run_sweep(spec, db, workers=args.workers)
            swept = time.perf_counter() - t0
            assert out["finished"] == args.runs, out
            plain = _plain_processes(plan, args.workers)
            rounds.append(dict(serial=serial, swept=swept, plain=plain,
                               write=out["write_seconds"], size=os.path.getsize(db)))
    for r in rounds:
        r["ratio"], r["share"] = r["swept"] / r["serial"], r["write"] / r["swept"]
        r["plain_ratio"] = r["plain"] / r["serial"]
    ratio = statistics.median(r["ratio"] for r in rounds)
    write = statistics.median(r["share"] for r in rounds)
    print(machine_line(0, 1).split("; n =")[0] + ".")
    print()
    print("| round | serial (s) | sweep (s) | sweep / serial | client writing | "
          "2 plain processes (s) | plain / serial |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(rounds, 1):
        print(f"| {i} | {r['serial']:.1f} | {r['swept']:.1f} | {r['ratio']:.2f} | "
              f"{r['write']:.3f} s, {100 * r['share']:.2f}% | {r['plain']:.1f} | "
              f"{r['plain_ratio']:.2f} |")
    plain = statistics.median(r["plain_ratio"] for r in rounds)
    print()
    print(f"Median sweep / serial: {ratio:.2f} (target <= {TARGET_RATIO}: "
          f"{'met' if ratio <= TARGET_RATIO else 'missed'}); median client writing share: "
          f"{100 * write:.2f}% (target < {100 * TARGET_WRITE:.0f}%: "
          f"{'met' if write < TARGET_WRITE else 'missed'}); median plain processes / serial: "
          f"{plain:.2f}.")
    swept = statistics.median(r["swept"] for r in rounds)
    print(f"Database: {rounds[0]['size'] / args.runs / 1e6:.2f} MB per run; "
          f"{args.runs / (swept * args.workers / 3600):.0f} runs per worker-hour (median sweep).")
    return 0 if ratio <= TARGET_RATIO and write < TARGET_WRITE else 1


if __name__ == "__main__":
    sys.exit(main())
