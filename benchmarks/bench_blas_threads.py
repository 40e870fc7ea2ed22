"""Wall time of a whole ``fpsim train`` run with BLAS pinned to one thread (what the training
loop does) against the same run with BLAS left at its default thread count, and whether the two
give the same final weights.

Usage: ``python benchmarks/bench_blas_threads.py [--model mlp] [--epochs 30] [--repeat 3]
[--load N]`` (``--load 1``: one busy-loop process on the side, a loaded 2-core machine).
Each run is a fresh process (digits, ``mixed_fp16``); the two settings alternate so that load
on the machine affects both alike. The last lines print the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

_RUN = """
import hashlib, json, sys
import numpy as np
import fpsim.training.determinism as determinism
if sys.argv[1] == "default":
    determinism.BLAS_THREADS = None  # threadpoolctl: leave the thread count as it is
from fpsim.training.loop import TrainConfig, train
from fpsim.training.records import RunDB
cfg = TrainConfig(model=sys.argv[3], dataset="digits", policy="mixed_fp16", epochs=int(sys.argv[4]))
out = train(cfg, db=sys.argv[2])
with RunDB(sys.argv[2]) as rdb:
    st = rdb.load_checkpoint(out["run_id"])[1]
w = b"".join(np.ascontiguousarray(v).tobytes() for k, v in sorted(st.items()) if k.startswith("model/"))
print(json.dumps({"accuracy": out["test_accuracy"], "weights": hashlib.sha256(w).hexdigest()[:16]}))
"""


def one(setting: str, model: str, epochs: int) -> tuple[float, dict]:
    """Seconds of wall time of one run in a fresh process, and its result."""
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-c", _RUN, setting, os.path.join(d, "r.sqlite"),
                              model, str(epochs)], capture_output=True, text=True, check=True)
        return time.perf_counter() - t0, json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the comparison and print one line per run, then the medians."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--load", type=int, default=0,
                    help="busy-loop processes to run meanwhile (a loaded machine)")
    args = ap.parse_args()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.load)]
    try:
        _compare(args)
    finally:
        for p in busy:
            p.kill()


def _compare(args) -> None:
    import numpy  # noqa: F401  (loads numpy's BLAS, so that threadpoolctl reports it)
    from threadpoolctl import threadpool_info
    print("BLAS:", [(d["internal_api"], d["version"], d.get("architecture"), d["num_threads"])
                    for d in threadpool_info() if d["user_api"] == "blas"], flush=True)
    one("pinned", args.model, 1)  # compile / load the kernels once
    times = {"pinned": [], "default": []}
    hashes = {"pinned": set(), "default": set()}
    for _ in range(args.repeat):
        for setting in ("default", "pinned"):
            t, r = one(setting, args.model, args.epochs)
            times[setting].append(t)
            hashes[setting].add(r["weights"])
            print(f"{setting:8s} {t:7.2f} s  accuracy {r['accuracy']:.4f}  weights {r['weights']}",
                  flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"median wall: BLAS default threads {med['default']:.2f} s, pinned to 1 thread "
          f"{med['pinned']:.2f} s, ratio {med['default'] / med['pinned']:.2f}")
    print(f"same final weights in every run: {len(hashes['default'] | hashes['pinned']) == 1}")


if __name__ == "__main__":
    main()
