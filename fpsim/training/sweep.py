"""Sweeps: a grid of training runs (a base config crossed with axes) on Dask distributed, recorded
in one SQLite study that only the client writes.

A spec (TOML, or the same as a dict)::

    name = "scalers"                 # the study's name (default: the file's stem)
    [base]                           # TrainConfig fields, or config = "NAME" plus overrides
    config = "digits-mlp-fp16"
    epochs = 5
    [axes]                           # TrainConfig field -> the values to cross
    seed = [0, 1, 2]
    scaler = ["none", "dynamic"]

:func:`expand` turns it into runs, each identified by a stable hash of its full resolved config
(:func:`config_hash`). :func:`run_sweep` sends the runs that the database does not hold finished
to Dask workers (a ``LocalCluster`` of one-thread processes by default, or the scheduler at an
address). A worker trains into a private temporary database with the same :func:`train` that
``fpsim train`` runs and returns that database file as data (bytes); the client copies its rows
into the study (:meth:`RunDB.copy_run`) as each run completes, so a crash or
Ctrl-C of the client loses no finished run, and the same command finishes the grid. A run that
raises is recorded ``failed`` with its error and traceback; the others go on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import time
import tomllib

#: Keys of a spec's top level.
SPEC_KEYS = ("name", "base", "axes")


@dataclasses.dataclass
class SweepRun:
    """One run of a sweep: ``label`` (its axis values, seed aside), the TrainConfig ``fields``
    (resolved), their ``hash`` and the ``seed``."""

    label: str
    fields: dict
    hash: str
    seed: int


@dataclasses.dataclass
class SweepSpec:
    """A parsed spec: the study ``name``, the ``base`` TrainConfig fields (a named config
    already merged in) and the ``axes`` (field -> non-empty list of values, in order)."""

    name: str
    base: dict
    axes: dict


def load_spec(spec, name: str | None = None) -> SweepSpec:
    """Parse a spec: a path of a TOML file, or a dict of the same shape. Unknown keys (at the top
    level, in ``[base]`` or in ``[axes]``), an axis that is not a non-empty list and an unknown
    named config are ValueErrors that name them."""
    from fpsim.training.loop import TrainConfig
    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ValueError(f"sweep spec {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"sweep spec {path} is not valid TOML: {e}") from None
        default_name = os.path.splitext(os.path.basename(path))[0]
    elif isinstance(spec, dict):
        data, default_name = spec, "sweep"
    else:
        raise ValueError(f"a sweep spec is a TOML path or a dict, got {type(spec).__name__}")
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"unknown sweep spec key(s) {unknown}: a spec has {', '.join(SPEC_KEYS)}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise ValueError("the spec's base must be a table of training config fields")
    base = dict(base)
    if "config" in base:
        from fpsim.models.configs import CONFIGS
        named = base.pop("config")
        if named not in CONFIGS:
            raise ValueError(f"unknown named config {named!r} in [base]; choose from "
                             f"{', '.join(CONFIGS)}")
        base = {**CONFIGS[named]["train"], **base}
    bad = sorted(set(base) - fields)
    if bad:
        raise ValueError(f"unknown training config key(s) {bad} in [base]; allowed: config, "
                         f"{', '.join(sorted(fields))}")
    axes = data.get("axes", {})
    if not isinstance(axes, dict):
        raise ValueError("the spec's axes must be a table of config field -> list of values")
    bad = sorted(set(axes) - fields)
    if bad:
        raise ValueError(f"unknown training config key(s) {bad} in [axes]; allowed: "
                         f"{', '.join(sorted(fields))}")
    for k, v in axes.items():
        if k == "name":
            raise ValueError("name cannot be an axis: sweep runs are labelled by their axes")
        if not isinstance(v, list):
            raise ValueError(f"axis {k!r} must be a list of values, got {v!r}")
        if not v:
            raise ValueError(f"axis {k!r} is empty: give at least one value")
    study = data.get("name", name or default_name)
    if not isinstance(study, str) or not study:
        raise ValueError(f"the spec's name must be a non-empty string, got {study!r}")
    return SweepSpec(study, base, dict(axes))


#: TrainConfig fields that are numbers: 1 and 1.0 are one value (and one hash).
FLOAT_FIELDS = ("lr", "momentum", "weight_decay", "loss_weight")


def _not_json(value):
    raise ValueError(f"a sweep config value must be a string, number, boolean, list or table, "
                     f"got {type(value).__name__} {value!r}")


def config_hash(fields: dict) -> str:
    """A stable hash (16 hex digits of SHA-256) of resolved TrainConfig fields: their JSON
    with sorted keys, so equal configs hash equally in any process or machine."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=_not_json)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _value_text(key, value) -> str:
    if key == "policy":
        from fpsim.training.precision import policy_label
        return policy_label(value)
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def expand(spec: SweepSpec) -> list[SweepRun]:
    """The runs of the grid, in the axes' order (the last axis varies fastest); every config is
    resolved and validated first, so a bad value fails before any run starts."""
    from fpsim.training.loop import TrainConfig
    keys = list(spec.axes)
    runs, seen = [], set()
    for combo in itertools.product(*(spec.axes[k] for k in keys)):
        over = dict(zip(keys, combo))
        label = ", ".join(f"{k}={_value_text(k, v)}" for k, v in over.items() if k != "seed")
        try:
            cfg = TrainConfig.from_dict({**spec.base, **over}).resolved()
        except ValueError as err:
            raise ValueError(f"sweep run {label or 'base'} (seed {over.get('seed', spec.base.get('seed', 0))}): {err}") from None
        fields = dataclasses.asdict(cfg)
        for k in FLOAT_FIELDS:
            if isinstance(fields[k], int) and not isinstance(fields[k], bool):
                fields[k] = float(fields[k])
        h = config_hash(fields)
        if h in seen:
            raise ValueError(f"the sweep holds the run {label or 'base'} twice (an axis repeats a "
                             "value)")
        seen.add(h)
        runs.append(SweepRun(label, fields, h, cfg.seed))
    return runs


def run_in_worker(fields: dict) -> dict:
    """Train ``fields`` into a private temporary database and return its file's bytes
    (``database``: the run's every row, or None if it failed before the run was recorded), the
    error and traceback if it raised, and where it ran. This is the function a Dask worker
    executes."""
    import socket
    import tempfile
    import traceback

    import numba

    from fpsim.training.loop import train
    numba.set_num_threads(1)  # one thread per worker process (the sweep's unit is a process)
    error = None
    t0 = time.perf_counter()
    scratch = _scratch()
    _clear_stale_scratch(scratch)
    with tempfile.TemporaryDirectory(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-",
                                     dir=scratch) as tmp:
        db = os.path.join(tmp, "run.sqlite")
        try:
            train(fields, db=db)
        except Exception as e:  # recorded as a failed run; the sweep goes on
            error = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        # (the last connection to close folds the write-ahead log into the file: train's,
        # or failing that the check's)
        database = None
        if os.path.exists(db) and _holds_a_run(db):
            with open(db, "rb") as f:
                database = f.read()
    return {"database": database, "error": error, "host": socket.gethostname(),
            "pid": os.getpid(), "seconds": time.perf_counter() - t0}


def _holds_a_run(path: str) -> bool:
    """Whether the worker's database got as far as its run row (closing it last, which
    checkpoints its write-ahead log into the file)."""
    import sqlite3
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
    except sqlite3.DatabaseError:  # (created, but not even its tables)
        return False
    finally:
        con.close()


#: Scratch directories are named ``fpsim-sweep-<pid>-<random>``: the pid tells whose they are.
_SCRATCH_PREFIX = "fpsim-sweep-"


def _clear_stale_scratch(scratch: str | None) -> None:
    """Remove scratch directories of sweep processes that no longer run (a worker or client
    killed mid-run leaves its database behind; in ``/dev/shm`` that holds memory until a
    reboot). Directories of live processes, of other users, or not named by a pid are left."""
    import re
    import shutil
    import tempfile
    scratch = scratch or tempfile.gettempdir()
    try:
        names = os.listdir(scratch)
    except OSError:
        return
    for name in names:
        m = re.fullmatch(re.escape(_SCRATCH_PREFIX) + r"(\d+)-\w+", name)
        if m is None:
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # (alive, or someone else's: left alone)
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError, OSError):
            continue
        shutil.rmtree(os.path.join(scratch, name), ignore_errors=True)


def _scratch() -> str | None:
    """A directory for scratch databases: the RAM file system where there is one."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def _store(rdb, run: SweepRun, result: dict, study: str) -> tuple[int, str]:
    """Write one run's result into the study (one transaction each); returns (id, status)."""
    import tempfile

    from fpsim.training.loop import versions
    error = result.get("error")
    if result.get("database") is not None:  # the run's rows and its sweep row: one transaction
        with tempfile.TemporaryDirectory(prefix=f"{_SCRATCH_PREFIX}{os.getpid()}-",
                                         dir=_scratch()) as tmp:
            path = os.path.join(tmp, "run.sqlite")
            with open(path, "wb") as f:
                f.write(result["database"])
            rid = rdb.copy_run(path, study=study, sweep_hash=run.hash)
    else:  # it failed before its run row existed (e.g. the dataset did not load)
        return rdb.add_failed_run(run.fields.get("name", ""), run.fields, run.seed, versions(),
                                  study, dict(error or {}, host=result.get("host")),
                                  sweep_hash=run.hash), "failed"
    info = rdb.run(rid)
    summary = dict(info["summary"] or {}, run_id=rid, db=rdb.path)  # (not the worker's)
    if error is not None:
        summary.update(error, host=result.get("host"))
    rdb.set_status(rid, "failed" if error is not None else info["status"], summary)
    return rid, "failed" if error is not None else info["status"]


def _connect(workers: int | None, scheduler: str | None):
    """``(client, cluster or None)``: a Client of the scheduler at ``scheduler`` (waiting up to
    60 s for a worker), or of a new LocalCluster of ``workers`` one-thread processes (default:
    the CPU count) on the loopback interface, each with its BLAS / OpenMP / Numba thread pools
    at 1 and Dask's worker profiler off."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("fpsim sweep runs on Dask distributed, which is not installed: "
                         "pip install 'dask[distributed]' (or fpsim's [sweep] extra)") from None
    if scheduler:
        client = Client(scheduler)
        try:
            client.wait_for_workers(1, timeout=60)
        except Exception:
            client.close()
            raise ValueError(f"the Dask scheduler at {scheduler} has no worker after 60 s: "
                             "start workers (dask worker ADDRESS) and run again") from None
        return client, None
    n = workers or os.cpu_count() or 1
    # BLAS / OpenMP pools at 1 before the workers spawn (Dask applies these in the parent's
    # environment while it spawns, so Numba's variable is not among them: a parent that has
    # started Numba's threads would then refuse its own config; the worker task sets Numba's
    # thread count itself). Dask's default MALLOC_TRIM_THRESHOLD_ (hand freed memory back to
    # the system at once) is left out: a training loop allocates and frees small arrays all
    # the time, and with it a run took ten times the page faults and three times the system
    # time here. The statistical profiler samples every worker thread's stack every 10 ms: on
    # training loops of many small numpy calls it cost about a third of each run's time here.
    # The admin tick (20 ms), system monitor (0.5 s) and memory monitor (0.1 s) together kept
    # an idle worker 2.7% and the client 4.7% busy, on cores the runs need; at 1-2 s they cost
    # 0.6% and 1%. A saturation of 1 hands a run to a worker only when it is free, so the last
    # runs go to whichever worker finishes first. Scoped: the caller's Dask config is left as
    # it was.
    single = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ",
                                                {}).items() if k != "MALLOC_TRIM_THRESHOLD_"}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": {**environ, **single},
                          "distributed.worker.profile.enabled": False,
                          "distributed.admin.tick.interval": "1s",
                          "distributed.admin.system-monitor.interval": "2s",
                          "distributed.worker.memory.monitor-interval": "1s",
                          "distributed.scheduler.worker-saturation": 1.0}):
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=":0", silence_logs=40)
        client = Client(cluster)
    client.register_plugin(_lower_priority_plugin(), name="fpsim-lower-priority")
    return client, cluster


def _lower_priority_plugin():
    """A Dask worker plugin that lowers its worker's CPU priority (niceness 5) when it starts
    (and so in a worker that the nanny restarts): on a machine whose cores the local workers
    fill, the client (Dask's scheduler, the study's writes) then runs the moment it has work,
    instead of waiting behind a training run for its share of a core. Workers still take every
    cycle the client leaves."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class LowerPriority(WorkerPlugin):
        def setup(self, worker):
            try:  # (at least 5: idempotent, should the plugin be set up twice)
                os.setpriority(os.PRIO_PROCESS, 0, max(5, os.getpriority(os.PRIO_PROCESS, 0)))
            except (OSError, AttributeError):  # (not allowed, or no such call here)
                pass
    return LowerPriority()


def _dashboard(client, cluster) -> str | None:
    """The Dask dashboard's address, or None when none is running (a LocalCluster's scheduler
    serves its HTTP port, on a free port, either way; the dashboard's pages need bokeh)."""
    import importlib.util
    if cluster is not None and importlib.util.find_spec("bokeh") is None:
        return None
    try:
        return client.dashboard_link
    except Exception:
        return None


def run_sweep(spec, db: str, *, workers: int | None = None, scheduler: str | None = None,
              progress: bool = False, log=None) -> dict:
    """Run the sweep ``spec`` (a :func:`load_spec` argument or a :class:`SweepSpec`) into the
    run-record database ``db``.

    Args:
        workers: LocalCluster worker processes (default: the CPU count).
        scheduler: a Dask scheduler address (``tcp://host:8786``) to attach to instead.
        progress: a tqdm bar over runs; log: a callable for one line per finished run.
    Returns:
        ``study``, ``db``, ``runs`` (in the grid), ``finished`` (completed by this call),
        ``skipped`` (already finished in the study), ``failed``, ``interrupted`` (Ctrl-C),
        ``seconds``, ``write_seconds`` (the client's database writing), ``dashboard`` and
        ``stale`` (runs of the study whose configs are not in this grid).
    """
    from fpsim.training.records import RunDB
    if workers is not None and scheduler is not None:
        raise ValueError("give --workers or --scheduler, not both")
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    sp = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    plan = expand(sp)
    t0 = time.perf_counter()
    with RunDB(db) as rdb:
        done = rdb.sweep_runs(sp.name)  # (the same config in another study is its own run)
    todo = [r for r in plan if done.get(r.hash, (None, None))[1] != "finished"]
    out = dict(study=sp.name, db=os.fspath(db), runs=len(plan), finished=0,
               skipped=len(plan) - len(todo), failed=0, interrupted=False, seconds=0.0,
               write_seconds=0.0, dashboard=None)
    stale = sorted(set(done) - {r.hash for r in plan})
    if stale and log:
        log(f"note: study {sp.name} holds {len(stale)} run(s) of configs this spec no longer "
            "has (a changed spec or fpsim version); the report averages whatever shares a "
            "label, so use a new study name for a changed grid")
    out["stale"] = len(stale)
    if not todo:
        return out
    from distributed import as_completed
    from tqdm import tqdm
    client = cluster = bar = None
    futures = {}
    try:  # (Ctrl-C anywhere from here on: cancel, close, report what arrived)
        client, cluster = _connect(workers, scheduler)
        out["dashboard"] = _dashboard(client, cluster)
        if log and out["dashboard"]:
            log(f"Dask dashboard: {out['dashboard']}")
        bar = tqdm(total=len(todo), disable=not progress, unit="run", desc=sp.name)
        with RunDB(db) as rdb:
            for r in todo:
                futures[client.submit(run_in_worker, r.fields, pure=False,
                                      key=f"fpsim-run-{r.hash}-{time.time_ns()}")] = r
            for fut in as_completed(futures):
                r = futures[fut]
                try:
                    result = fut.result()
                except Exception as e:  # the worker died (KilledWorker) or the task broke
                    result = {"database": None, "error": {
                        "error": f"{type(e).__name__}: {e}", "traceback": ""}}
                w0 = time.perf_counter()
                rid, status = _store(rdb, r, result, sp.name)
                out["write_seconds"] += time.perf_counter() - w0
                out[{"finished": "finished", "failed": "failed"}.get(status, "failed")] += 1
                bar.update(1)
                if log:
                    log(f"run {rid} {status}: {r.label or 'base'} seed {r.seed}"
                        + (f" ({result['error']['error']})" if result.get("error") else ""))
    except KeyboardInterrupt:
        out["interrupted"] = True
    finally:
        if bar is not None:
            bar.close()
        try:
            if client is not None:
                if futures:
                    client.cancel(list(futures))
                client.close()
        finally:
            if cluster is not None:
                cluster.close()
    out["seconds"] = round(time.perf_counter() - t0, 3)
    return out
