"""Compile fpsim's kernels ahead of use (``fpsim warmup``), with progress, in parallel.

Numba compiles a kernel on its first call and caches the machine code on disk; a fresh install
pays minutes of compilation inside the first command. Warming up runs every kernel once on
tiny inputs, through the public functions, so that later commands load them from the cache.
The work is split into tasks that touch different drivers, run ``jobs`` at a time in separate
processes (Numba compiles on one core).

Two sets:

* ``"main"``: what ``fpsim compare``'s default job (and so training under fp32, fp16 and the
  loss scalers) needs: a few steps of each of its cells, one task per cell.
* ``"all"``: ``"main"`` plus the float64 carrier, the general format classes, matmul models,
  tensor-core models, scaled and block formats and fixed-point grids — what the test suite uses.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import multiprocessing
import os
import sys
import time
from typing import Callable

import numpy as np

from fpsim.training.study import DEFAULT_SCALERS

#: Rounding modes in the order of :class:`~fpsim.numerics.modes.RoundMode`.
MODES = ("rne", "rna", "rtz", "rup", "rdn", "rto", "sr")


def _inputs(dtype) -> list[np.ndarray]:
    """A small array (the serial drivers) and one above ``SERIAL_BELOW`` (the parallel ones),
    with normal, subnormal, zero, Inf and NaN values."""
    from fpsim.numerics.config import SERIAL_BELOW

    special = np.array([0.0, -0.0, 1.5, -3.25, 1e-6, 6e-8, 7e4, np.inf, -np.inf, np.nan])
    big = np.resize(special, SERIAL_BELOW + 7)
    return [special.astype(dtype), big.astype(dtype)]


def _quantize_all(fmt: str, dtype, modes=MODES) -> None:
    import fpsim

    for x in _inputs(dtype):
        out = np.empty_like(x)
        for mode in modes:
            for stats in (False, True):
                fpsim.quantize(x, fmt, rounding=mode, stats=stats)
                fpsim.quantize(x, fmt, rounding=mode, stats=stats, out=out)
        fpsim.decode(fpsim.encode(x, fmt), fmt)


def _arith(fmt: str, dtype) -> None:
    import fpsim

    for x in _inputs(dtype):
        x = fpsim.quantize(x, fmt)
        for mode in MODES:
            for op in (fpsim.add, fpsim.sub, fpsim.mul, fpsim.div):
                op(x, x[::-1].copy(), fmt, rounding=mode, flags=True, stats=True)
            fpsim.fma(x, x, x, fmt, rounding=mode)
            fpsim.sqrt(np.abs(x), fmt, rounding=mode)


def _train(scaler: str) -> None:
    """Two steps, a shadow pass and an evaluation of the default ``fpsim compare`` setting under
    one of its cells (``scaler``: a name of its scalers, ``fp32`` the float32 run), with Stats
    and histograms: the kernels that cell of the main job calls, in the argument types it
    uses."""
    from fpsim.training import instrument, study
    from fpsim.training.loop import Session, TrainConfig

    _, config = study.load_config(None)
    [(_, run)] = study.cells(config, (scaler,))
    cfg = TrainConfig.from_dict(dict(run, shadow_every=1, hist_every=1)).resolved()
    s = Session(cfg)
    rec = instrument.Recorder(keep=False)
    idx = np.arange(min(cfg.batch_size, len(s.data.x_train)))
    with instrument.recording(rec):
        for _ in range(2):
            s.train_step(idx, rec)
    s.evaluate(s.data.x_test[:64], s.data.y_test[:64])


def _matmul() -> None:
    import fpsim

    rng = np.random.default_rng(0)
    for name, model in fpsim.PRESETS.items():
        a = fpsim.quantize(rng.standard_normal((8, 16)), model.inputs)
        b = fpsim.quantize(rng.standard_normal((16, 4)), model.inputs)
        for fast in (True, False):
            fpsim.matmul(a, b, preset=name, fast=fast)
            fpsim.matmul(a, b, preset=name, order="pairwise", fast=fast)


def _tensor_core() -> None:
    import fpsim
    from fpsim.numerics.tensor_core import INPUT_FORMATS, PRESETS

    rng = np.random.default_rng(0)
    for name, tc in PRESETS.items():
        fmt = INPUT_FORMATS[tc.inputs]
        a = fpsim.quantize(rng.standard_normal((16, 32)), fmt)
        b = fpsim.quantize(rng.standard_normal((32, 8)), fmt)
        fpsim.matmul(a, b, preset=name)


def _scaled() -> None:
    import fpsim
    from fpsim.numerics.scaled import PRESETS

    x = np.linspace(-3, 3, 256, dtype=np.float32).reshape(8, 32)
    for name, sf in PRESETS.items():
        kw = {"state": sf.state()} if sf.delayed else {}
        for mode in ("rne", "sr"):
            fpsim.quantize(x, name, rounding=mode, stats=True, **kw)
        fpsim.decode(fpsim.encode(x, name, **kw), name)


def _fixed() -> None:
    import fpsim

    for x in _inputs(np.float64) + _inputs(np.float32):
        for spec in ("int8", "q7.8", "int8-sym*0.05"):
            for mode in MODES:
                fpsim.quantize(x[np.isfinite(x)], spec, rounding=mode, stats=True)


#: name -> (set, what it does). The main set is the main job's cells, one task each (run in one
#: process, later cells mostly load what earlier ones compiled); the rest are ordered longest
#: first (measured), so parallel jobs end together.
TASKS: dict[str, tuple[str, Callable[[], None]]] = {
    **{f"training: {scaler}": ("main", functools.partial(_train, scaler))
       for scaler in DEFAULT_SCALERS},
    "quantize float32 fp16": ("all", lambda: _quantize_all("fp16", np.float32)),
    "arithmetic float32": ("all", lambda: _arith("fp16", np.float32)),
    "quantize float32 general formats": ("all", lambda: _quantize_all("float8_e4m3fnuz",
                                                                        np.float32)),
    "quantize float64 fp16": ("all", lambda: _quantize_all("fp16", np.float64)),
    "quantize float64 general formats": ("all", lambda: _quantize_all("float8_e4m3fnuz",
                                                                        np.float64)),
    "arithmetic float64": ("all", lambda: _arith("fp16", np.float64)),
    "matmul models": ("all", _matmul),
    "tensor-core models": ("all", _tensor_core),
    "scaled formats": ("all", _scaled),
    "fixed-point grids": ("all", _fixed),
}


def task_names(which: str = "main") -> list[str]:
    """The tasks of set ``which`` (``"main"`` or ``"all"``), in run order."""
    if which not in ("main", "all"):
        raise ValueError(f"warm-up set must be 'main' or 'all', got {which!r}")
    return [name for name, (group, _) in TASKS.items() if which == "all" or group == "main"]


def run_task(name: str) -> float:
    """Run one task in this process; return its wall time in seconds."""
    start = time.perf_counter()
    TASKS[name][1]()
    return time.perf_counter() - start


def _stream(progress):
    """The text stream a ``progress`` argument names: True the current ``sys.stderr``, None or
    False none, else the stream itself."""
    return sys.stderr if progress is True else (progress or None)


def _marker(which: str) -> str:
    """The file that says set ``which`` was warmed up with the current kernel sources (it lives
    in the cache folder named by their hash, so any change of the kernels drops it)."""
    from fpsim.kernels import _cache_dir

    return os.path.join(_cache_dir(), f"warmup-{which}.done")


def is_warm(which: str = "main") -> bool:
    """True when set ``which`` (or ``"all"``, which includes it) was warmed up with the current
    kernel sources and cache folder."""
    task_names(which)
    return any(os.path.exists(_marker(w)) for w in ((which,) if which == "all" else
                                                    (which, "all")))


def ensure(which: str = "main", jobs: int | None = None, progress=True) -> bool:
    """Warm up set ``which`` unless it already is (:func:`is_warm`); return True if it ran.

    Commands call this first, so a fresh install shows a line per task while it compiles
    (``jobs``: processes; default 1 for the main set, whose tasks share their kernels, else
    the CPUs, at most 4).
    """
    if is_warm(which):
        return False
    # The main set's tasks share most kernels: one process compiles each once, where parallel
    # ones would compile the same kernels side by side.
    jobs = jobs or (1 if which == "main" else min(4, os.cpu_count() or 1))
    stream = _stream(progress)
    if stream is not None:
        print(f"compiling fpsim's kernels for first use in {jobs} process(es); they are cached "
              "for later runs (`fpsim warmup` does this ahead)", file=stream, flush=True)
    warmup(which, jobs=jobs, progress=stream)
    return True


def auto(which: str = "main") -> bool:
    """:func:`ensure` unless the environment sets ``FPSIM_WARMUP=0`` (the test suite does: its
    processes compile what each test needs). ``fpsim train`` and ``fpsim compare`` call this
    after checking their arguments, before the first run."""
    if os.environ.get("FPSIM_WARMUP", "1").strip() == "0":
        return False
    return ensure(which)


def warmup(which: str = "main", jobs: int = 1, progress=True) -> dict[str, float]:
    """Compile (or load from the cache) the kernels of set ``which``; return seconds per task.

    ``jobs`` > 1 runs tasks in that many spawned processes (each compiles on one core); the
    cache on disk is what they share. ``progress``: a text stream for a line per task, True for
    the current ``sys.stderr``, None or False for none.
    """
    progress = _stream(progress)
    names = task_names(which)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, got {jobs!r}")
    times: dict[str, float] = {}
    start = time.perf_counter()

    def report(name: str, seconds: float) -> None:
        times[name] = seconds
        if progress is not None:
            print(f"[{len(times):2d}/{len(names)}] {name}: {seconds:.1f} s", file=progress,
                  flush=True)

    if jobs == 1:
        for name in names:
            report(name, run_task(name))
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            pending = {pool.submit(run_task, name): name for name in names}
            for done in concurrent.futures.as_completed(pending):
                report(pending[done], done.result())
    if progress is not None:
        print(f"kernels ready in {time.perf_counter() - start:.1f} s", file=progress, flush=True)
    with contextlib.suppress(OSError):  # a read-only cache: warm-ups just run again
        os.makedirs(os.path.dirname(_marker(which)), exist_ok=True)
        with open(_marker(which), "w") as f:
            f.write(json.dumps(times) + "\n")
    return times
