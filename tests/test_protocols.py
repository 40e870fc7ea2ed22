"""The extension points of the training layer, used from outside: a loss scaler and a cast
written here, in the test file, train through the unchanged training loop; and the loop's
results do not depend on the BLAS or Numba thread count."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fpsim.training import scaling
from fpsim.training.loop import TrainConfig, train
from fpsim.training.records import RecordError, RunDB

SHORT = dict(model="mlp", dataset="digits", epochs=1, batch_size=256, hist_every=0,
             checkpoint_every=0, model_config={"hidden": (32,)})


class BackoffScaler(scaling.Scaler):
    """A toy global scaler: starts at 2^28 (fp16 gradients overflow), divides by 2^8 after
    every non-finite step and never grows."""

    name = "backoff"

    def __init__(self):
        self.scale = 2.0 ** 28
        self.seen = []

    def loss_scale(self) -> float:
        return self.scale

    def update(self, stats) -> bool:
        self.seen.append((self.scale, stats.found_inf))
        if stats.found_inf:
            self.scale /= 256
        return not stats.found_inf

    def state_dict(self) -> dict:
        return {"scale": self.scale}


class GridCast:
    """A toy cast (not a fpsim class): round to the fixed-point grid k * 2^-10 with numpy's
    round-half-even, counting nothing. Records every context it is called with."""

    format = "float16"  # the element format the adaptive scaler would read; unused here

    def __init__(self):
        self.calls = []

    def round(self, x, ctx):
        self.calls.append((ctx.site, ctx.role, ctx.direction, ctx.step))
        return (np.round(x * 1024.0) / 1024.0).astype(x.dtype), None


def _db_steps(db, run_id):
    with RunDB(db) as rdb:
        return rdb.steps(run_id)


def test_toy_scaler_and_toy_cast_train_without_loop_changes(tmp_path):
    toy, grid = BackoffScaler(), GridCast()
    db = str(tmp_path / "r.sqlite")
    out = train(TrainConfig(**SHORT, policy={"preset": "mixed_fp16", "activations": grid},
                            scaler=toy), db=db)
    assert out["status"] == "finished" and out["steps"] == 6
    # the scaler: the loop used its scale as the loss scale, skipped exactly the steps it said
    steps = _db_steps(db, out["run_id"])
    assert steps["loss_scale"].tolist() == [s for s, _ in toy.seen]
    assert [bool(v) for v in steps["skipped"]] == [f for _, f in toy.seen]
    assert any(f for _, f in toy.seen), "2^28 should overflow fp16 gradients at least once"
    assert out["skipped_steps"] == sum(f for _, f in toy.seen)
    # the cast: called forward at every activation site of every step, with that step
    by_step = {}
    for site, role, direction, step in grid.calls:
        assert role in ("input", "activation") and direction == "forward"
        by_step.setdefault(step, set()).add(site)
    assert sorted(by_step) == list(range(6))
    assert all(sites == by_step[0] for sites in by_step.values()) and by_step[0]
    # a run configured with Python objects is recorded (by repr) but cannot be resumed
    with RunDB(db) as rdb:
        rdb.set_status(out["run_id"], "interrupted")
        assert "BackoffScaler" in json.dumps(rdb.run(out["run_id"])["config"])
    with pytest.raises(RecordError, match="configured with Python objects"):
        train(db=db, resume=out["run_id"])


_RUN = """
import json, sys
import numpy as np
from fpsim.training.loop import TrainConfig, train
from fpsim.training.records import RunDB
cfg = TrainConfig(**json.loads(sys.argv[1]))
out = train(cfg, db=sys.argv[2])
with RunDB(sys.argv[2]) as rdb:
    state = rdb.load_checkpoint(out["run_id"])[1]
    blas = rdb.run(out["run_id"])["versions"]["blas"]
np.savez(sys.argv[3], **{k: v for k, v in state.items() if k.startswith("model/")})
print(json.dumps({"acc": out["test_accuracy"], "blas": blas}))
"""


def _run_with_threads(tmp_path, blas: int, numba: int) -> tuple[dict, dict]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(blas), "OMP_NUM_THREADS": str(blas),
           "MKL_NUM_THREADS": str(blas), "NUMBA_NUM_THREADS": str(numba)}
    cfg = {**SHORT, "epochs": 2, "model_config": {"hidden": (64, 64)}, "seed": 3,
           "policy": {"preset": "mixed_fp16", "activation_grads": "float16:sr"}}
    tag = f"b{blas}n{numba}"
    res = subprocess.run([sys.executable, "-c", _RUN, json.dumps(cfg),
                          str(tmp_path / f"{tag}.sqlite"), str(tmp_path / f"{tag}.npz")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    weights = dict(np.load(tmp_path / f"{tag}.npz"))
    return json.loads(res.stdout.strip().splitlines()[-1]), weights


def test_training_is_bit_identical_for_any_blas_and_numba_thread_count(tmp_path):
    """The same short training (float32 GEMMs on BLAS, fp16 casts with stochastic rounding on
    the Numba kernels) under 1 and 2 BLAS threads and 1 and 2 Numba threads: final weights equal
    bit for bit; the run record names the BLAS and the pinned thread count."""
    base_info, base = _run_with_threads(tmp_path, 1, 1)
    assert base_info["blas"] and all(b["pinned_threads"] == 1 for b in base_info["blas"])
    for blas, numba in [(2, 1), (1, 2), (2, 2)]:
        info, weights = _run_with_threads(tmp_path, blas, numba)
        assert info["acc"] == base_info["acc"], (blas, numba)
        assert sorted(weights) == sorted(base)
        for k, v in base.items():
            assert np.array_equal(weights[k].view(np.uint32), v.view(np.uint32)), (k, blas, numba)


def test_resume_warns_when_the_blas_differs(tmp_path):
    db = str(tmp_path / "r.sqlite")
    out = train(TrainConfig(**{**SHORT, "epochs": 2, "checkpoint_every": 3}), db=db)
    with RunDB(db) as rdb:
        info = rdb.run(out["run_id"])
        versions = dict(info["versions"])
        versions["blas"] = [{"api": "otherblas", "version": "9.9", "architecture": "x",
                             "prefix": "libother", "threads": 1, "pinned_threads": 1}]
        rdb.con.execute("UPDATE runs SET versions = ?, status = 'interrupted' WHERE id = ?",
                        (json.dumps(versions), out["run_id"]))
        rdb.con.commit()
        rdb.truncate(out["run_id"], 6)
    with pytest.warns(RuntimeWarning, match="otherblas"):
        train(db=db, resume=out["run_id"])
