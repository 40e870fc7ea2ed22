"""Wall time of post-training quantization of the zoo's ResNet (digits, trained in float32 for
its default 10 epochs) with adaptive multipoint points at b = 4 (1.5 points per channel on
average, 256 calibration examples), against the target of 30 s on 2 cores; the same process
also times one float32 forward pass over the test set, as a yardstick.

Run: ``python benchmarks/bench_ptq.py [--repeat 3] [--threads 2]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TARGET_S = 30.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import numba
    from threadpoolctl import threadpool_limits

    from bench_quantize import machine_line
    from fpsim.training import ptq
    from fpsim.training.loop import train

    numba.set_num_threads(args.threads)
    with threadpool_limits(args.threads), tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "runs.sqlite")
        s = train(dict(model="resnet", dataset="digits", instrument=False, hist_every=0), db=db)
        tm = ptq.load_run(db, s["run_id"])
        calib = ptq.calibration_batch(tm.data, 256)
        cfg = ptq.PTQConfig(bits=4, method="adaptive", budget=1.5)
        times, fwd = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            res = ptq.quantize_model(tm.model, calib, cfg)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ptq.evaluate(tm.model, tm.data.x_test, tm.data.y_test)
            fwd.append(time.perf_counter() - t0)
        loss, acc = ptq.evaluate(res.model, tm.data.x_test, tm.data.y_test)
    t, f = min(times), min(fwd)
    print(machine_line(len(tm.data.x_test), args.repeat))
    print()
    print("| task | seconds | ratio to one test-set forward pass | target |")
    print("|---|---|---|---|")
    print(f"| float32 forward, {len(tm.data.x_test)} test examples | {f:.3f} | 1.0 | |")
    print(f"| PTQ ResNet, adaptive, b = 4 ({res.effective_bits:.2f} effective bits, test "
          f"accuracy {100 * acc:.2f}%) | {t:.3f} | {t / f:.1f} | <= {TARGET_S:.0f} s: "
          f"{'met' if t <= TARGET_S else 'missed'} |")
    return 0 if t <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
